"""Model cards: the Markdown page a gate's approver reads, filled from a model version's record.

Everything in it comes from the record (lineage, signature, profile); what the record lacks is said,
not invented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NO_SNAPSHOT = "logged outside mlgate jobs: no code snapshot"


@dataclass(frozen=True)
class CardFacts:
    name: str
    version: int
    environment: str
    digest: str
    model_uri: str
    registered_by: str
    registered_at: str
    signature: dict[str, Any]
    lineage: dict[str, Any]
    profile: dict[str, Any] | None
    description: str | None = None


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _spec_rows(specs: list[dict[str, Any]] | None) -> list[list[Any]]:
    rows = []
    for spec in specs or []:
        if spec.get("type") == "tensor":
            tensor = spec.get("tensor-spec") or {}
            rows.append([spec.get("name", "(tensor)"), f"tensor {tensor.get('dtype')} {tensor.get('shape')}", ""])
        else:
            rows.append([spec.get("name", "(unnamed)"), spec.get("type"), "required" if spec.get("required") else ""])
    return rows


def _intended_use(facts: CardFacts) -> list[str]:
    inputs = facts.signature.get("inputs") or []
    label = facts.lineage.get("label")
    target = f"`{label}`" if label else "its output"
    lines = [
        f"`{facts.name}` predicts {target} from the {len(inputs)} input column(s) listed under Signature.",
        f"It was registered in `{facts.environment}`, where models are trained: it has passed no gate yet, "
        "and is not for decisions about people until it is promoted to production.",
    ]
    if facts.description:
        lines += ["", f"From the run's description: {facts.description}"]
    return lines


def _data(facts: CardFacts) -> list[str]:
    lineage, profile = facts.lineage, facts.profile
    training = lineage.get("training_data")
    lines = []
    if training:
        lines.append(
            f"Trained on the data asset `{training['ref']}`: {training['rows']} rows, "
            f"sha256 `{training['sha256'][:12]}`."
        )
    else:
        lines.append("No training data is recorded for this model: no baseline profile was made.")
    others = [ref for ref in lineage.get("data") or [] if not training or ref != training["ref"]]
    if others:
        lines.append(f"Other data the run used: {', '.join(f'`{r}`' for r in others)}.")
    if profile:
        label = profile.get("label")
        if label and label.get("type") == "numeric" and label.get("mean") is not None:
            lines.append(f"Label `{label['name']}`: mean {_number(label['mean'])} over {label['count']} rows.")
        for column in profile.get("predictions") or []:
            if column.get("type") == "numeric" and column.get("mean") is not None:
                lines.append(
                    f"Model output `{column['name']}` on the {column['count']}-row sample: "
                    f"mean {_number(column['mean'])}."
                )
        rows = [
            [
                f["name"],
                f["type"],
                _number(f.get("min")),
                _number(f.get("max")),
                _number(f.get("std")),
                f"{f['null_rate']:.1%}",
            ]
            for f in profile.get("features", [])
        ]
        lines += ["", *_table(["feature", "type", "min", "max", "std", "missing"], rows)]
    return lines


def _lineage(facts: CardFacts) -> list[str]:
    lineage = facts.lineage
    rows: list[list[Any]] = [
        ["run", lineage.get("run_id") or "-"],
        ["experiment", lineage.get("experiment_id") or "-"],
        ["logged model", facts.model_uri],
    ]
    if lineage.get("job_id") is not None:
        rows.append(["mlgate job", lineage["job_id"]])
    if lineage.get("snapshot_sha256"):
        rows.append(["code snapshot", f"sha256 {lineage['snapshot_sha256']}"])
        commit = lineage.get("git_commit")
        dirty = " (with uncommitted changes)" if lineage.get("git_dirty") else ""
        rows.append(["git commit", f"{commit}{dirty}" if commit else "none: the project is not a git repository"])
    else:
        rows.append(["code", lineage.get("code_note") or NO_SNAPSHOT])
    rows.append(["data", ", ".join(lineage.get("data") or []) or "none recorded"])
    return _table(["", ""], rows)


def _limitations(facts: CardFacts) -> list[str]:
    lineage, profile = facts.lineage, facts.profile
    items = [
        "Metrics are the ones the training run logged, on its own evaluation split; they say nothing about "
        "data from another population or time.",
    ]
    if profile:
        items.append(
            f"Inputs outside the ranges seen in the {profile['rows']} training rows (see Data) are extrapolation; "
            "drift from this baseline is what monitoring watches."
        )
        items += [f"Baseline profile: {note}" for note in profile.get("notes") or []]
    else:
        items.append("No baseline profile: drift monitoring has nothing to compare traffic against.")
    if not lineage.get("snapshot_sha256"):
        items.append(f"The code that trained it is not known to mlgate ({NO_SNAPSHOT}).")
    elif lineage.get("git_dirty"):
        items.append("The code was trained with uncommitted changes: the git commit alone does not reproduce it.")
    items += list(lineage.get("notes") or [])
    return [f"- {item}" for item in items]


def render(facts: CardFacts) -> str:
    """The model card, as Markdown."""
    lineage = facts.lineage
    metrics = sorted((lineage.get("metrics") or {}).items())
    params = sorted((lineage.get("params") or {}).items())
    signature_rows = _spec_rows(facts.signature.get("inputs"))
    output_rows = _spec_rows(facts.signature.get("outputs"))
    lines = [
        f"# Model card: {facts.name}, version {facts.version}",
        "",
        f"- environment: `{facts.environment}`",
        f"- content digest: `sha256:{facts.digest}`",
        f"- registered by {facts.registered_by} at {facts.registered_at}",
        "",
        "## Intended use",
        "",
        *_intended_use(facts),
        "",
        "## Data",
        "",
        *_data(facts),
        "",
        "## Metrics",
        "",
        *(_table(["metric", "value"], [[k, _number(v)] for k, v in metrics]) if metrics else ["None logged."]),
        "",
        "## Parameters",
        "",
        *(_table(["parameter", "value"], [[k, v] for k, v in params]) if params else ["None logged."]),
        "",
        "## Lineage",
        "",
        *_lineage(facts),
        "",
        "## Signature",
        "",
        "Inputs:",
        "",
        *_table(["column", "type", ""], signature_rows),
        "",
        "Outputs:",
        "",
        *(_table(["column", "type", ""], output_rows) if output_rows else ["Not declared."]),
        "",
        "## Limitations",
        "",
        *_limitations(facts),
        "",
    ]
    return "\n".join(lines)
