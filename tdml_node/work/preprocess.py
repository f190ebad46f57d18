"""Feature preprocessing a job records: fitting it on the train split, applying it, and its text form.

A ``Preprocessing`` record (consensus data, in the ``JobSpec``) holds float64
bit patterns. ``fit_standardize`` fits the statistics with scikit-learn's
``StandardScaler`` on the training rows only; ``apply`` computes
``(x - mean) / scale`` in float64 and casts to float32, the same operations,
in the same order, as ``StandardScaler.transform`` followed by the cast the
dataset builders do, so applying the record to raw input gives the dataset's
bits exactly.

This module must never fit statistics on anything but the training split,
and never store the statistics in a lossy form (text is Python's shortest
round-trip ``repr`` of each float64).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import torch

from consensus.types import PREPROCESS_STANDARDIZE, Preprocessing


def _to_bits(values: np.ndarray) -> tuple[int, ...]:
    return tuple(int(b) for b in np.ascontiguousarray(values, dtype="<f8").view("<u8"))


def _from_bits(bits: Sequence[int]) -> np.ndarray:
    return np.asarray(bits, dtype="<u8").view("<f8")


def standardize(mean: np.ndarray, scale: np.ndarray) -> Preprocessing:
    """A standardisation record of the given float64 statistics."""
    return Preprocessing(kind=PREPROCESS_STANDARDIZE, mean=_to_bits(mean), scale=_to_bits(scale))


def fit_standardize(train_x: np.ndarray) -> Preprocessing:
    """Standardisation statistics of the training rows (a constant feature keeps scale 1)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(np.asarray(train_x, dtype=np.float64))
    return standardize(np.asarray(scaler.mean_), np.asarray(scaler.scale_))


def statistics(pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """The record's float64 mean and scale."""
    return _from_bits(pre.mean), _from_bits(pre.scale)


def apply(pre: Preprocessing | None, x: np.ndarray) -> np.ndarray:
    """Raw features [N, F] to the float32 features the job trained on."""
    if pre is None:
        return np.asarray(x, dtype=np.float32)
    mean, scale = statistics(pre)
    out = np.array(x, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] != mean.shape[0]:
        raise ValueError(f"input has shape {out.shape}, the preprocessing expects [N, {mean.shape[0]}]")
    out -= mean
    out /= scale
    return out.astype(np.float32)


def apply_torch(pre: Preprocessing, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``apply`` on a tensor, for a model's forward pre-hook (float64 arithmetic, then ``dtype``)."""
    mean, scale = statistics(pre)
    out = x.to(torch.float64) - torch.from_numpy(mean.copy()).to(x.device)
    out = out / torch.from_numpy(scale.copy()).to(x.device)
    return out.to(dtype)


def to_json(pre: Preprocessing) -> str:
    """The record as JSON text with exact floats (for an exported model's metadata)."""
    mean, scale = statistics(pre)
    return json.dumps({"kind": pre.kind, "mean": [float(v) for v in mean], "scale": [float(v) for v in scale]})


def from_json(text: str) -> Preprocessing:
    data = json.loads(text)
    return from_mapping(data)


def from_mapping(data: object) -> Preprocessing:
    """A record from ``{"kind", "mean", "scale"}`` with float lists (JSON or TOML); ValueError if not one."""
    if not isinstance(data, dict) or set(data) != {"kind", "mean", "scale"}:
        raise ValueError("preprocessing needs exactly kind, mean and scale")
    if data["kind"] != PREPROCESS_STANDARDIZE:
        raise ValueError(f"preprocessing kind must be {PREPROCESS_STANDARDIZE!r}, got {data['kind']!r}")
    values = []
    for key in ("mean", "scale"):
        seq = data[key]
        if not isinstance(seq, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seq):
            raise ValueError(f"preprocessing {key} must be a list of numbers")
        values.append(np.asarray(seq, dtype=np.float64))
    return standardize(values[0], values[1])
