"""Pipeline model states: split into stage bundles, named by a PipelineState, joined back whole."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from consensus import crypto
from consensus.types import PipelineSpec
from consensus.work import InvalidWork
from tdml_node.work.jobs import get_job
from tdml_node.work.models import build_model, make_model_spec
from tdml_node.work.pipeline_state import (
    decode_pipeline_state,
    encode_pipeline_state,
    encode_stage_states,
    join_states,
    split_state,
)
from tdml_node.work.state import encode_state, state_tensors
from tdml_node.work.tensors import decode_bundle


def _setup():
    spec, _ = get_job("digits-mlp")
    spec = dataclasses.replace(
        spec,
        model=make_model_spec("mlp", in_dim=64, hidden=16, layers=3, classes=10),
        pipeline=PipelineSpec((0, 1, 3, 4), 1),
    )
    return spec, build_model(spec.model, seed=1, dtype=torch.float32)


def test_the_stage_bundles_hold_their_ranges_parameters_and_join_to_the_whole_state() -> None:
    spec, model = _setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 64)).sum().backward()
    optimizer.step()
    blobs = encode_stage_states(model, spec, optimizer)
    parts = [decode_bundle(b) for b in blobs]
    assert sorted(parts[0]) == ["opt/net.0.bias/momentum_buffer", "opt/net.0.weight/momentum_buffer", "param/net.0.bias", "param/net.0.weight"]
    assert {n.split("/")[1].split(".")[1] for n in parts[1]} == {"2", "4"}
    whole = join_states(parts)
    assert decode_bundle(encode_state(model, optimizer)).keys() == whole.keys()
    assert all(torch.equal(whole[n], t) for n, t in state_tensors(model, optimizer).items())


def test_the_model_root_is_the_hash_of_the_pipeline_state_blob_and_a_bad_blob_is_invalid() -> None:
    spec, model = _setup()
    roots = [crypto.sha256(b) for b in encode_stage_states(model, spec)]
    root, data = encode_pipeline_state(roots)
    assert root == crypto.sha256(data)
    assert decode_pipeline_state(data, spec).stage_roots == tuple(roots)
    with pytest.raises(InvalidWork):
        decode_pipeline_state(b"\x00junk", spec)
    with pytest.raises(InvalidWork, match="stages"):
        decode_pipeline_state(encode_pipeline_state(roots[:2])[1], spec)


def test_a_name_in_two_stages_is_refused() -> None:
    spec, model = _setup()
    parts = split_state(state_tensors(model), model, spec)
    with pytest.raises(InvalidWork):
        join_states([parts[0], parts[0]])
