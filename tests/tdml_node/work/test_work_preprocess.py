"""The preprocessing record: exact through JSON and TOML, and the same bits as scikit-learn's transform."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import StandardScaler

from tdml_node.work import preprocess
from tdml_node.work.jobs import get_job
from tdml_node.work.specfile import parse_spec, spec_to_toml

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
positive = st.floats(min_value=5e-324, allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, positive), min_size=1, max_size=64))
def test_the_record_is_exact_through_json_and_toml(stats: list[tuple[float, float]]) -> None:
    pre = preprocess.standardize(np.array([m for m, _ in stats]), np.array([s for _, s in stats]))
    assert preprocess.from_json(preprocess.to_json(pre)) == pre
    spec, _ = get_job("synthetic-mlp")
    spec = dataclasses.replace(spec, preprocessing=pre)
    assert parse_spec(spec_to_toml(spec)).spec == spec


def test_apply_gives_the_bits_of_scikit_learns_transform() -> None:
    rng = np.random.Generator(np.random.PCG64(2))
    train = rng.normal(50.0, 7.0, size=(300, 9))
    train[:, 3] = 4.0  # a constant feature keeps scale 1
    other = rng.normal(50.0, 7.0, size=(40, 9))
    pre = preprocess.fit_standardize(train)
    scaler = StandardScaler().fit(train)
    mean, scale = preprocess.statistics(pre)
    assert np.array_equal(mean, scaler.mean_) and np.array_equal(scale, scaler.scale_) and scale[3] == 1.0
    expected = scaler.transform(other).astype(np.float32)
    assert np.array_equal(preprocess.apply(pre, other), expected)
    assert torch.equal(preprocess.apply_torch(pre, torch.from_numpy(other), torch.float32), torch.from_numpy(expected))
