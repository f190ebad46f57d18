"""How ``tdml-node job show`` prints a job: a short human table, or the whole record as JSON.

Pure functions of the RPC's ``tdml_getJob`` view. Losses travel as float32
bit patterns (decisions.md 3); here they become numbers. This module must
never call a node.
"""

from __future__ import annotations

from typing import Any

from tdml_node.jsonview import f32


def job_record(view: dict[str, Any]) -> dict[str, Any]:
    """The whole record with each outcome's losses as numbers instead of bit patterns."""
    record = dict(view)
    for key in ("lastOutcome", "lastEval"):
        outcome = record.get(key)
        if outcome is None:
            continue
        outcome = dict(outcome)
        outcome.pop("trainLossFloat", None)
        outcome.pop("evalLossFloat", None)
        outcome["train_loss"] = f32(outcome["train_loss"])
        outcome["eval_loss"] = f32(outcome["eval_loss"]) if outcome.get("eval_total") else None
        record[key] = outcome
    return record


def _loss(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4f}"


def job_table(view: dict[str, Any]) -> list[str]:
    """A few aligned lines: id, name, status, step/total, last losses, accuracy, trainers, model root."""
    rows = [
        ("job", view["id"]),
        ("name", view["name"]),
        ("status", view["status"]),
        ("step", f"{view['step']}/{view['steps']}"),
    ]
    last = view.get("lastOutcome")
    rows.append(("train loss", f"{_loss(f32(last['train_loss']))} (step {last['step']})" if last else "- (no step yet)"))
    last_eval = view.get("lastEval")
    if last_eval and last_eval.get("eval_total"):
        accuracy = last_eval["eval_correct"] / last_eval["eval_total"]
        rows.append(("test", f"loss {_loss(f32(last_eval['eval_loss']))}, accuracy {accuracy:.3f} (step {last_eval['step']})"))
    # The step's assigned trainers, and those whose units were accepted (all a finished job keeps).
    trainers = sorted({a for a in [*(view.get("assignment") or []), *(view.get("accepted") or [])] if a})
    rows.append(("trainers", ", ".join(trainers) if trainers else "- (none at work)"))
    rows.append(("model root", view["modelRoot"]))
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {value}" for name, value in rows]
