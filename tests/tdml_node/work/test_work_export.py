"""Model export: a safetensors file that plain PyTorch loads into the registry model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from work_harness import advance, make_executor

from tdml_node.work.aggregate import evaluate
from tdml_node.work.datasets import Dataset, digits_split
from tdml_node.work.export import export_model, load_exported
from tdml_node.work.jobs import get_job
from tdml_node.work.models import build_model
from tdml_node.work.state import PARAM_PREFIX
from tdml_node.work.tensors import decode_bundle


def test_export_loads_in_plain_pytorch_and_predicts_identically(tmp_path: Path) -> None:
    spec, data = get_job("digits-mlp", steps=3)
    ex = make_executor(data)
    root = ex.initial_model_root(spec)
    for step in range(3):
        root = advance(ex, spec, root, step)
    state = ex.blobs.get(root) or b""
    path = tmp_path / "model.safetensors"
    meta = export_model(spec, state, path)
    assert meta["model_root"] == root.hex()
    assert json.loads(meta["args"]) == {"classes": 10, "hidden": 128, "in_dim": 64, "layers": 2}
    assert meta["job"] == "digits-mlp" and meta["model"] == "mlp"

    # Plain PyTorch: a Sequential of the same layers and load_file, no TDML code.
    weights = load_file(str(path))
    assert set(weights) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.4.weight", "net.4.bias"}
    plain = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    plain.load_state_dict({k.removeprefix("net."): v for k, v in weights.items()}, strict=True)

    # The registry model, loaded strictly, and the one load_exported builds.
    registry = build_model(spec.model, seed=123, dtype=torch.float32)
    registry.load_state_dict(weights, strict=True)
    loaded, loaded_meta = load_exported(path)
    assert loaded_meta == meta

    x = decode_bundle(data)["test_x"]
    raw = torch.from_numpy(digits_split()[2])
    tensors = decode_bundle(state)
    for name, p in loaded.named_parameters():
        assert torch.equal(p, tensors[PARAM_PREFIX + name])
    with torch.no_grad():
        expected = plain(x)
        assert torch.equal(registry(x), expected)
        # load_exported standardises raw pixels exactly as the dataset was built.
        assert torch.equal(loaded(raw), expected)


def test_export_refuses_a_state_of_another_model(tmp_path: Path) -> None:
    spec, data = get_job("digits-cnn", steps=1)
    ex = make_executor(data)
    other, _ = get_job("digits-mlp", steps=1)
    state = ex.blobs.get(ex.initial_model_root(other)) or b""
    with pytest.raises(RuntimeError):
        export_model(spec, state, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_exported_digits_model_scores_on_raw_pixels_what_the_chain_reports(tmp_path: Path) -> None:
    spec, data = get_job("digits-mlp", steps=20)
    ex = make_executor(data)
    root = ex.initial_model_root(spec)
    for step in range(20):
        root = advance(ex, spec, root, step)
    state = ex.blobs.get(root) or b""
    path = tmp_path / "model.safetensors"
    meta = export_model(spec, state, path)
    assert json.loads(meta["preprocessing"])["kind"] == "standardize"

    # What the chain reports: the aggregator's evaluation on the dataset blob.
    registry = build_model(spec.model, seed=0, dtype=torch.float32)
    registry.load_state_dict({k[len(PARAM_PREFIX) :]: v for k, v in decode_bundle(state).items() if k.startswith(PARAM_PREFIX)})
    reported = evaluate(registry, Dataset.decode(data, task=spec.task))

    _, _, x_test, y_test = digits_split()
    loaded, _ = load_exported(path)
    with torch.no_grad():
        predicted = loaded(torch.from_numpy(x_test)).argmax(dim=-1).numpy()
        unprocessed = registry(torch.from_numpy(x_test).float()).argmax(dim=-1).numpy()
    assert int((predicted == y_test).sum()) == reported.correct and reported.total == len(y_test)
    # Without the recorded preprocessing the raw pixels score worse: the hook matters.
    assert int((unprocessed == y_test).sum()) < reported.correct


def test_a_job_without_preprocessing_exports_a_model_that_takes_its_features_as_they_are(tmp_path: Path) -> None:
    spec, data = get_job("synthetic-mlp", steps=2)
    assert spec.preprocessing is None
    ex = make_executor(data)
    root = ex.initial_model_root(spec)
    root = advance(ex, spec, root, 0)
    meta = export_model(spec, ex.blobs.get(root) or b"", tmp_path / "m.safetensors")
    assert "preprocessing" not in meta
    loaded, _ = load_exported(tmp_path / "m.safetensors")
    registry = build_model(spec.model, seed=0, dtype=torch.float32)
    registry.load_state_dict(dict(loaded.state_dict()))
    x = decode_bundle(data)["test_x"]
    with torch.no_grad():
        assert torch.equal(loaded(x), registry(x))
