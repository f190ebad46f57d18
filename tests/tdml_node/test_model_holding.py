"""Which model work a block is applied with: a validator always recomputes, an assigned trainer takes the commit's."""

from __future__ import annotations

import pytest

from consensus import crypto
from consensus.types import PublicKey
from consensus.validators import ValidatorSet
from tdml_node.config import MODEL_ALL, MODEL_ASSIGNED
from tdml_node.node.model_holding import ModelHolding

VALIDATOR = crypto.Keypair.from_seed(b"\x01" * 32)
TRAINER = crypto.Keypair.from_seed(b"\x02" * 32)
VALIDATORS = ValidatorSet.of([(VALIDATOR.public_key, 10)])
EXECUTOR = object()


def _holding(mode: str, key: PublicKey) -> ModelHolding:
    return ModelHolding(mode, key, EXECUTOR)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", [MODEL_ALL, MODEL_ASSIGNED])
def test_a_validator_recomputes_the_model_work_whatever_its_setting(mode: str) -> None:
    assert _holding(mode, VALIDATOR.public_key).oracle(VALIDATORS) is EXECUTOR


def test_a_trainer_that_does_not_validate_recomputes_unless_it_holds_only_its_assigned_partitions() -> None:
    assert _holding(MODEL_ALL, TRAINER.public_key).oracle(VALIDATORS) is EXECUTOR
    assert _holding(MODEL_ASSIGNED, TRAINER.public_key).oracle(VALIDATORS) is None
    # Once it is a validator, it recomputes.
    both = ValidatorSet.of([(VALIDATOR.public_key, 10), (TRAINER.public_key, 10)])
    assert _holding(MODEL_ASSIGNED, TRAINER.public_key).oracle(both) is EXECUTOR
