"""Job spec files: good files parse into the JobSpec they say, each mistake is one line naming it, presets round-trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from consensus.types import ZERO_HASH, Decimal, PipelineSpec
from tdml_node.work.jobs import EXACT, get_job, job_names, make_job, optimizer_spec, preset_spec
from tdml_node.work.models import make_model_spec
from tdml_node.work.specfile import (
    DataOptions,
    SpecFileError,
    parse_spec,
    parse_spec_file,
    preset_file,
    spec_to_toml,
)
from tdml_node.work.userdata import prepare_job

MINIMAL = """
name = "my-mlp"
steps = 40
global_batch = 64
shards = 2

[model]
name = "mlp"
args = { in_dim = 20, hidden = 32, layers = 1, classes = 3 }

[optimizer]
name = "sgd"
lr = "0.1"
momentum = 0.9
"""


def test_a_minimal_file_takes_the_presets_defaults() -> None:
    parsed = parse_spec(MINIMAL)
    expected = make_job(
        "my-mlp",
        dataset=b"",
        model=make_model_spec("mlp", in_dim=20, hidden=32, layers=1, classes=3),
        optimizer=optimizer_spec("sgd", lr="0.1", momentum="0.9"),
        global_batch=64,
        shards=2,
        steps=40,
    )
    assert parsed.spec == dataclasses.replace(expected, dataset=ZERO_HASH)
    assert parsed.data == DataOptions() and not parsed.names_dataset and not parsed.vocab_from_data
    assert parsed.spec.verification == EXACT


def test_a_full_file_sets_every_field() -> None:
    text = MINIMAL.replace('name = "my-mlp"', 'name = "local"\ninner_steps = 4\nseed = 9\neval_every = 0\nstages = 1') + """
[outer_optimizer]
name = "sgd"
lr = "0.7"
nesterov = 1

[schedule]
name = "linear"
warmup_steps = 5
final_fraction = "0.1"

[verification]
checked_steps = 2
checkers_per_unit = 1
tolerance = "1e-5"

[data]
label = "target"
test_fraction = 0.25
split_seed = 3
standardize = true
"""
    parsed = parse_spec(text)
    spec = parsed.spec
    assert (spec.inner_steps, spec.seed, spec.eval_every) == (4, 9, 0)
    assert spec.outer_optimizer == optimizer_spec("sgd", lr="0.7", nesterov="1")
    assert (spec.schedule.name, spec.schedule.warmup_steps, spec.schedule.final_fraction) == ("linear", 5, "0.1")
    assert spec.verification == dataclasses.replace(EXACT, checked_steps=2, checkers_per_unit=1, tolerance=Decimal("1e-5"))
    assert parsed.data == DataOptions(label="target", test_fraction=0.25, split_seed=3, standardize=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("name = \"mlp\"", "name = \"resnet\""), "unknown model 'resnet'; the registry has char_transformer, cnn, mlp"),
        (("hidden = 32", "width = 32"), "model: model 'mlp' takes arguments ['classes', 'hidden', 'in_dim', 'layers']"),
        (("hidden = 32", "hidden = \"big\""), "model.args.hidden must be an integer, got 'big'"),
        (("hidden = 32", "hidden = 0"), "model argument hidden=0 is out of range [1, 16384]"),
        (("steps = 40\n", ""), "missing field 'steps'"),
        (("shards = 2", "shards = 2\nstages = 0"), "stages must be at least 1"),
        (("shards = 2", "shards = 2\nlearning_rate = 1"), "unknown field 'learning_rate'"),
        (("shards = 2", "shards = 3"), "global_batch must be a multiple of shards"),
        (("shards = 2", "shards = 1000"), "out of bounds"),
        (("steps = 40", "steps = \"forty\""), "steps must be an integer, got 'forty'"),
        (("lr = \"0.1\"", "lr = \"fast\""), "lr='fast' is not a decimal"),
        (("name = \"sgd\"", "name = \"lion\""), "optimizer must be one of"),
        (("momentum = 0.9", "momentm = 0.9"), "optimizer: "),
        (("shards = 2", "shards = 2\ninner_steps = 4"), "an outer optimizer is required exactly when inner_steps > 1"),
        (("shards = 2", "shards = 2\ndataset = \"0x12\""), "dataset must be a 32-byte digest in hex"),
        (("shards = 2", "shards = 2\n[data]\ntest_fraction = 1.5"), "data.test_fraction must be a number in [0, 1)"),
        (("global_batch = 64", "global_batch = [64"), "not valid TOML"),
    ],
)
def test_each_mistake_is_one_line_that_names_it(change: tuple[str, str], message: str) -> None:
    text = MINIMAL.replace(*change, 1)
    assert text != MINIMAL
    with pytest.raises(SpecFileError) as caught:
        parse_spec(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_recorded_preprocessing_is_checked() -> None:
    base = MINIMAL + '\n[preprocessing]\nkind = "standardize"\n'
    one = ", ".join(["1.0"] * 20)
    assert parse_spec(base + f"mean = [{one}]\nscale = [{one}]\n").spec.preprocessing is not None
    with pytest.raises(SpecFileError, match="scales finite and positive"):
        parse_spec(base + f"mean = [{one}]\nscale = [{one.replace('1.0', '0.0', 1)}]\n")
    with pytest.raises(SpecFileError, match="one mean and one scale per feature"):
        parse_spec(base + f"mean = [{one}]\nscale = [1.0]\n")
    with pytest.raises(SpecFileError, match="give one"):
        parse_spec(base + f"mean = [{one}]\nscale = [{one}]\n[data]\nstandardize = true\n")
    bad_kind = MINIMAL + '\n[preprocessing]\nkind = "whiten"\nmean = [1.0]\nscale = [1.0]\n'
    with pytest.raises(SpecFileError, match="kind must be 'standardize'"):
        parse_spec(bad_kind)


def test_the_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(MINIMAL.replace("mlp", "nope"))
    with pytest.raises(SpecFileError, match=r"job\.toml: unknown model 'nope'"):
        parse_spec_file(path)


@pytest.mark.parametrize("name", [n for n in job_names() if not n.startswith("chars-transformer")])
def test_every_preset_printed_as_toml_parses_back_into_its_spec(name: str) -> None:
    spec = preset_spec(name)
    assert spec is not None
    parsed = parse_spec(preset_file(name))
    assert parsed.spec == spec and parsed.names_dataset
    # With its own data it is the same job too.
    assert prepare_job(parsed, None) == (spec, None)


def test_the_chars_preset_file_with_its_text_is_the_chars_preset(tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    spec, data = get_job("chars-transformer", text_path=text)
    parsed = parse_spec(preset_file("chars-transformer"))
    assert parsed.vocab_from_data and not parsed.names_dataset
    assert prepare_job(parsed, text) == (spec, data)


def test_a_file_for_your_own_data_leaves_the_dataset_and_the_statistics_to_the_data() -> None:
    spec = preset_spec("digits-mlp")
    assert spec is not None
    text = spec_to_toml(spec, DataOptions(standardize=True))
    assert "dataset =" not in text and "[preprocessing]" not in text
    parsed = parse_spec(text)
    assert parsed.data.standardize and parsed.spec == dataclasses.replace(spec, dataset=ZERO_HASH, preprocessing=None)


def test_a_pipeline_is_given_by_stage_count_bounds_or_memory_budget() -> None:
    base = MINIMAL.replace("[model]", "stages = 2\n\n[model]", 1)
    balanced = parse_spec(base).spec.pipeline
    assert balanced is not None and len(balanced.layer_bounds) == 3 and balanced.micro_batches == 1
    explicit = parse_spec(MINIMAL + "\n[pipeline]\nmicro_batches = 2\nlayer_bounds = [0, 1, 2]\n").spec
    assert explicit.pipeline == PipelineSpec((0, 1, 2), 2)
    budget = parse_spec(MINIMAL + "\n[pipeline]\nmemory_budget_mb = 4096\n").spec.pipeline
    assert budget is not None and budget.layer_bounds[0] == 0 and len(budget.layer_bounds) == 2  # it all fits in one
    with pytest.raises(SpecFileError, match="name 2 stages, stages = 3"):
        parse_spec(MINIMAL.replace("[model]", "stages = 3\n\n[model]", 1) + "\n[pipeline]\nlayer_bounds = [0, 1, 2]\n")
    with pytest.raises(SpecFileError, match=r"pipeline\.colour"):
        parse_spec(MINIMAL + "\n[pipeline]\ncolour = 1\n")
    assert parse_spec(spec_to_toml(explicit)).spec == explicit
