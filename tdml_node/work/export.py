"""Model export: a committed model state as a safetensors file that plain PyTorch loads.

The file holds the model's ``state_dict`` (parameter names without the
bundle's ``param/`` prefix; optimizer state is left out) and string metadata:
the registry model name, its arguments as JSON, the job name, the model root
and the dtype, and, when the job recorded one, its ``preprocessing`` as JSON
with exact floats. ``load_exported`` rebuilds the registry model from that
metadata, loads the weights strictly and, when there is a preprocessing
record, registers a forward pre-hook that applies it, so the loaded model
takes raw input and its parameters keep their names.

This module must never write or read pickles: safetensors holds tensors and
strings only, so loading an exported model runs no code from the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

from consensus.types import Hash32, JobSpec
from tdml_node.work import preprocess
from tdml_node.work.models import build_model, make_model_spec, model_args
from tdml_node.work.pipeline_state import decode_pipeline_state, join_states
from tdml_node.work.state import PARAM_PREFIX
from tdml_node.work.tensors import DTYPES, bundle_digest, decode_bundle, dtype_name


def model_state_tensors(spec: JobSpec, root_blob: bytes, fetch: Callable[[Hash32], bytes]) -> dict[str, torch.Tensor]:
    """The whole model's state tensors from its root blob: the bundle itself, or a pipeline's stages joined."""
    if spec.pipeline is None:
        return decode_bundle(root_blob)
    stages = decode_pipeline_state(root_blob, spec).stage_roots
    return join_states([decode_bundle(fetch(root)) for root in stages])


def export_model(
    spec: JobSpec, state_bundle: bytes, path: str | Path, fetch: Callable[[Hash32], bytes] | None = None
) -> dict[str, str]:
    """Write the parameters of a model state to ``path``; the metadata written.

    ``state_bundle`` is the model root's blob; a pipeline job's names its
    stage bundles, which ``fetch`` reads.
    """
    if spec.pipeline is not None and fetch is None:
        raise ValueError("a pipeline model's stage bundles need a fetch")
    tensors = model_state_tensors(spec, state_bundle, fetch or (lambda _: b""))
    weights = {name[len(PARAM_PREFIX) :]: t for name, t in tensors.items() if name.startswith(PARAM_PREFIX)}
    if not weights:
        raise ValueError("the state bundle holds no parameters")
    dtypes = {t.dtype for t in weights.values()}
    if len(dtypes) != 1:
        raise ValueError("an exported model has one dtype")
    # Check the weights against the registry model before writing a file nobody could load.
    model = build_model(spec.model, seed=spec.seed, dtype=dtypes.pop())
    model.load_state_dict(weights, strict=True)
    metadata = {
        "format": "tdml-model/v1",
        "model": spec.model.name,
        "args": json.dumps(model_args(spec.model), sort_keys=True),
        "job": spec.name,
        "model_root": bundle_digest(state_bundle).hex(),
        "dtype": dtype_name(next(iter(weights.values())).dtype),
    }
    if spec.preprocessing is not None:
        metadata["preprocessing"] = preprocess.to_json(spec.preprocessing)
    # Serialized here and written by open(), so the file gets the usual mode (0644 under umask 022);
    # safetensors' own save_file makes it 0600, which other users cannot load.
    Path(path).write_bytes(save(weights, metadata=metadata))
    return metadata


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        meta: dict[str, str] = f.metadata() or {}
    return meta


def load_exported(path: str | Path) -> tuple[nn.Module, dict[str, str]]:
    """The registry model with the exported weights (in eval mode), and the file's metadata."""
    metadata = read_metadata(path)
    try:
        args = json.loads(metadata["args"])
        spec = make_model_spec(metadata["model"], **{str(k): int(v) for k, v in args.items()})
        dtype = DTYPES[metadata["dtype"]]
        pre = preprocess.from_json(metadata["preprocessing"]) if "preprocessing" in metadata else None
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not an exported TDML model: {exc}") from exc
    model = build_model(spec, seed=0, dtype=dtype)
    model.load_state_dict(load_file(str(path)), strict=True)
    model.eval()
    if pre is not None:
        record = pre

        def standardise(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (preprocess.apply_torch(record, args[0], dtype), *args[1:])

        model.register_forward_pre_hook(standardise)
    return model, metadata
