"""Production rollouts: a version that passed the gate into an environment rolls out to its endpoint.

A periodic worker (idempotent, crash-safe): every version that arrived through the gate into an
environment whose config names an endpoint for that model gets a rollout, carried out step by step
under the endpoint's policy (blue-green or canary), watched against its SLOs and rolled back
automatically on a breach.

- Only the newest promoted version without a rollout gets one: versions superseded before their turn
  are not rolled out one after the other.
- One rollout at a time (so one per endpoint): the worker's thread carries out the oldest unfinished
  one to its end before the next.
- The first rollout of an endpoint deploys to `blue` with all the traffic. Later ones deploy to the
  idle slot (blue and green in turn) at 0%, then move the traffic step by step (blue-green: one step of
  100%), each step baked for `bake_time_s` while the new slot's error rate and p95 latency, read from
  the serving host's per-slot counters, are held against the SLO (see `domain.rollouts` for the rules
  on too little traffic). While it runs, the host answers from the previous slot whenever the new one's
  model fails (the spec's `stable`), so callers never see a canary's failures, and compares the two
  slots' answers on a share of their requests (`quality.shadow_share`): at the end of each step's bake
  the new slot's disagreement rate and prediction drift against the previous slot are held against
  the quality limits (see `domain.rollout_quality`).
- A breach (of an SLO or a quality limit) moves all the traffic back to the previous slot at once:
  state `rolled-back`, the reason naming the figure and the limit, `rollout.failed` to the
  environment's operators with the step's figures. An error of the machinery itself (host unreachable,
  a concurrent manual change) also puts the traffic back, as `failed`.
- Success moves the registry alias `champion` of the environment to the new version and keeps the
  previous slot at 0% (for `mlgate endpoints rollback`) until the next rollout replaces it.
- Every stage is recorded before and after it runs; a server that stops mid-way resumes the rollout
  where it was (redeploying, or baking the unfinished step again from its start).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlgate.adapters.mlflow.base import TrackingServers
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import ModelVersion, PromotionRequest, Rollout, utcnow
from mlgate.config import EndpointConfig, Settings
from mlgate.domain import rollout_quality as checks
from mlgate.domain import rollouts as rules
from mlgate.domain.gates import RequestState
from mlgate.domain.permissions import SYSTEM, Role
from mlgate.domain.rollouts import RolloutState
from mlgate.errors import MlgateError, NotFoundError
from mlgate.services import audit
from mlgate.services.notifications import outbox
from mlgate.services.release import endpoints
from mlgate.services.release.serving import Serving
from mlgate.services.worker import Worker

log = logging.getLogger(__name__)

TICK_S = 1.0
POLL_S = 0.5  # how often a bake reads the host's counters (a breach is acted on within this)


class _Stopping(Exception):
    """The server is stopping: leave the rollout as recorded, to resume at the next start."""


@dataclass(frozen=True)
class RolloutView:
    id: int
    environment: str
    endpoint: str
    model: str
    version: int
    model_version_id: int
    request_id: int | None
    strategy: str
    state: str
    steps: list[dict[str, Any]]
    from_slot: str | None
    to_slot: str | None
    previous_version: int | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    def brief(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "environment": self.environment,
            "endpoint": self.endpoint,
            "model": self.model,
            "version": self.version,
            "request_id": self.request_id,
            "strategy": self.strategy,
            "state": self.state,
            "from_slot": self.from_slot,
            "to_slot": self.to_slot,
            "previous_version": self.previous_version,
            "reason": self.reason,
            "last_step": self.steps[-1] if self.steps else None,  # the figures that ended it
        }


def _view(row: Rollout) -> RolloutView:
    return RolloutView(
        id=row.id,
        environment=row.environment,
        endpoint=row.endpoint,
        model=row.model,
        version=row.version,
        model_version_id=row.model_version_id,
        request_id=row.request_id,
        strategy=row.strategy,
        state=row.state,
        steps=list(row.steps or []),
        from_slot=row.from_slot,
        to_slot=row.to_slot,
        previous_version=row.previous_version,
        reason=row.reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


# --- reading ---------------------------------------------------------------------------------------


def list_rollouts(db: Database, env: str, *, endpoint: str | None = None, limit: int = 100) -> list[RolloutView]:
    with db.read() as session:
        query = select(Rollout).where(Rollout.environment == env)
        if endpoint is not None:
            query = query.where(Rollout.endpoint == endpoint)
        rows = session.execute(query.order_by(Rollout.id.desc()).limit(limit)).scalars()
        return [_view(row) for row in rows]


def get(db: Database, env: str, rollout_id: int) -> RolloutView:
    with db.read() as session:
        row = session.get(Rollout, rollout_id)
        if row is None or row.environment != env:
            raise NotFoundError(
                f"no rollout {rollout_id} in '{env}'", details={"rollout": rollout_id, "environment": env}
            )
        return _view(row)


# --- the worker --------------------------------------------------------------------------------------


def _due_version(session: Session, *, env: str, endpoint: str, model: str) -> tuple[ModelVersion, int] | None:
    """The newest version of `model` promoted into `env`, and the request that promoted it, unless the
    endpoint has had a rollout of it or of a newer version."""
    newest = session.execute(
        select(ModelVersion, PromotionRequest.id)
        .join(PromotionRequest, PromotionRequest.target_version_id == ModelVersion.id)
        .where(
            PromotionRequest.state == RequestState.PROMOTED.value,
            ModelVersion.environment == env,
            ModelVersion.name == model,
        )
        .order_by(ModelVersion.version.desc())
        .limit(1)
    ).first()
    if newest is None:
        return None
    version, request_id = newest
    done = session.execute(
        select(Rollout.id).where(
            Rollout.environment == env,
            Rollout.endpoint == endpoint,
            Rollout.version >= version.version,
            Rollout.model == version.name,
        )
    ).first()
    return None if done is not None else (version, request_id)


_Judge = tuple[rules.Slo, checks.Quality | None]  # the SLOs, and the quality limits unless shadowing is off


def _judge(policy: EndpointConfig) -> _Judge:
    slo = rules.Slo(policy.slo.max_error_rate, policy.slo.p95_ms, policy.slo.min_requests)
    q = policy.quality
    quality = checks.Quality(q.max_disagreement, q.max_prediction_drift, q.min_compared) if q.shadow_share > 0 else None
    return slo, quality


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds")


class RolloutWorker(Worker):
    """Starts the rollouts of versions that passed the gate into an environment and carries them out; a
    rollout in progress at stop resumes when the server starts again."""

    name = "rollouts"
    interval_s = TICK_S

    def __init__(
        self, settings: Settings, db: Database, serving: Serving, tracking: TrackingServers, *, base_url: str
    ) -> None:
        self.settings = settings
        self.db = db
        self.serving = serving
        self.tracking = tracking
        self.base_url = base_url
        super().__init__()

    def enabled(self) -> bool:
        return any(e.model for declared in self.settings.endpoints.values() for e in declared)

    def tick(self) -> None:
        """One round: start due rollouts, advance running ones."""
        self.discover()
        while not self._stop.is_set():
            with self.db.read() as session:
                rollout_id = session.execute(
                    select(Rollout.id).where(Rollout.state.not_in(rules.FINISHED)).order_by(Rollout.id).limit(1)
                ).scalar_one_or_none()
            if rollout_id is None:
                return
            try:
                self.carry_out(rollout_id)
            except _Stopping:
                return

    # --- finding versions to roll out ----------------------------------------------------------------

    def _policy(self, env: str, endpoint: str) -> EndpointConfig | None:
        return next((e for e in self.settings.endpoints.get(env, ()) if e.name == endpoint), None)

    def discover(self) -> list[int]:
        """A rollout for the newest version promoted into each endpoint's environment and model, unless it
        (or a newer one) has one already. Returns the ids of the rollouts made."""
        made = []
        for env, declared in self.settings.endpoints.items():
            for policy in declared:
                if policy.model is None:
                    continue
                rollout_id = self._discover_one(env, policy, policy.model)
                if rollout_id is not None:
                    made.append(rollout_id)
        return made

    def _discover_one(self, env: str, policy: EndpointConfig, model: str) -> int | None:
        """The rollout of `model`'s newest version promoted into `env` to the policy's endpoint, if due."""
        with self.db.write() as session:
            due = _due_version(session, env=env, endpoint=policy.name, model=model)
            if due is None:
                return None
            version, request_id = due
            row = Rollout(
                environment=env,
                endpoint=policy.name,
                model=version.name,
                version=version.version,
                model_version_id=version.id,
                request_id=request_id,
                strategy=policy.strategy,
                state=RolloutState.PENDING.value,
                steps=[],
                created_at=utcnow(),
                updated_at=utcnow(),
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError:  # another worker made it meanwhile
                session.rollback()
                return None
            audit.record(
                session,
                actor=SYSTEM,
                action="rollout.create",
                environment=env,
                subject=f"endpoint:{policy.name}",
                payload={
                    "rollout": row.id,
                    "model": version.name,
                    "version": version.version,
                    **endpoints.slots_payload(session, env, policy.name),
                },
            )
            log.info("rollout %s: %s:%s to %s/%s", row.id, version.name, version.version, env, policy.name)
            return row.id

    # --- carrying one out ----------------------------------------------------------------------------

    def _update(self, rollout_id: int, **fields: Any) -> RolloutView:
        with self.db.write() as session:
            row = session.get(Rollout, rollout_id)
            assert row is not None
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            return _view(row)

    def carry_out(self, rollout_id: int) -> RolloutView:
        """Take the rollout from where its record says it is to its end (or until the server stops)."""
        with self.db.read() as session:
            row = session.get(Rollout, rollout_id)
            assert row is not None
            rollout = _view(row)
        policy = self._policy(rollout.environment, rollout.endpoint)
        if policy is None:
            return self._finish(
                rollout, RolloutState.FAILED, "the config no longer declares this endpoint", restore=True
            )
        try:
            if rollout.state == RolloutState.PENDING.value:
                rollout = self._begin(rollout)
            if rollout.state == RolloutState.DEPLOYING.value:
                rollout = self._deploy(rollout)
            if rollout.from_slot is None:  # the endpoint's first deployment: nothing to compare with
                return self._succeed(rollout)
            judge = _judge(policy)
            for index, traffic in enumerate(rules.traffic_steps(rollout.strategy, policy.steps)):
                if index < len(rollout.steps) and rollout.steps[index].get("outcome") == "passed":
                    continue
                rollout, reason = self._step(rollout, index, traffic, policy.bake_time_s, judge)
                if reason is not None:
                    return self._finish(rollout, RolloutState.ROLLED_BACK, reason, restore=True)
            return self._succeed(rollout)
        except _Stopping:
            raise
        except MlgateError as exc:
            log.error("rollout %s failed: %s", rollout.id, exc.message)
            return self._finish(rollout, RolloutState.FAILED, exc.message, restore=True)
        except Exception as exc:
            log.exception("rollout %s failed", rollout.id)
            return self._finish(rollout, RolloutState.FAILED, f"internal error: {exc!r}", restore=True)

    def _begin(self, rollout: RolloutView) -> RolloutView:
        view = endpoints.get(self.db, rollout.environment, rollout.endpoint)
        stable = rules.stable_slot(view.allocation.weights)
        current = view.allocation.get(stable) if stable is not None else None
        return self._update(
            rollout.id,
            state=RolloutState.DEPLOYING.value,
            from_slot=stable,
            to_slot=rules.target_slot(stable),
            previous_version=current.version if current is not None else None,
        )

    def _deploy(self, rollout: RolloutView) -> RolloutView:
        """The version into its slot (all the traffic for a first deployment, none otherwise); returns once
        the host serves it, loaded and warmed up."""
        assert rollout.to_slot is not None
        started = utcnow()
        self.serving.deploy(
            rollout.environment,
            rollout.endpoint,
            model=rollout.model,
            version=rollout.version,
            slot=rollout.to_slot,
            traffic=None if rollout.from_slot is None else 0,
            mirror=None,
            actor=SYSTEM,
        )
        steps = rollout.steps
        if rollout.from_slot is None:
            steps = [{"traffic": 100, "started_at": _iso(started), "ended_at": _iso(utcnow()), "outcome": "passed"}]
        return self._update(rollout.id, state=RolloutState.SHIFTING.value, steps=steps)

    def _weights(self, rollout: RolloutView, traffic: int) -> dict[str, int]:
        assert rollout.from_slot is not None and rollout.to_slot is not None
        return {rollout.from_slot: 100 - traffic, rollout.to_slot: traffic}

    def _step(
        self, rollout: RolloutView, index: int, traffic: int, bake_s: float, judge: _Judge
    ) -> tuple[RolloutView, str | None]:
        """Move `traffic`% to the new slot and bake; returns the SLO or quality breach (or shortfall), if any."""
        env, name = rollout.environment, rollout.endpoint
        steps = [*rollout.steps[:index], {"traffic": traffic, "started_at": _iso(utcnow())}]
        rollout = self._update(rollout.id, state=RolloutState.SHIFTING.value, steps=steps)
        weights = self._weights(rollout, traffic)
        if endpoints.get(self.db, env, name).allocation.weights != weights:
            self.serving.shift(env, name, weights, mirror=False, actor=SYSTEM)
        rollout = self._update(rollout.id, state=RolloutState.BAKING.value)
        if bake_s > 0:
            figures, reason, outcome = self._bake(rollout, traffic, bake_s, judge)
        else:  # bake_time_s 0: not watched
            figures, reason, outcome = rules.Window(0, 0, None).as_json(), None, "passed"
        step = {**steps[-1], "ended_at": _iso(utcnow()), **figures, "outcome": outcome}
        rollout = self._update(rollout.id, steps=[*steps[:-1], step])
        log.info("rollout %s step %s (%s%%): %s %s", rollout.id, index + 1, traffic, outcome, figures)
        return rollout, reason

    def _bake(
        self, rollout: RolloutView, traffic: int, bake_s: float, judge: _Judge
    ) -> tuple[dict[str, Any], str | None, str]:
        """Watch the new slot for `bake_s`, longer (up to `MAX_BAKE_FACTOR` times) while it has too few
        requests or, with the quality check on, too few rows compared: its figures, the breach or
        shortfall, and the step's outcome. The SLOs are judged at every poll, quality at the bake's end."""
        env, name, slot, stable = rollout.environment, rollout.endpoint, rollout.to_slot, rollout.from_slot
        assert slot is not None and stable is not None
        slo, quality = judge
        before = self.serving.backend.stats(env)
        started = time.monotonic()
        while True:
            if self._stop.wait(POLL_S):
                raise _Stopping
            elapsed = time.monotonic() - started
            after = self.serving.backend.stats(env)
            observed = rules.window(before, after, endpoint=name, slot=slot)
            compared = checks.quality_window(before, after, endpoint=name, slot=slot)
            figures = {**observed.as_json(), **compared.as_json()}
            reason = rules.breach(observed, slo, traffic=traffic, slot=slot)
            if reason is not None:
                return figures, reason, "breach"
            longest = elapsed >= bake_s * rules.MAX_BAKE_FACTOR
            baked = elapsed >= bake_s and observed.requests >= slo.min_requests
            if baked and (quality is None or compared.compared >= quality.min_compared or longest):
                if quality is not None:
                    reason = checks.quality_breach(compared, quality, traffic=traffic, slot=slot, stable=stable)
                return figures, reason, "passed" if reason is None else "breach"
            if longest:
                return (
                    figures,
                    rules.too_few(observed, slo, traffic=traffic, slot=slot, seconds=elapsed),
                    "too-few-requests",
                )

    def _succeed(self, rollout: RolloutView) -> RolloutView:
        from mlgate.adapters.mlflow.aliases import CHAMPION_ALIAS, Aliases

        Aliases(self.tracking.upstream(rollout.environment), env=rollout.environment).move(
            rollout.model, CHAMPION_ALIAS, rollout.version
        )
        return self._finish(rollout, RolloutState.SUCCEEDED, None, restore=False)

    def _finish(self, rollout: RolloutView, state: RolloutState, reason: str | None, *, restore: bool) -> RolloutView:
        """Record the end (traffic back to the previous slot first when `restore`), tell the operators, and
        push the spec again without the stable slot."""
        env, name = rollout.environment, rollout.endpoint
        if restore and rollout.from_slot is not None and rollout.to_slot is not None:
            try:
                if endpoints.get(self.db, env, name).allocation.weights.get(rollout.to_slot, 0) > 0:
                    self.serving.shift(env, name, self._weights(rollout, 0), mirror=False, actor=SYSTEM)
            except MlgateError as exc:
                log.error("rollout %s: could not move the traffic back to '%s': %s", rollout.id, rollout.from_slot, exc)
                reason = f"{reason}; moving the traffic back to '{rollout.from_slot}' failed too: {exc.message}"
        event = "rollout.succeeded" if state is RolloutState.SUCCEEDED else "rollout.failed"
        with self.db.write() as session:
            row = session.get(Rollout, rollout.id)
            assert row is not None
            row.state, row.reason, row.finished_at, row.updated_at = state.value, reason, utcnow(), utcnow()
            view = _view(row)
            audit.record(
                session,
                actor=SYSTEM,
                action=event,
                environment=env,
                subject=f"endpoint:{name}",
                payload={
                    "rollout": view.id,
                    "state": view.state,
                    "reason": reason,
                    "version": view.version,
                    "last_step": view.steps[-1] if view.steps else None,
                    **endpoints.slots_payload(session, env, name),
                },
            )
            operators = outbox.approvers(session, role=Role.OPERATOR.value, environment=env, exclude=set())
            if state is RolloutState.SUCCEEDED:
                text = f"Rolled out {view.model}:{view.version} to {env}/{name} (rollout {view.id})"
            else:
                text = f"Rollout {view.id} of {view.model}:{view.version} to {env}/{name} {view.state}: {reason}"
            outbox.emit_rollout(
                session,
                self.settings,
                event=event,
                rollout=view.brief(),
                recipients=operators,
                base_url=self.base_url,
                text=text,
            )
        try:
            self.serving.sync(env)  # the rollout is over: no stable slot in the spec any more
        except MlgateError as exc:
            log.error("rollout %s: pushing the final spec failed (the supervisor retries): %s", view.id, exc.message)
        log.info("rollout %s %s%s", view.id, view.state, f": {reason}" if reason else "")
        return view
