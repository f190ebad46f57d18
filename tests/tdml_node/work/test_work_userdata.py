"""Your own data: .npz, .csv and text files become the dataset bundles nodes already accept."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from consensus.crypto import sha256
from tdml_node.work import preprocess
from tdml_node.work.datasets import Dataset, char_corpus_bundle, digits_bundle, digits_split
from tdml_node.work.jobs import get_job
from tdml_node.work.specfile import DataOptions, parse_spec
from tdml_node.work.tensors import decode_bundle
from tdml_node.work.userdata import DataFileError, convert, prepare_job

SPEC = """
name = "digits-own"
steps = 5
global_batch = 64
shards = 2

[model]
name = "mlp"
args = { in_dim = 64, hidden = 32, layers = 1, classes = 10 }

[optimizer]
name = "sgd"
lr = "0.05"

[data]
standardize = true
"""


def _digits_npz(path: Path) -> Path:
    x_train, y_train, x_test, y_test = digits_split()
    np.savez(path, x=x_train, y=y_train, x_test=x_test, y_test=y_test)
    return path


def test_the_raw_digits_as_npz_become_the_digits_preset_exactly(tmp_path: Path) -> None:
    prepared = convert(_digits_npz(tmp_path / "d.npz"), task="classification", options=DataOptions(standardize=True))
    assert prepared.bundle == digits_bundle()
    assert prepared.preprocessing == get_job("digits-mlp")[0].preprocessing


def test_statistics_are_fitted_on_the_train_split_only(tmp_path: Path) -> None:
    rng = np.random.Generator(np.random.PCG64(1))
    x = rng.normal(3.0, 2.0, size=(100, 5))
    y = rng.integers(0, 3, size=100)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    options = DataOptions(test_fraction=0.3, split_seed=4, standardize=True)
    prepared = convert(tmp_path / "d.npz", task="classification", options=options)
    tensors = decode_bundle(prepared.bundle)
    assert tensors["train_x"].shape == (70, 5) and tensors["test_x"].shape == (30, 5)
    assert prepared.preprocessing is not None
    mean, _ = preprocess.statistics(prepared.preprocessing)
    # The training rows are exactly standardised; the statistics are theirs, not all rows'.
    train = tensors["train_x"].double()
    assert torch.allclose(train.mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-6)
    test_idx = np.sort(np.random.Generator(np.random.PCG64(4)).permutation(100)[:30])
    train_rows = np.delete(x, test_idx, axis=0)
    assert np.allclose(mean, train_rows.mean(0), rtol=0, atol=1e-12)
    assert not np.allclose(mean, x.mean(0), rtol=0, atol=1e-9)
    assert np.array_equal(tensors["test_y"].numpy(), y[test_idx])
    # The split is a function of the seed.
    again = convert(tmp_path / "d.npz", task="classification", options=options)
    assert again == prepared
    other = convert(tmp_path / "d.npz", task="classification", options=DataOptions(test_fraction=0.3, split_seed=5))
    assert decode_bundle(other.bundle)["test_y"].numpy().tolist() != y[test_idx].tolist()


def test_a_csv_with_a_named_label_column(tmp_path: Path) -> None:
    path = tmp_path / "iris.csv"
    rows = ["f1,species,f2"] + [f"{i * 0.5},{i % 3},{10 - i}" for i in range(30)]
    path.write_text("\n".join(rows) + "\n")
    prepared = convert(path, task="classification", options=DataOptions(label="species", test_fraction=0.2))
    tensors = decode_bundle(prepared.bundle)
    assert prepared.preprocessing is None
    assert tensors["train_x"].shape == (24, 2) and tensors["test_x"].shape == (6, 2)
    assert tensors["train_x"].dtype == torch.float32 and tensors["train_y"].dtype == torch.int64
    joined = torch.cat([tensors["train_x"], tensors["test_x"]])
    labels = torch.cat([tensors["train_y"], tensors["test_y"]])
    # Every row keeps its own label: f2 = 10 - i and label = i % 3, with i = 2 * f1.
    for row, label in zip(joined.tolist(), labels.tolist(), strict=True):
        i = round(row[0] * 2)
        assert row[1] == 10 - i and label == i % 3
    Dataset(tensors, task="classification")  # the layout a node accepts


def test_a_text_file_becomes_a_character_corpus(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("hello, world. " * 20, encoding="utf-8")
    prepared = convert(path, task="char_lm", options=DataOptions(test_fraction=0.1))
    assert prepared.bundle == char_corpus_bundle("hello, world. " * 20, 0.1) and prepared.preprocessing is None


@pytest.mark.parametrize(
    ("write", "task", "options", "message"),
    [
        (lambda p: np.savez(p.with_suffix(".npz"), x=np.zeros((4, 2))), "classification", DataOptions(), "holds x and y"),
        (lambda p: np.savez(p.with_suffix(".npz"), x=np.zeros((4, 2)), y=np.array([0, 1, 2])), "classification",
         DataOptions(), "x has 4 samples, y 3"),
        (lambda p: np.savez(p.with_suffix(".npz"), x=np.zeros((4, 2)), y=np.array([0, 1.5, 2, 0])), "classification",
         DataOptions(), "integer class labels"),
        (lambda p: np.savez(p.with_suffix(".npz"), x=np.full((4, 2), np.nan), y=np.zeros(4)), "classification",
         DataOptions(), "not finite"),
        (lambda p: p.with_suffix(".csv").write_text("a,b\n1,2\n"), "classification", DataOptions(), "no label column 'label'"),
        (lambda p: p.with_suffix(".csv").write_text("a,label\n1,x\n"), "classification", DataOptions(), "must be a number"),
        (lambda p: p.with_suffix(".csv").write_text("a,label\n1,0,3\n"), "classification", DataOptions(), "line 2 has 3 fields"),
        (lambda p: p.with_suffix(".txt").write_text("abc"), "classification", DataOptions(), "reads .npz or .csv"),
        (lambda p: p.with_suffix(".txt").write_text("abc"), "char_lm", DataOptions(standardize=True), "not to text"),
    ],
)
def test_each_bad_data_file_is_one_line(
    tmp_path: Path, write: Callable[[Path], object], task: str, options: DataOptions, message: str
) -> None:
    write(tmp_path / "data")
    (path,) = tmp_path.iterdir()
    with pytest.raises(DataFileError) as caught:
        convert(path, task=task, options=options)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_prepare_job_records_the_data_and_checks_it_as_a_node_would(tmp_path: Path) -> None:
    data = _digits_npz(tmp_path / "d.npz")
    spec, bundle = prepare_job(parse_spec(SPEC), data)
    assert bundle == digits_bundle() and spec.dataset == sha256(bundle)
    assert spec.preprocessing == get_job("digits-mlp")[0].preprocessing
    with pytest.raises(DataFileError, match="the model reads 20 features, the dataset has 64"):
        prepare_job(parse_spec(SPEC.replace("in_dim = 64", "in_dim = 20")), data)
    with pytest.raises(DataFileError, match="give a data file"):
        prepare_job(parse_spec(SPEC), None)
    named = SPEC.replace("shards = 2", f'shards = 2\ndataset = "0x{"00" * 31}01"')
    with pytest.raises(DataFileError, match="remove `dataset` or the data file"):
        prepare_job(parse_spec(named), data)


def test_a_recorded_preprocessing_must_cover_the_datasets_features(tmp_path: Path) -> None:
    ones = ", ".join(["1.0"] * 20)
    text = SPEC.replace("standardize = true", "standardize = false")
    text += f'\n[preprocessing]\nkind = "standardize"\nmean = [{ones}]\nscale = [{ones}]\n'
    with pytest.raises(DataFileError, match="the preprocessing covers 20 features, the dataset has 64"):
        prepare_job(parse_spec(text), _digits_npz(tmp_path / "d.npz"))
