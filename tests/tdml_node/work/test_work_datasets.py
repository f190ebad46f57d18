"""Dataset builders and the batch view."""

from __future__ import annotations

import pytest
import torch

from consensus.work import InvalidWork
from tdml_node.work.datasets import (
    MAX_EVAL_WINDOWS,
    Dataset,
    char_corpus_bundle,
    digits_bundle,
    synthetic_bundle,
    vocab_text,
)
from tdml_node.work.tensors import decode_bundle, encode_bundle


def test_digits_bundle_layout() -> None:
    t = decode_bundle(digits_bundle())
    assert t["train_x"].shape == (1437, 64) and t["train_x"].dtype == torch.float32
    assert t["test_x"].shape == (360, 64)
    assert t["train_y"].dtype == torch.int64 and t["train_y"].shape == (1437,)
    assert set(t["train_y"].tolist()) == set(range(10))
    # Standardised on the train split: per-feature means near zero.
    assert float(t["train_x"].mean(0).abs().max()) < 1e-5


def test_synthetic_bundle_is_deterministic() -> None:
    a = synthetic_bundle(n_train=64, n_test=16, features=8, classes=3, seed=5)
    assert a == synthetic_bundle(n_train=64, n_test=16, features=8, classes=3, seed=5)
    assert a != synthetic_bundle(n_train=64, n_test=16, features=8, classes=3, seed=6)
    t = decode_bundle(a)
    assert t["train_x"].shape == (64, 8) and t["test_y"].shape == (16,)
    assert int(t["train_y"].max()) < 3


def test_char_corpus_bundle() -> None:
    text = "hello world, hello tdml!" * 5
    t = decode_bundle(char_corpus_bundle(text))
    assert vocab_text(t["vocab"]) == "".join(sorted(set(text)))
    tokens = torch.cat([t["train_tokens"], t["test_tokens"]])
    assert "".join(vocab_text(t["vocab"])[i] for i in tokens.tolist()) == text
    assert t["test_tokens"].shape[0] == len(text) // 10


def test_classification_batches_are_rows_in_order() -> None:
    data = synthetic_bundle(n_train=32, n_test=8, features=4, classes=2)
    raw = decode_bundle(data)
    ds = Dataset.decode(data, task="classification", dtype=torch.float64)
    assert ds.n_train == 32
    x, y = ds.batch([5, 0, 31, 5])
    assert x.dtype == torch.float64
    assert torch.equal(x, raw["train_x"][[5, 0, 31, 5]].double())
    assert torch.equal(y, raw["train_y"][[5, 0, 31, 5]])
    (tx, ty), = list(ds.test_batches())
    assert tx.shape == (8, 4) and ty.shape == (8,)


def test_char_lm_batches_are_shifted_windows() -> None:
    text = "abcdefghijklmnopqrstuvwxyz" * 4
    ds = Dataset.decode(char_corpus_bundle(text), task="char_lm", seq_len=5)
    n_train_tokens = len(text) - len(text) // 10
    assert ds.n_train == n_train_tokens - 5
    x, y = ds.batch([0, 3, ds.n_train - 1])
    assert x.shape == (3, 5) and y.shape == (3, 5)
    assert torch.equal(x[1], torch.arange(3, 8)) and torch.equal(y[1], torch.arange(4, 9))
    assert torch.equal(y[:, :-1], x[:, 1:])
    test = list(ds.test_batches())
    assert len(test) == 1
    tx, ty = test[0]
    assert tx.shape == ((len(text) // 10 - 1) // 5, 5)
    assert torch.equal(ty[:, :-1], tx[:, 1:])


def test_char_lm_evaluation_is_capped() -> None:
    ds = Dataset.decode(char_corpus_bundle("ab" * 20000, test_fraction=0.5), task="char_lm", seq_len=4)
    assert sum(x.shape[0] for x, _ in ds.test_batches()) == MAX_EVAL_WINDOWS


@pytest.mark.parametrize(
    ("tensors", "task", "message"),
    [
        ({"train_x": torch.zeros(2, 2)}, "classification", "holds"),
        (
            {"train_x": torch.zeros(2, 2), "train_y": torch.zeros(3, dtype=torch.int64),
             "test_x": torch.zeros(1, 2), "test_y": torch.zeros(1, dtype=torch.int64)},
            "classification",
            "differ in length",
        ),
        (
            {"train_x": torch.zeros(2, 2, dtype=torch.float64), "train_y": torch.zeros(2, dtype=torch.int64),
             "test_x": torch.zeros(1, 2), "test_y": torch.zeros(1, dtype=torch.int64)},
            "classification",
            "must be",
        ),
        (
            {"vocab": torch.zeros(2, dtype=torch.int32), "train_tokens": torch.tensor([0, 1, 2, 0]),
             "test_tokens": torch.tensor([0])},
            "char_lm",
            "outside the vocabulary",
        ),
        ({}, "regression", "unknown task"),
    ],
)
def test_rejects_bad_datasets(tensors: dict[str, torch.Tensor], task: str, message: str) -> None:
    with pytest.raises(InvalidWork, match=message):
        Dataset.decode(encode_bundle(tensors), task=task, seq_len=2)
