"""Job spec files: a TOML file naming a registry model and the job's settings, to and from ``JobSpec``.

``parse_spec`` reads a file (with ``tomllib``) into a ``SpecFile``: a whole
``JobSpec`` except for what the data decides (the dataset digest, unless the
file names one, and the preprocessing, unless the file records one), and the
``DataOptions`` that tell ``tdml_node.work.userdata`` how to turn a data file
into a dataset blob. ``spec_to_toml`` writes a spec back in the same format,
so ``tdml-node job presets`` prints files a user can copy and edit.

Every problem raises ``SpecFileError`` with one line that names the field.
The file is data only: it names a model of the vetted registry and integers
for it, never code, and this module must never evaluate anything it reads.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus.codec import EncodeError, encode
from consensus.transition import validate_job_spec
from consensus.types import (
    ZERO_HASH,
    Amount,
    Decimal,
    DecimalArg,
    ExecutionProfile,
    Hash32,
    JobSpec,
    OptimizerSpec,
    PipelineSpec,
    Preprocessing,
    ScheduleSpec,
    VerificationPolicy,
)
from consensus.work import InvalidWork
from tdml_node.work import preprocess
from tdml_node.work.models import make_model_spec, registry_names, validate_model_spec
from tdml_node.work.optim import optimizer_args
from tdml_node.work.partition import make_pipeline
from tdml_node.work.profile import local_profile


class SpecFileError(ValueError):
    """A job spec file that cannot become a job; the message is one line naming the field."""


@dataclass(frozen=True, slots=True)
class DataOptions:
    """How the client turns a data file into the dataset blob (``[data]`` of the spec file)."""

    label: str = "label"
    """The label column of a CSV file."""
    test_fraction: float = 0.2
    """Share of the samples held out when the data file has no test split."""
    split_seed: int = 0
    """Seed of the permutation that picks the held-out samples (text: the tail is held out)."""
    standardize: bool = False
    """Standardise features with statistics fitted on the train split, and record them in the job."""


@dataclass(frozen=True, slots=True)
class SpecFile:
    """A parsed spec file: the job (``dataset`` is ``ZERO_HASH`` when the data file decides it) and data options."""

    spec: JobSpec
    data: DataOptions
    vocab_from_data: bool = False
    """A ``char_transformer`` whose ``vocab`` the file left out: the text's vocabulary decides it."""

    @property
    def names_dataset(self) -> bool:
        return self.spec.dataset != ZERO_HASH


_TOP = {
    "name", "task", "steps", "seed", "global_batch", "shards", "inner_steps", "stages", "eval_every",
    "seq_len", "reward_per_unit", "reward_per_verdict", "dataset",
    "model", "optimizer", "outer_optimizer", "schedule", "verification", "profile", "data", "preprocessing", "pipeline",
}
_REQUIRED = ("name", "steps", "global_batch", "shards", "model", "optimizer")
_DEFAULT_VERIFICATION = {"checked_steps": 1, "checkers_per_unit": 0, "tolerance": "0", "unit_timeout_blocks": 5}


def parse_spec_file(path: str | Path) -> SpecFile:
    """``parse_spec`` of a file's text; errors name the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecFileError(f"{p}: cannot read: {exc.strerror}") from exc
    try:
        return parse_spec(text)
    except SpecFileError as exc:
        raise SpecFileError(f"{p}: {exc}") from exc


def parse_spec(text: str) -> SpecFile:
    """A spec file's text as a job and data options; ``SpecFileError`` for anything wrong with it."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecFileError(f"not valid TOML: {exc}") from exc
    _known(doc, _TOP, "")
    for key in _REQUIRED:
        if key not in doc:
            raise SpecFileError(f"missing field {key!r}")
    inner_steps = _int(doc, "inner_steps", 1)
    model_table = _table(doc, "model")
    args = model_table.get("args")
    vocab_from_data = model_table.get("name") == "char_transformer" and isinstance(args, dict) and "vocab" not in args
    if vocab_from_data:
        # A placeholder until the text is read; ``with_vocab`` replaces it.
        model_table = {**model_table, "args": {**model_table["args"], "vocab": 1}}
    spec = JobSpec(
        name=_str(doc, "name"),
        task=_str(doc, "task", "classification"),
        model=_model(model_table),
        dataset=_digest(doc),
        seq_len=_int(doc, "seq_len", 0),
        loss="cross_entropy",
        optimizer=_optimizer(_table(doc, "optimizer"), "optimizer"),
        outer_optimizer=_optimizer(_table(doc, "outer_optimizer"), "outer_optimizer") if "outer_optimizer" in doc else None,
        schedule=_schedule(_table(doc, "schedule") if "schedule" in doc else {}),
        global_batch=_int(doc, "global_batch"),
        shards=_int(doc, "shards"),
        inner_steps=inner_steps,
        steps=_int(doc, "steps"),
        seed=_int(doc, "seed", 0),
        eval_every=_int(doc, "eval_every", 10),
        profile=_profile(_table(doc, "profile")) if "profile" in doc else local_profile(),
        verification=_verification(_table(doc, "verification") if "verification" in doc else {}),
        reward_per_unit=Amount(_int(doc, "reward_per_unit", 10)),
        reward_per_verdict=Amount(_int(doc, "reward_per_verdict", 2)),
        preprocessing=_preprocessing(doc["preprocessing"]) if "preprocessing" in doc else None,
    )
    spec = dataclasses.replace(spec, pipeline=_pipeline(doc, spec))
    data = _data(_table(doc, "data") if "data" in doc else {})
    if data.standardize and spec.preprocessing is not None:
        raise SpecFileError("data.standardize fits the preprocessing; a [preprocessing] table records one: give one")
    check_spec(spec)
    return SpecFile(spec, data, vocab_from_data)


def with_vocab(spec: JobSpec, vocab: int) -> JobSpec:
    """The spec with its model's ``vocab`` argument set (a character job's vocabulary comes from its text)."""
    args = {a.name: a.value for a in spec.model.args}
    return dataclasses.replace(spec, model=make_model_spec(spec.model.name, **{**args, "vocab": vocab}))


def check_spec(spec: JobSpec) -> None:
    """The chain's structural rules, the registry's and the codec's bounds, as ``SpecFileError``."""
    try:
        encode(spec)
    except EncodeError as exc:
        raise SpecFileError(f"out of bounds: {exc}") from exc
    try:
        validate_job_spec(spec)
    except ValueError as exc:
        raise SpecFileError(str(exc)) from exc
    try:
        validate_model_spec(spec.model)
    except InvalidWork as exc:
        raise SpecFileError(f"model: {exc}") from exc
    for where, opt in (("optimizer", spec.optimizer), ("outer_optimizer", spec.outer_optimizer)):
        try:
            if opt is not None:
                optimizer_args(opt)
        except InvalidWork as exc:
            raise SpecFileError(f"{where}: {exc}") from exc


# ---------------------------------------------------------------------------
# Fields


def _known(table: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        prefix = f"{where}." if where else ""
        raise SpecFileError(f"unknown field '{prefix}{unknown[0]}'; {where or 'the top level'} takes {', '.join(sorted(allowed))}")


def _get(table: Mapping[str, Any], key: str, default: Any, where: str, check: Callable[[Any], bool], kind: str) -> Any:
    if key not in table:
        if default is None:
            raise SpecFileError(f"missing field '{where}{key}'")
        return default
    value = table[key]
    if not check(value):
        raise SpecFileError(f"{where}{key} must be {kind}, got {value!r}")
    return value


def _int(table: Mapping[str, Any], key: str, default: int | None = None, where: str = "") -> int:
    value: int = _get(table, key, default, where, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
    return value


def _str(table: Mapping[str, Any], key: str, default: str | None = None, where: str = "") -> str:
    value: str = _get(table, key, default, where, lambda v: isinstance(v, str), "a string")
    return value


def _table(table: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = table.get(key)
    if not isinstance(value, dict):
        raise SpecFileError(f"{key} must be a table, got {value!r}")
    return value


def _decimal(value: Any, where: str) -> Decimal:
    """Exact decimal text; TOML numbers are accepted and written as Python writes them."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SpecFileError(f"{where} must be a decimal (text such as \"0.05\", or a number), got {value!r}")
    return Decimal(value if isinstance(value, str) else repr(value))


def _digest(doc: Mapping[str, Any]) -> Hash32:
    if "dataset" not in doc:
        return ZERO_HASH
    text = _str(doc, "dataset")
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise SpecFileError(f"dataset must be a 32-byte digest in hex, got {text!r}")
    return Hash32(raw)


def _model(table: dict[str, Any]) -> Any:
    _known(table, {"name", "args"}, "model")
    name = _str(table, "name", where="model.")
    if name not in registry_names():
        raise SpecFileError(f"unknown model {name!r}; the registry has {', '.join(registry_names())}")
    args = _table(table, "args") if "args" in table else {}
    for key, value in args.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecFileError(f"model.args.{key} must be an integer, got {value!r}")
    return make_model_spec(name, **args)


def _optimizer(table: dict[str, Any], where: str) -> OptimizerSpec:
    name = _str(table, "name", where=f"{where}.")
    params = {k: _decimal(v, f"{where}.{k}") for k, v in table.items() if k != "name"}
    return OptimizerSpec(name=name, params=tuple(DecimalArg(k, v) for k, v in sorted(params.items())))


def _schedule(table: dict[str, Any]) -> ScheduleSpec:
    _known(table, {"name", "warmup_steps", "final_fraction"}, "schedule")
    return ScheduleSpec(
        name=_str(table, "name", "constant", "schedule."),
        warmup_steps=_int(table, "warmup_steps", 0, "schedule."),
        final_fraction=_decimal(table.get("final_fraction", "1"), "schedule.final_fraction"),
    )


def _verification(table: dict[str, Any]) -> VerificationPolicy:
    _known(table, set(_DEFAULT_VERIFICATION), "verification")
    merged = {**_DEFAULT_VERIFICATION, **table}
    return VerificationPolicy(
        checked_steps=_int(merged, "checked_steps", where="verification."),
        checkers_per_unit=_int(merged, "checkers_per_unit", where="verification."),
        tolerance=_decimal(merged["tolerance"], "verification.tolerance"),
        unit_timeout_blocks=_int(merged, "unit_timeout_blocks", where="verification."),
    )


def _profile(table: dict[str, Any]) -> ExecutionProfile:
    fields = {f.name for f in dataclasses.fields(ExecutionProfile)}
    _known(table, fields, "profile")
    local = local_profile()
    deterministic = table.get("deterministic", local.deterministic)
    if not isinstance(deterministic, bool):
        raise SpecFileError(f"profile.deterministic must be true or false, got {deterministic!r}")
    return ExecutionProfile(
        dtype=_str(table, "dtype", local.dtype, "profile."),
        threads=_int(table, "threads", local.threads, "profile."),
        deterministic=deterministic,
        device=_str(table, "device", local.device, "profile."),
        torch_version=_str(table, "torch_version", local.torch_version, "profile."),
    )


def _preprocessing(value: Any) -> Preprocessing:
    try:
        return preprocess.from_mapping(value)
    except ValueError as exc:
        raise SpecFileError(f"preprocessing: {exc}") from exc


def _pipeline(doc: Mapping[str, Any], spec: JobSpec) -> PipelineSpec | None:
    """``stages`` and the ``[pipeline]`` table: explicit layer bounds, or a split by the per-layer memory estimate.

    ``stages = S`` alone splits the layers into S stages with the smallest
    largest stage; ``[pipeline] memory_budget_mb`` instead takes the fewest
    stages each of which fits the budget; ``layer_bounds`` fixes the split.
    """
    stages = _int(doc, "stages", 1)
    table = _table(doc, "pipeline") if "pipeline" in doc else {}
    _known(table, {"micro_batches", "layer_bounds", "memory_budget_mb"}, "pipeline")
    if stages < 1:
        raise SpecFileError("stages must be at least 1")
    if not table and stages == 1:
        return None
    micro = _int(table, "micro_batches", 1, "pipeline.")
    bounds = table.get("layer_bounds")
    if bounds is not None and (not isinstance(bounds, list) or not all(isinstance(b, int) for b in bounds)):
        raise SpecFileError("pipeline.layer_bounds must be a list of integers")
    budget = _int(table, "memory_budget_mb", 0, "pipeline.") if "memory_budget_mb" in table else None
    if bounds is not None and "stages" in doc and len(bounds) - 1 != stages:
        raise SpecFileError(f"pipeline.layer_bounds name {len(bounds) - 1} stages, stages = {stages}")
    chosen = {
        "layer_bounds": tuple(bounds) if bounds is not None else None,
        "memory_budget": budget * 2**20 if budget is not None else None,
        "stages": stages if bounds is None and budget is None else None,
    }
    try:
        return make_pipeline(spec, micro_batches=micro, **chosen)  # type: ignore[arg-type]
    except InvalidWork as exc:
        raise SpecFileError(f"pipeline: {exc}") from exc


def _data(table: dict[str, Any]) -> DataOptions:
    defaults = DataOptions()
    _known(table, {f.name for f in dataclasses.fields(DataOptions)}, "data")
    fraction = _get(
        table, "test_fraction", defaults.test_fraction, "data.",
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, "a number in [0, 1)",
    )
    standardize = _get(table, "standardize", defaults.standardize, "data.", lambda v: isinstance(v, bool), "true or false")
    return DataOptions(
        label=_str(table, "label", defaults.label, "data."),
        test_fraction=float(fraction),
        split_seed=_int(table, "split_seed", defaults.split_seed, "data."),
        standardize=standardize,
    )


# ---------------------------------------------------------------------------
# Writing


def spec_to_toml(spec: JobSpec, data: DataOptions | None = None, *, vocab_from_data: bool = False) -> str:
    """A spec file that ``parse_spec`` reads back into ``spec`` (and ``data``, when given).

    ``data`` given: the file leaves the dataset digest to the data file (and,
    with ``vocab_from_data``, a character model's ``vocab`` to its text).
    """
    lines = [f"name = {_quote(spec.name)}", f"task = {_quote(spec.task)}"]
    if data is None:
        lines += [
            "# The preset's own dataset blob; leave this line (and [preprocessing]) out to use --data FILE.",
            f"dataset = {_quote('0x' + spec.dataset.hex())}",
        ]
    args = [a for a in spec.model.args if not (vocab_from_data and a.name == "vocab")]
    lines += [
        f"steps = {spec.steps}",
        f"seed = {spec.seed}",
        f"global_batch = {spec.global_batch}",
        f"shards = {spec.shards}",
        f"inner_steps = {spec.inner_steps}",
        f"stages = {len(spec.pipeline.layer_bounds) - 1 if spec.pipeline is not None else 1}",
        f"eval_every = {spec.eval_every}",
        f"seq_len = {spec.seq_len}",
        f"reward_per_unit = {spec.reward_per_unit}",
        f"reward_per_verdict = {spec.reward_per_verdict}",
        "",
        "[model]",
        f"name = {_quote(spec.model.name)}",
        "args = { " + ", ".join(f"{a.name} = {a.value}" for a in args) + " }",
    ]
    for title, opt in (("optimizer", spec.optimizer), ("outer_optimizer", spec.outer_optimizer)):
        if opt is not None:
            lines += ["", f"[{title}]", f"name = {_quote(opt.name)}", *(f"{p.name} = {_quote(p.value)}" for p in opt.params)]
    s, v, p = spec.schedule, spec.verification, spec.profile
    lines += [
        "", "[schedule]", f"name = {_quote(s.name)}", f"warmup_steps = {s.warmup_steps}",
        f"final_fraction = {_quote(s.final_fraction)}",
        "", "[verification]", f"checked_steps = {v.checked_steps}", f"checkers_per_unit = {v.checkers_per_unit}",
        f"tolerance = {_quote(v.tolerance)}", f"unit_timeout_blocks = {v.unit_timeout_blocks}",
        "", "[profile]", f"dtype = {_quote(p.dtype)}", f"threads = {p.threads}",
        f"deterministic = {'true' if p.deterministic else 'false'}", f"device = {_quote(p.device)}",
        f"torch_version = {_quote(p.torch_version)}",
    ]
    if spec.pipeline is not None:
        bounds = ", ".join(str(b) for b in spec.pipeline.layer_bounds)
        lines += ["", "[pipeline]", f"micro_batches = {spec.pipeline.micro_batches}", f"layer_bounds = [{bounds}]"]
    if spec.preprocessing is not None and not (data is not None and data.standardize):
        mean, scale = preprocess.statistics(spec.preprocessing)
        lines += [
            "", "[preprocessing]", f"kind = {_quote(spec.preprocessing.kind)}",
            "mean = [" + ", ".join(repr(float(x)) for x in mean) + "]",
            "scale = [" + ", ".join(repr(float(x)) for x in scale) + "]",
        ]
    if data is not None:
        lines += [
            "", "[data]", f"label = {_quote(data.label)}", f"test_fraction = {data.test_fraction!r}",
            f"split_seed = {data.split_seed}", f"standardize = {'true' if data.standardize else 'false'}",
        ]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    # A JSON string is a valid TOML basic string for the text a spec holds.
    return json.dumps(text, ensure_ascii=False)


def preset_file(name: str) -> str:
    """A preset as a spec file; a text preset's leaves its dataset and ``vocab`` to the text file."""
    from tdml_node.work.jobs import CHARS_TEST_FRACTION, preset_spec, text_presets

    from_text = text_presets().get(name)
    if from_text is not None:
        spec, _ = from_text("a sample")
        return spec_to_toml(spec, DataOptions(test_fraction=CHARS_TEST_FRACTION), vocab_from_data=True)
    found = preset_spec(name)
    assert found is not None, "only the text presets need a text file"
    return spec_to_toml(found)
