"""Your own data: a ``.npz``, ``.csv`` or text file turned, on the client, into the dataset blob nodes train on.

``prepare_job`` joins a parsed spec file and a data file: it converts the
file into the canonical dataset bundle of ``tdml_node.work.datasets`` (nodes
accept exactly the bundles they accepted before), fits and applies the
standardisation the file asks for on the train split only, records it in the
job, and checks the result the way a node's executor will, so a mistake is
one clear line here rather than a stalled job on the chain.

- ``.npz``: ``x`` [N, ...] numeric and ``y`` [N] integer labels, optionally
  ``x_test`` and ``y_test``; samples are flattened to feature rows.
- ``.csv``: a header row; the label column (``data.label``) holds integer
  labels, every other column a number.
- anything else, for a ``char_lm`` job: UTF-8 text; the tail is held out.

Without a test split, ``data.test_fraction`` of the samples, chosen by a
permutation seeded with ``data.split_seed``, is held out.

This module must never send anything anywhere and never fit a statistic on
held-out samples.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from consensus.crypto import sha256
from consensus.types import JobSpec, Preprocessing
from consensus.work import InvalidWork
from tdml_node.work import preprocess
from tdml_node.work.datasets import TASK_CHAR_LM, Dataset, char_corpus_bundle, classification_bundle
from tdml_node.work.specfile import DataOptions, SpecFile, check_spec, with_vocab
from tdml_node.work.tensors import decode_bundle
from tdml_node.work.unit import validate_job_inputs

_NPZ_KEYS = {"x", "y", "x_test", "y_test"}


class DataFileError(ValueError):
    """A data file that cannot become the job's dataset; the message is one line."""


@dataclasses.dataclass(frozen=True, slots=True)
class PreparedData:
    """A dataset bundle and the preprocessing it went through."""

    bundle: bytes
    preprocessing: Preprocessing | None


def prepare_job(spec_file: SpecFile, data_path: str | Path | None) -> tuple[JobSpec, bytes | None]:
    """The job to submit and its dataset bundle (None when the spec names a blob already on the node)."""
    if data_path is None:
        if not spec_file.names_dataset:
            raise DataFileError("the spec names no dataset: give a data file (--data FILE)")
        if spec_file.vocab_from_data:
            raise DataFileError("model.args.vocab is left to the data, so the job needs its text (--data FILE)")
        return spec_file.spec, None
    if spec_file.names_dataset:
        raise DataFileError("the spec names a dataset blob and a data file is given: remove `dataset` or the data file")
    spec = spec_file.spec
    prepared = convert(data_path, task=spec.task, options=spec_file.data)
    pre = prepared.preprocessing if spec_file.data.standardize else spec.preprocessing
    spec = dataclasses.replace(spec, dataset=sha256(prepared.bundle), preprocessing=pre)
    tensors = decode_bundle(prepared.bundle)
    if spec_file.vocab_from_data:
        spec = with_vocab(spec, int(tensors["vocab"].shape[0]))
    check_spec(spec)
    try:
        validate_job_inputs(spec, Dataset(tensors, task=spec.task, seq_len=spec.seq_len))
    except InvalidWork as exc:
        raise DataFileError(f"{data_path}: {exc}") from exc
    return spec, prepared.bundle


def convert(path: str | Path, *, task: str, options: DataOptions) -> PreparedData:
    """The dataset bundle of a data file (and its fitted preprocessing when ``options.standardize``)."""
    p = Path(path)
    try:
        if task == TASK_CHAR_LM:
            if options.standardize:
                raise DataFileError("data.standardize applies to feature columns, not to text")
            return PreparedData(char_corpus_bundle(p.read_text(encoding="utf-8"), options.test_fraction), None)
        if p.suffix == ".npz":
            arrays = _npz(p)
        elif p.suffix == ".csv":
            arrays = _csv(p, options.label)
        else:
            raise DataFileError(f"{p}: a {task} job reads .npz or .csv files")
        return _classification(arrays, options)
    except OSError as exc:
        raise DataFileError(f"{p}: cannot read: {exc.strerror}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, DataFileError):
            raise
        raise DataFileError(f"{p}: {exc}") from exc


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        if not {"x", "y"} <= keys or keys - _NPZ_KEYS or ("x_test" in keys) != ("y_test" in keys):
            raise DataFileError(f"{path}: an .npz holds x and y, optionally x_test and y_test; it has {sorted(keys)}")
        return {k: npz[k] for k in keys}


def _csv(path: Path, label: str) -> dict[str, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DataFileError(f"{path}: a CSV needs a header row and at least one sample")
    header, body = rows[0], rows[1:]
    if label not in header:
        raise DataFileError(f"{path}: no label column {label!r} (data.label); columns: {', '.join(header)}")
    col = header.index(label)
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataFileError(f"{path}: line {number} has {len(row)} fields, the header {len(header)}")
    try:
        table = np.asarray(body, dtype=np.float64)
    except ValueError as exc:
        raise DataFileError(f"{path}: every field must be a number ({exc})") from exc
    return {"x": np.delete(table, col, axis=1), "y": table[:, col]}


def _labels(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataFileError(f"{name} must be one label per sample, got shape {y.shape}")
    if y.dtype.kind not in "iuf" or (y.size and (not np.all(np.mod(y, 1) == 0) or y.min() < 0)):
        raise DataFileError(f"{name} must hold integer class labels 0, 1, 2, ...")
    return y.astype(np.int64)


def _features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2 or x.dtype.kind not in "iuf":
        raise DataFileError(f"{name} must be numeric with one row per sample, got {x.dtype} of shape {x.shape}")
    x = x.reshape(x.shape[0], -1).astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise DataFileError(f"{name} holds values that are not finite")
    return x


def _classification(arrays: dict[str, np.ndarray], options: DataOptions) -> PreparedData:
    x, y = _features(arrays["x"], "x"), _labels(arrays["y"], "y")
    if x.shape[0] != y.shape[0]:
        raise DataFileError(f"x has {x.shape[0]} samples, y {y.shape[0]}")
    if "x_test" in arrays:
        x_test, y_test = _features(arrays["x_test"], "x_test"), _labels(arrays["y_test"], "y_test")
        if x_test.shape[0] != y_test.shape[0] or x_test.shape[1] != x.shape[1]:
            raise DataFileError(f"x_test {x_test.shape} and y_test {y_test.shape} do not match x {x.shape}")
        x_train, y_train = x, y
    else:
        rng = np.random.Generator(np.random.PCG64(options.split_seed))
        order = rng.permutation(x.shape[0])
        n_test = int(x.shape[0] * options.test_fraction)
        test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    if x_train.shape[0] == 0:
        raise DataFileError("the training split is empty")
    pre = preprocess.fit_standardize(x_train) if options.standardize else None
    bundle = classification_bundle(
        preprocess.apply(pre, x_train), y_train, preprocess.apply(pre, x_test), y_test
    )
    return PreparedData(bundle, pre)
