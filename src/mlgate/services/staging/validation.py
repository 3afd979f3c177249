"""The `model-validation` check, judged by the control plane: a candidate and production's champion
scored on held-out rows in the sandbox, the metric and the verdict computed here.

The held-out data asset is read here, as data; its label column stays here. Each model gets only
the features, in its own sandbox (`services.registration.scoring`), and answers with a predictions file; nothing
else it writes or prints is read. So a model cannot see the labels it is judged on, nor write its own
verdict, nor the champion's answers. The figures go into the check's record (summary, log excerpt)
and into an evidence file this process writes beside the environment's other records.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.queries import model_version
from mlgate.config import Settings
from mlgate.domain import metrics
from mlgate.domain.endpoints import SlotAllocation
from mlgate.domain.jobs import DataRef
from mlgate.errors import ValidationError
from mlgate.services.registration import baseline
from mlgate.services.registration.scoring import SANDBOXED_NOTE, Predictions, SandboxScorer
from mlgate.services.training import data_assets

if TYPE_CHECKING:
    from mlgate.adapters.mlflow.base import TrackingServers
    from mlgate.services.release.serving import Serving
    from mlgate.services.staging.checks import Pending

PASSED, FAILED, ERROR = "passed", "failed", "error"
EVIDENCE_FILE = "validation.json"
Scorer = Callable[..., Predictions]  # SandboxScorer's call: (folder, rows, *, what, probabilities, timeout_s)


@dataclass(frozen=True)
class Outcome:
    """What the check's record says: status, summary, the evidence lines and files."""

    status: str
    summary: str
    log: list[str] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Model:
    folder: Path
    name: str  # NAME:VERSION in ENV


class _Refused(Exception):
    """The check ends early with this status and summary."""

    def __init__(self, status: str, summary: str) -> None:
        super().__init__(summary)
        self.status, self.summary = status, summary


def champion(
    db: Database, settings: Settings, serving: Serving, tracking: TrackingServers, *, name: str, source: str
) -> _Model | None:
    """The production champion's verified copy, if the registry of the environment after `source` has one."""
    from mlgate.adapters.mlflow.aliases import CHAMPION_ALIAS, Aliases

    gate = settings.gate_from(source)
    if gate is None:
        return None
    number = Aliases(tracking.upstream(gate.target), env=gate.target).get(name, CHAMPION_ALIAS)
    if number is None:
        return None
    with db.read() as session:
        row = model_version(session, environment=gate.target, name=name, version=number)
        if row is None:
            return None
        slot = SlotAllocation("check", row.id, name, number, row.digest, 0)
    folder = serving.place(settings.environment(gate.target), slot)
    return _Model(folder=folder, name=f"{name}:{number} in {gate.target}")


def _inputs(folder: Path) -> list[str]:
    """The model's named inputs, from its MLmodel file (YAML, read as data); [] for a tensor signature."""
    from mlgate.adapters.mlflow.registry import read_model_folder

    signature = read_model_folder(folder).signature or {}
    return [str(c["name"]) for c in signature.get("inputs") or [] if isinstance(c, dict) and c.get("name")]


def _label(frame: Any, *, named: str | None, inputs: list[str]) -> str:
    if named is None:
        rest = [c for c in frame.columns if c not in inputs]
        if len(rest) != 1 or not inputs:
            raise _Refused(
                FAILED, "cannot tell the label column of the validation data: set checks.model-validation.label"
            )
        named = str(rest[0])
    if named not in frame.columns:
        raise _Refused(FAILED, f"the validation data has no label column '{named}'")
    return named


def _score(scorer: Scorer, model: _Model, frame: Any, *, label: str, metric: str, timeout_s: float) -> float:
    """The model's `metric` on the frame: its features scored in the sandbox, the labels kept here."""
    features = _inputs(model.folder) or [c for c in frame.columns if c != label]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise _Refused(ERROR, f"the validation data lacks {model.name}'s input column(s) {', '.join(missing)}")
    try:
        answers = scorer(
            model.folder, frame[features], what=model.name, probabilities=metric == "roc_auc", timeout_s=timeout_s
        )
        return metrics.metric_value(metric, frame[label].to_numpy(), answers.scores(what=model.name))
    except ValidationError as exc:
        raise _Refused(ERROR, f"could not score {model.name}: {exc.message}") from None
    except metrics.MetricError as exc:
        raise _Refused(ERROR, f"{metric} of {model.name} cannot be computed: {exc}") from None


def _evidence(settings: Settings, pending: Pending, document: dict[str, Any]) -> dict[str, Any]:
    """The figures as a file of the check's record, written by this process."""
    folder = settings.env_dir(pending.environment) / "checks" / str(pending.record_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / EVIDENCE_FILE
    path.write_text(json.dumps(document, indent=2, sort_keys=True))
    return {"name": EVIDENCE_FILE, "path": str(path), "size": path.stat().st_size}


@dataclass(frozen=True)
class _Scored:
    label: str
    rows: int
    value: float
    champion: tuple[str, float] | None


def _scored(
    db: Database,
    settings: Settings,
    serving: Serving,
    tracking: TrackingServers,
    *,
    candidate: _Model,
    model_name: str,
    source: str,
    frame: Any,
    named: str | None,
    score: Scorer,
) -> _Scored:
    """The candidate's and the champion's metric on the held-out rows that have a label."""
    config = settings.checks.model_validation
    frame.columns = [str(c) for c in frame.columns]
    label = _label(frame, named=named, inputs=_inputs(candidate.folder))
    frame = frame.dropna(subset=[label]).reset_index(drop=True)
    timeout_s = config.timeout_minutes * 60
    value = _score(score, candidate, frame, label=label, metric=config.metric, timeout_s=timeout_s)
    best = champion(db, settings, serving, tracking, name=model_name, source=source)
    theirs = None
    if best is not None:
        theirs = (best.name, _score(score, best, frame, label=label, metric=config.metric, timeout_s=timeout_s))
    return _Scored(label=label, rows=len(frame), value=value, champion=theirs)


def run(
    db: Database,
    settings: Settings,
    serving: Serving,
    tracking: TrackingServers,
    pending: Pending,
    *,
    scorer: Scorer | None = None,
) -> Outcome:
    """Score the candidate (and the champion) on the held-out data; the check's outcome."""
    config = settings.checks.model_validation
    if config.data is None:
        return Outcome(
            FAILED,
            "no held-out data configured: set checks.model-validation.data to a data asset registered in "
            f"{pending.environment} (NAME or NAME@VERSION)",
        )
    env = settings.environment(pending.environment)
    score = scorer or SandboxScorer(settings)
    asset = data_assets.resolve(db, env.name, DataRef.parse(config.data))
    slot = SlotAllocation(
        "check", pending.model_version_id, pending.model_name, pending.model_version, pending.digest, 0
    )
    candidate = _Model(serving.place(env, slot), f"{pending.model_name}:{pending.model_version} in {env.name}")
    try:
        scored = _scored(
            db,
            settings,
            serving,
            tracking,
            candidate=candidate,
            model_name=pending.model_name,
            source=env.name,
            frame=baseline.read_frame(env, asset),
            named=config.label or pending.label,
            score=score,
        )
    except _Refused as refused:
        return Outcome(refused.status, refused.summary, [refused.summary, SANDBOXED_NOTE])
    judged = metrics.verdict(
        config.metric,
        scored.value,
        rows=scored.rows,
        floor=config.min,
        champion=scored.champion,
        max_regression=config.max_regression,
    )
    document = judged.figures | {
        "candidate": candidate.name,
        "data": asset.ref,
        "label": scored.label,
        "summary": judged.summary,
        "scored_in": "sandbox" if score_isolated(score) else "no sandbox (execution.sandbox: none)",
        "note": SANDBOXED_NOTE,
    }
    lines = [*judged.notes, f"held-out data {asset.ref}, label '{scored.label}'", SANDBOXED_NOTE]
    lines.append(f"verdict: {judged.status}")
    return Outcome(judged.status, judged.summary, lines, [_evidence(settings, pending, document)])


def score_isolated(scorer: Scorer) -> bool:
    """Whether the scorer ran the models in an isolating sandbox (False for `execution.sandbox: none`)."""
    return bool(getattr(getattr(scorer, "sandbox", None), "isolated", True))
