"""Writes and checks the generated sections of ``docs/protocol.md``.

    python -m tdml_node.devtools.protocol_doc --write   # rewrite the sections
    python -m tdml_node.devtools.protocol_doc --check   # exit 1 if one is out of date

A generated section lies between ``<!-- BEGIN GENERATED name ... -->`` and
``<!-- END GENERATED name -->``; everything outside the markers is written by
hand and left alone. The sections are rendered from the code itself, so that
the document cannot drift from it (``tests/docs/test_protocol_doc.py`` fails
when it has):

- ``messages``: every message of ``consensus.types`` with its tag, version
  and fields in wire order (``consensus.schema``);
- ``registry``: the registry models' arguments and their bounds;
- ``models``: for each registry model at each preset's arguments, the
  parameters in model order with shapes and dtypes, and the records of its
  model-state and checkpoint bundles in canonical order, exactly as
  ``tdml_node.work.state`` names them;
- ``datasets``: the tensors and digests of the built-in dataset bundles;
- ``presets``: the whole ``JobSpec`` of every preset of ``tdml_node.work.jobs``.

The ``chars-transformer`` preset is built from a small sample text; what
depends on the text (the vocabulary size ``V``, the dataset digest) is shown
symbolically.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from consensus import schema
from consensus.types import (
    ExecutionProfile,
    JobSpec,
    ModelSpec,
    OptimizerSpec,
    PipelineSpec,
    Preprocessing,
    ScheduleSpec,
    VerificationPolicy,
)
from tdml_node.work.datasets import digits_bundle, synthetic_bundle
from tdml_node.work.executor import model_state_optimizer
from tdml_node.work.jobs import get_job, job_names, text_presets
from tdml_node.work.models import (
    MAX_PARAMETERS,
    build_model,
    get_model_bounds,
    model_args,
    registry_names,
)
from tdml_node.work.optim import build_optimizer
from tdml_node.work.profile import torch_dtype
from tdml_node.work.state import state_tensors
from tdml_node.work.tensors import bundle_digest, decode_bundle, dtype_name

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
COMMAND = "python -m tdml_node.devtools.protocol_doc --write"
CHARS_PRESET = "chars-transformer"
_SAMPLE_TEXTS = ("abcdefgh\n" * 8, "abcdefghi\n" * 8)
"""Two sample corpora whose vocabularies differ in size, so ``V`` can be told apart."""


def begin_marker(name: str) -> str:
    return f"<!-- BEGIN GENERATED {name}: do not edit; {COMMAND} -->"


def end_marker(name: str) -> str:
    return f"<!-- END GENERATED {name} -->"


# ---------------------------------------------------------------------------
# Presets, built once per render


@dataclasses.dataclass(frozen=True, slots=True)
class _Preset:
    name: str
    spec: JobSpec
    dataset: str  # the dataset's name in the datasets section, or "corpus"


def _presets() -> tuple[_Preset, ...]:
    datasets = {bundle_digest(data): name for name, data in _datasets().items()}
    out = []
    for name in job_names():
        if name in text_presets():
            spec = text_presets()[name](_SAMPLE_TEXTS[0])[0]
            out.append(_Preset(name, spec, "corpus"))
            continue
        spec, data = get_job(name)
        out.append(_Preset(name, spec, datasets[bundle_digest(data)]))
    return tuple(out)


def _chars_spec(text: str) -> JobSpec:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        path.write_text(text, encoding="utf-8")
        spec, _ = get_job(CHARS_PRESET, text_path=path)
    return spec


@lru_cache(maxsize=1)
def _datasets() -> dict[str, bytes]:
    return {"digits": digits_bundle(), "synthetic": synthetic_bundle()}


# ---------------------------------------------------------------------------
# Sections


def render_messages() -> str:
    import consensus.types  # noqa: F401  (registers the messages)

    return schema.render_messages(schema.get_message_classes("consensus.types"))


def render_models(presets: Sequence[_Preset]) -> str:
    groups: dict[ModelSpec, list[_Preset]] = {}
    for p in presets:
        groups.setdefault(p.spec.model, []).append(p)
    lines: list[str] = []
    for model, members in groups.items():
        first = members[0]
        symbolic = _symbolic_dims() if first.name in text_presets() else {}
        names = ", ".join(f"`{p.name}`" for p in members)
        lines += [f"#### `{_model_text(model, first.name)}` ({names})", ""]
        net = build_model(model, seed=first.spec.seed, dtype=torch_dtype(first.spec.profile))
        params = list(net.named_parameters())
        total = sum(param.numel() for _, param in params)
        lines += ["| # | parameter | shape | dtype | elements |", "|---:|---|---|---|---:|"]
        for i, (name, param) in enumerate(params):
            shape = _shape_text(tuple(param.shape), symbolic.get(name, ()))
            count = "" if symbolic.get(name) else f"{param.numel():,}"
            lines.append(f"| {i} | `{name}` | {shape} | {dtype_name(param.dtype)} | {count} |")
        total_text = "a number of elements that depends on V" if symbolic else f"{total:,} elements"
        lines += ["", f"{len(params)} parameters, {total_text}.", ""]
        # One listing per kind of bundle, naming every preset that has it.
        bundles: dict[tuple[str, OptimizerSpec], list[str]] = {}
        for p in members:
            bundles.setdefault(("model state after an aggregation", model_state_optimizer(p.spec)), []).append(p.name)
            if p.spec.inner_steps > 1:
                bundles.setdefault(("checkpoint", p.spec.optimizer), []).append(p.name)
        for (what, opt_spec), users in bundles.items():
            lines += _bundle_lines(first.spec, what, opt_spec, users, symbolic)
    return "\n".join(lines).rstrip("\n") + "\n"


def _bundle_lines(
    spec: JobSpec, what: str, opt_spec: OptimizerSpec, users: Sequence[str], symbolic: Mapping[str, tuple[int, ...]]
) -> list[str]:
    """The records of one kind of state bundle, in canonical order."""
    tensors = _stepped_state(spec, opt_spec)
    who = ", ".join(f"<code>{u}</code>" for u in users)
    lines = [
        "<details>",
        f"<summary>{who}: {what} — optimizer <code>{_call_text(opt_spec.name, _opt_args(opt_spec))}</code>, "
        f"{len(tensors)} records</summary>",
        "",
        "| record | shape | dtype |",
        "|---|---|---|",
    ]
    for full in sorted(tensors):
        t = tensors[full]
        param = full.split("/", 1)[1].rsplit("/", 1)[0] if full.startswith("opt/") else full.split("/", 1)[1]
        dims = symbolic.get(param, ()) if t.dim() else ()
        lines.append(f"| `{full}` | {_shape_text(tuple(t.shape), dims)} | {dtype_name(t.dtype)} |")
    return [*lines, "", "</details>", ""]


def _stepped_state(spec: JobSpec, opt_spec: OptimizerSpec) -> dict[str, torch.Tensor]:
    """The state bundle tensors of the model after one step of ``opt_spec`` (zero gradients)."""
    model = build_model(spec.model, seed=spec.seed, dtype=torch_dtype(spec.profile))
    optimizer = build_optimizer(opt_spec, model.parameters(), lr=0.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return state_tensors(model, optimizer)


def _symbolic_dims() -> dict[str, tuple[int, ...]]:
    """For each parameter, the dimensions that change with the corpus's vocabulary size."""
    a = _chars_spec(_SAMPLE_TEXTS[0]).model
    b = _chars_spec(_SAMPLE_TEXTS[1]).model
    shapes_a = {n: tuple(p.shape) for n, p in build_model(a, seed=0, dtype=torch.float32).named_parameters()}
    shapes_b = {n: tuple(p.shape) for n, p in build_model(b, seed=0, dtype=torch.float32).named_parameters()}
    return {
        n: tuple(i for i, (x, y) in enumerate(zip(shapes_a[n], shapes_b[n], strict=True)) if x != y) for n in shapes_a
    }


def render_registry() -> str:
    lines = ["| model | argument | least | most |", "|---|---|---:|---:|"]
    for name in registry_names():
        for arg, (lo, hi) in get_model_bounds(name).items():
            lines.append(f"| `{name}` | `{arg}` | {schema.format_int(lo)} | {schema.format_int(hi)} |")
    return "\n".join([*lines, "", f"A model may have at most {MAX_PARAMETERS:,} parameter elements."]) + "\n"


def render_datasets() -> str:
    lines = ["| dataset | tensor | shape | dtype |", "|---|---|---|---|"]
    digests: list[str] = []
    for name, data in _datasets().items():
        for tensor, t in decode_bundle(data).items():
            lines.append(f"| `{name}` | `{tensor}` | {_shape_text(tuple(t.shape), ())} | {dtype_name(t.dtype)} |")
        digests.append(f"- `{name}`: {len(data):,} bytes, digest `{bundle_digest(data).hex()}`")
    return "\n".join([*lines, "", "Bundle digests (SHA-256 of the canonical bytes):", "", *digests]) + "\n"


def render_presets(presets: Sequence[_Preset]) -> str:
    header = "| field | " + " | ".join(f"`{p.name}`" for p in presets) + " |"
    lines = [header, "|---|" + "---|" * len(presets)]
    for f in dataclasses.fields(JobSpec):
        cells = [_spec_value(p, f.name) for p in presets]
        lines.append(f"| `{f.name}` | " + " | ".join(cells) + " |")
    lines.append("| *b = B / K* | " + " | ".join(str(p.spec.global_batch // p.spec.shards) for p in presets) + " |")
    return "\n".join(lines) + "\n"


def _spec_value(preset: _Preset, field: str) -> str:
    value = getattr(preset.spec, field)
    if field == "dataset":
        return "the corpus bundle" if preset.dataset == "corpus" else f"`{preset.dataset}`"
    if field == "model":
        return f"`{_model_text(value, preset.name)}`"
    if field == "profile":
        assert isinstance(value, ExecutionProfile)
        det = "deterministic" if value.deterministic else "not deterministic"
        threads = "1 thread" if value.threads == 1 else f"{value.threads} threads"
        return f"`{value.dtype}`, {threads}, {det}, `{value.device}`, the node's torch"
    if field == "preprocessing" and value is not None:
        assert isinstance(value, Preprocessing)
        return f"`{value.kind}` of {len(value.mean)} features, fitted on the train split"
    return _value_text(value)


def _value_text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, OptimizerSpec):
        return f"`{_call_text(value.name, _opt_args(value))}`"
    if isinstance(value, ScheduleSpec):
        return f"`{value.name}(warmup_steps={value.warmup_steps}, final_fraction={_arg_text(value.final_fraction)})`"
    if isinstance(value, VerificationPolicy):
        items = ", ".join(f"{f.name}={_arg_text(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return f"`{items}`"
    if isinstance(value, PipelineSpec):
        return f"`layer_bounds={list(value.layer_bounds)}, micro_batches={value.micro_batches}`"
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"no rendering for {type(value).__name__}")


def _opt_args(spec: OptimizerSpec) -> dict[str, str]:
    return {p.name: p.value for p in spec.params}


def _model_text(model: ModelSpec, preset: str) -> str:
    args: dict[str, Any] = dict(model_args(model))
    if preset in text_presets():
        args["vocab"] = "V"
    return _call_text(model.name, args)


def _call_text(name: str, args: Mapping[str, Any]) -> str:
    return f"{name}(" + ", ".join(f"{k}={_arg_text(v)}" for k, v in sorted(args.items())) + ")"


def _arg_text(value: Any) -> str:
    """Decimal text in quotes (it is text on the chain), integers bare, ``V`` as a symbol."""
    return f'"{value}"' if isinstance(value, str) and value != "V" else str(value)


def _shape_text(shape: tuple[int, ...], symbolic: tuple[int, ...]) -> str:
    dims = ["V" if i in symbolic else str(d) for i, d in enumerate(shape)]
    return "[" + ", ".join(dims) + "]"


# ---------------------------------------------------------------------------
# The document


def render_sections() -> dict[str, str]:
    """Every generated section's body, by name."""
    presets = _presets()
    renderers: dict[str, Callable[[], str]] = {
        "messages": render_messages,
        "registry": render_registry,
        "models": lambda: render_models(presets),
        "datasets": render_datasets,
        "presets": lambda: render_presets(presets),
    }
    return {name: render() for name, render in renderers.items()}


def splice(doc: str, sections: Mapping[str, str]) -> str:
    """``doc`` with each section's body replaced; ``ValueError`` when its markers are missing."""
    for name, body in sections.items():
        pattern = re.compile(
            re.escape(begin_marker(name)) + r"\n.*?" + re.escape(end_marker(name)), re.DOTALL
        )
        found = list(pattern.finditer(doc))
        if len(found) != 1:
            raise ValueError(f"{name}: expected one pair of markers, found {len(found)}")
        start, stop = found[0].span()
        doc = doc[:start] + f"{begin_marker(name)}\n\n{body}\n{end_marker(name)}" + doc[stop:]
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdml_node.devtools.protocol_doc", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the generated sections in place")
    mode.add_argument("--check", action="store_true", help="exit 1 when a generated section is out of date")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document (default: docs/protocol.md)")
    args = parser.parse_args(argv)
    doc = args.doc.read_text(encoding="utf-8")
    expected = splice(doc, render_sections())
    if args.write:
        if expected != doc:
            args.doc.write_text(expected, encoding="utf-8")
            print(f"rewrote the generated sections of {args.doc}")
        return 0
    if expected == doc:
        return 0
    diff = difflib.unified_diff(doc.splitlines(), expected.splitlines(), "document", "generated", lineterm="", n=1)
    print("\n".join(list(diff)[:80]))
    print(f"{args.doc} is out of date: run {COMMAND}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
