"""Datasets: builders of canonical dataset bundles, and the view the executor trains on.

A dataset is a tensor bundle stored as a blob; the job names it by digest.
Classification bundles hold ``train_x`` [N, F] float32, ``train_y`` [N]
int64, ``test_x`` and ``test_y``. Character-LM bundles hold ``vocab`` (int32
codepoints, sorted), ``train_tokens`` and ``test_tokens`` (int64 indices
into ``vocab``).

``Dataset`` turns a bundle into batches: sample ``i`` of a classification set
is row ``i``; sample ``s`` of a character set is the window starting at token
``s`` (inputs ``tokens[s:s+L]``, targets ``tokens[s+1:s+L+1]``).

This module must never make a batch depend on anything but the bundle and the
indices given (no shuffling, no augmentation, no randomness of its own), and
never accept a bundle whose tensors do not have the layout above.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from consensus.types import Preprocessing
from consensus.work import InvalidWork
from tdml_node.work.preprocess import apply as apply_preprocessing
from tdml_node.work.preprocess import fit_standardize
from tdml_node.work.tensors import decode_bundle, encode_bundle

TASK_CLASSIFICATION = "classification"
TASK_CHAR_LM = "char_lm"
EVAL_CHUNK = 1024
"""Samples per forward pass when evaluating; fixed, since it can change a sum's bits."""
MAX_EVAL_WINDOWS = 256
"""Character-LM evaluation reads at most this many non-overlapping test windows."""


# ---------------------------------------------------------------------------
# Builders


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as raw pixels (0..16), split 1437 train / 360 test: x_train, y_train, x_test, y_test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    return np.asarray(x_train), np.asarray(y_train), np.asarray(x_test), np.asarray(y_test)


def digits_preprocessing() -> Preprocessing:
    """The standardisation the digits bundle applies, fitted on its train split."""
    return fit_standardize(digits_split()[0])


def digits_bundle() -> bytes:
    """scikit-learn's digits: 1437 train / 360 test, standardised on the train split, float32."""
    x_train, y_train, x_test, y_test = digits_split()
    pre = fit_standardize(x_train)
    return classification_bundle(
        apply_preprocessing(pre, x_train),
        np.asarray(y_train, dtype=np.int64),
        apply_preprocessing(pre, x_test),
        np.asarray(y_test, dtype=np.int64),
    )


def synthetic_bundle(
    n_train: int = 2048,
    n_test: int = 512,
    features: int = 32,
    classes: int = 4,
    seed: int = 0,
    spread: float = 0.4,
) -> bytes:
    """Unit-variance Gaussian clusters around class centres drawn with std ``spread``.

    The default spread keeps the classes overlapping (a nearest-centre rule
    gets about 85% right), so the task is not solved in a few steps. The same
    arguments give the same bytes (numpy's PCG64 stream is fixed).
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    centres = rng.normal(0.0, spread, size=(classes, features))
    labels = rng.integers(0, classes, size=n_train + n_test)
    points = centres[labels] + rng.normal(0.0, 1.0, size=(n_train + n_test, features))
    points = points.astype(np.float32)
    labels = labels.astype(np.int64)
    return classification_bundle(points[:n_train], labels[:n_train], points[n_train:], labels[n_train:])


def char_corpus_bundle(text: str, test_fraction: float = 0.1) -> bytes:
    """A character corpus: the sorted characters as vocabulary, the last ``test_fraction`` held out."""
    if len(text) < 2:
        raise ValueError("a character corpus needs at least two characters")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError("test_fraction must be in [0, 1)")
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    vocab = np.unique(codepoints)
    tokens = np.searchsorted(vocab, codepoints).astype(np.int64)
    n_test = int(len(tokens) * test_fraction)
    return encode_bundle(
        {
            "vocab": torch.from_numpy(vocab.astype(np.int32)),
            "train_tokens": torch.from_numpy(tokens[: len(tokens) - n_test].copy()),
            "test_tokens": torch.from_numpy(tokens[len(tokens) - n_test :].copy()),
        }
    )


def vocab_text(vocab: torch.Tensor) -> str:
    """The characters of a character corpus's vocabulary, in token order."""
    return "".join(chr(int(c)) for c in vocab.tolist())


def classification_bundle(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> bytes:
    """The canonical bundle of float32 features and int64 labels."""
    return encode_bundle(
        {
            "train_x": torch.from_numpy(np.ascontiguousarray(train_x)),
            "train_y": torch.from_numpy(np.ascontiguousarray(train_y)),
            "test_x": torch.from_numpy(np.ascontiguousarray(test_x)),
            "test_y": torch.from_numpy(np.ascontiguousarray(test_y)),
        }
    )


# ---------------------------------------------------------------------------
# The view the executor trains on


_LAYOUTS: dict[str, dict[str, tuple[torch.dtype, int]]] = {
    TASK_CLASSIFICATION: {
        "test_x": (torch.float32, 2),
        "test_y": (torch.int64, 1),
        "train_x": (torch.float32, 2),
        "train_y": (torch.int64, 1),
    },
    TASK_CHAR_LM: {
        "test_tokens": (torch.int64, 1),
        "train_tokens": (torch.int64, 1),
        "vocab": (torch.int32, 1),
    },
}


class Dataset:
    """A decoded dataset for one task, sequence length, dtype and device.

    Features are converted to ``dtype`` and everything is moved to ``device``
    once, here, so batches are plain index selections.
    """

    def __init__(
        self,
        tensors: Mapping[str, torch.Tensor],
        *,
        task: str,
        seq_len: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        validate_dataset(tensors, task=task, seq_len=seq_len)
        self.task = task
        self.seq_len = seq_len
        self.device = torch.device(device)
        if task == TASK_CLASSIFICATION:
            self.train_x = tensors["train_x"].to(self.device, dtype)
            self.train_y = tensors["train_y"].to(self.device)
            self.test_x = tensors["test_x"].to(self.device, dtype)
            self.test_y = tensors["test_y"].to(self.device)
            self.n_train = int(self.train_x.shape[0])
            self.features = int(self.train_x.shape[1])
            labels = torch.cat([self.train_y, self.test_y])
            self.n_labels = int(labels.max()) + 1 if labels.numel() else 0
        else:
            self.vocab = tensors["vocab"]
            self.train_tokens = tensors["train_tokens"].to(self.device)
            self.test_tokens = tensors["test_tokens"].to(self.device)
            self.n_train = int(self.train_tokens.shape[0]) - seq_len
            self.n_labels = int(self.vocab.shape[0])
            # [n_train, L + 1]: row s is tokens[s : s + L + 1], a view, no copy.
            self._windows = self.train_tokens.unfold(0, seq_len + 1, 1)

    @classmethod
    def decode(
        cls,
        data: bytes,
        *,
        task: str,
        seq_len: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Dataset:
        return cls(decode_bundle(data), task=task, seq_len=seq_len, dtype=dtype, device=device)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of the given samples, in the given order."""
        idx = torch.tensor(indices, dtype=torch.int64, device=self.device)
        if self.task == TASK_CLASSIFICATION:
            return self.train_x.index_select(0, idx), self.train_y.index_select(0, idx)
        rows = self._windows.index_select(0, idx)  # [B, L + 1]
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()  # [B, L], [B, L]

    def test_batches(self, chunk: int = EVAL_CHUNK) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The test set in fixed chunks: rows, or non-overlapping windows of the test tokens."""
        if self.task == TASK_CLASSIFICATION:
            x, y = self.test_x, self.test_y
        else:
            count = min(MAX_EVAL_WINDOWS, (int(self.test_tokens.shape[0]) - 1) // self.seq_len)
            if count <= 0:
                return
            span = self.test_tokens[: count * self.seq_len + 1]
            x = span[:-1].reshape(count, self.seq_len)  # [N, L]
            y = span[1:].reshape(count, self.seq_len)  # [N, L]
        for start in range(0, int(x.shape[0]), chunk):
            yield x[start : start + chunk], y[start : start + chunk]


def validate_dataset(tensors: Mapping[str, torch.Tensor], *, task: str, seq_len: int = 0) -> None:
    """Raise ``InvalidWork`` unless the tensors have the task's layout and consistent sizes."""
    layout = _LAYOUTS.get(task)
    if layout is None:
        raise InvalidWork(f"unknown task {task!r}")
    if sorted(tensors) != sorted(layout):
        raise InvalidWork(f"a {task} dataset holds {sorted(layout)}, got {sorted(tensors)}")
    for name, (dtype, ndim) in layout.items():
        t = tensors[name]
        if t.dtype != dtype or t.dim() != ndim:
            raise InvalidWork(f"dataset tensor {name!r} must be {ndim}-D {dtype}, got {t.dim()}-D {t.dtype}")
    if task == TASK_CLASSIFICATION:
        for split in ("train", "test"):
            if tensors[f"{split}_x"].shape[0] != tensors[f"{split}_y"].shape[0]:
                raise InvalidWork(f"{split}_x and {split}_y differ in length")
        if tensors["train_x"].shape[1] != tensors["test_x"].shape[1]:
            raise InvalidWork("train and test features differ in width")
        if tensors["train_x"].shape[0] == 0:
            raise InvalidWork("the training split is empty")
        labels = torch.cat([tensors["train_y"], tensors["test_y"]])
        if labels.numel() and int(labels.min()) < 0:
            raise InvalidWork("labels must be non-negative")
        return
    if seq_len < 1:
        raise InvalidWork("a char_lm job needs seq_len >= 1")
    vocab = tensors["vocab"].shape[0]
    for name in ("train_tokens", "test_tokens"):
        tokens = tensors[name]
        if tokens.numel() and not (0 <= int(tokens.min()) and int(tokens.max()) < vocab):
            raise InvalidWork(f"{name} holds indices outside the vocabulary")
    if tensors["train_tokens"].shape[0] <= seq_len:
        raise InvalidWork(f"the training text is not longer than seq_len={seq_len}")
