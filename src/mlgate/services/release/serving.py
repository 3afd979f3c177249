"""The control plane's side of serving: hosts kept running, verified model copies, deployments pushed.

One serving host per environment that has an endpoint runs through the serving backend (an environment
without one has nothing to serve: its host starts with its first endpoint). The supervisor adopts running
hosts at server start, restarts dead ones and pushes each the spec built from the control database. Every
change of an endpoint (deploy, traffic, rollback) is planned from the live revision, pushed to the host
(which loads and warms up new models before it swaps) and only then recorded: a change the host refuses
leaves nothing behind. While a rollout is under way the spec names the endpoint's stable slot (the
one serving before), which answers for the new slot when its model fails, and, unless the endpoint's
`quality.shadow_share` is 0, the new slot as `shadow`: the host compares the two slots' answers on that
share of their requests, counting predictions in the bins of the stable version's baseline predictions
where its profile has numeric ones. Before a model is pushed,
its files are placed under `envs/<env>/serving/<digest>/` from the environment's own registry and their
digest checked against the registered one; the host checks again before loading. The spec carries the
SHA-256 of the metrics token the server's environment holds (`serving.metrics_token_env`), never the
token: a host answers `/metrics` to whoever presents it (Prometheus, as a bearer token).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mlgate.adapters.serving.base import HostStatus, ServingBackend
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import ModelVersion, PromotionRequest, Rollout
from mlgate.adapters.sql.queries import model_version
from mlgate.config import EndpointConfig, Environment, QualityConfig, Settings
from mlgate.domain import endpoints as allocations
from mlgate.domain import rollouts
from mlgate.domain.digest import tree_digest, tree_stat
from mlgate.domain.endpoints import Allocation, Mirror, SlotAllocation
from mlgate.domain.gates import RequestState
from mlgate.domain.tokens import token_hash
from mlgate.errors import ConfigError, MlgateError, NotFoundError, PermissionDeniedError, ValidationError
from mlgate.services.release import endpoints
from mlgate.services.release.endpoints import EndpointView, Which
from mlgate.services.worker import Worker

log = logging.getLogger(__name__)

SUPERVISE_INTERVAL_S = 2.0
MIN_METRICS_TOKEN_CHARS = 16
MAX_SHADOW_EDGES = 256  # the serving host's limit (mlgate.serving.spec): a longer profile's bins are not pushed


def metrics_token_hash(settings: Settings) -> str | None:
    """The SHA-256 of the metrics token in the server's environment; None when the policy names no variable
    or the variable is unset (then the hosts' `/metrics` answers no one). A short token is refused."""
    name = settings.serving.metrics_token_env
    token = os.environ.get(name) if name else None
    if not token:
        log.info("no metrics token (serving.metrics_token_env: %s is not set): /metrics answers no one", name)
        return None
    if len(token) < MIN_METRICS_TOKEN_CHARS:
        raise ConfigError(
            f"serving.metrics_token_env: {name} holds fewer than {MIN_METRICS_TOKEN_CHARS} characters; "
            "give it a long random token (`openssl rand -hex 32`)"
        )
    return token_hash(token)


class Serving(Worker):
    """Hosts, copies and pushes for every environment; endpoint changes go through here. As a worker it
    supervises the hosts: restarts dead ones and pushes what a host missed."""

    name = "serving-supervisor"
    interval_s = SUPERVISE_INTERVAL_S

    def __init__(
        self, settings: Settings, db: Database, backend: ServingBackend, upstream: Callable[[str], str]
    ) -> None:
        super().__init__()
        self.settings = settings
        self.db = db
        self.backend = backend
        self._upstream = upstream
        # The server's own key for every endpoint (scoring through the API, endpoint checks); a new one
        # per server process, pushed with the endpoints' key hashes.
        self.internal_key = endpoints.new_key()
        self._metrics_token_hash = metrics_token_hash(settings)
        self._locks = {env.name: threading.RLock() for env in settings.environments}
        self._verified: dict[Path, tuple[tuple[tuple[str, int, int, int], ...], str]] = {}  # folder: (stat, digest)
        # One placement of a folder at a time: a check placing a version while a deploy places it too
        # must not replace the folder the other is reading.
        self._placing: dict[Path, threading.Lock] = {}
        self._placing_guard = threading.Lock()
        self._dirty: set[str] = set()

    @property
    def metrics_token_hash(self) -> str | None:
        """The SHA-256 of the metrics token the hosts (and the control plane's `/metrics`) ask for."""
        return self._metrics_token_hash

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Bring every host up with its deployments, then supervise them (the hosts keep serving after
        `stop`: `mlgate stop` stops them)."""
        self.bring_up()
        super().start()

    def bring_up(self) -> None:
        """The config's endpoints created, the host of every environment with an endpoint adopted or
        started and given its deployments."""
        made = endpoints.ensure_declared(self.db, self.settings)
        if made:
            log.info("created the endpoints the config declares: %s", ", ".join(made))
        for env in self._hosted():
            self.backend.ensure(env)
            self._sync_quietly(env.name)

    def tick(self) -> None:
        """One supervision round: start the host of an environment that got its first endpoint, restart
        dead hosts, push what a host missed."""
        for env in self._hosted():
            if self.stopping:
                return
            try:
                if not self.backend.running(env.name):
                    log.warning("the serving host of %s is not running; starting it", env.name)
                    self.backend.ensure(env)
                    self._dirty.add(env.name)
                if env.name in self._dirty:
                    self._sync_quietly(env.name)
            except Exception:
                log.exception("supervising the serving host of %s failed", env.name)

    def _hosted(self) -> list[Environment]:
        """The environments that need a serving host: those with at least one endpoint."""
        with_endpoints = endpoints.environments_with_endpoints(self.db)
        return [env for env in self.settings.environments if env.name in with_endpoints]

    def _host_up(self, env: str) -> None:
        """The environment's host started if it is not running (its first endpoint was just created, or
        it died since the last supervision round), with its deployments."""
        if not self.backend.running(env):
            self.backend.ensure(self.settings.environment(env))
            self._sync_quietly(env)

    def _sync_quietly(self, env: str) -> None:
        try:
            self.sync(env)
        except Exception as exc:
            self._dirty.add(env)
            message = exc.message if isinstance(exc, MlgateError) else repr(exc)
            log.error("could not push the deployments of %s to its serving host: %s", env, message)

    def sync(self, env: str) -> None:
        """Push the environment's deployments as the control database records them."""
        with self._locks[env]:
            self.backend.push(env, self._spec(env, {}))
            self._dirty.discard(env)

    def status(self, env: str) -> HostStatus:
        self.settings.environment(env)
        return self.backend.status(env)

    # --- the spec --------------------------------------------------------------------------------

    def _spec(self, env: str, override: dict[str, Allocation]) -> dict[str, Any]:
        environment = self.settings.environment(env)
        hashes = endpoints.key_hashes(self.db, env)
        internal = token_hash(self.internal_key)
        pairs = self._rollout_pairs(env)
        policies = {e.name: e for e in self.settings.endpoints.get(env, ())}
        specs: dict[str, Any] = {}
        for view in endpoints.list_endpoints(self.db, env):
            allocation = override.get(view.name, view.allocation)
            if not allocation.slots:
                continue
            spec: dict[str, Any] = {
                "key_hashes": [*hashes[view.name], internal],
                "slots": {
                    s.slot: {
                        "model_dir": str(self.place(environment, s)),
                        "digest": s.digest,
                        "traffic": s.traffic,
                        "version": s.version,
                    }
                    for s in allocation.slots
                },
                "sample_rate": policies[view.name].sample_rate if view.name in policies else 1.0,
            }
            if allocation.mirror is not None:
                spec["mirror"] = {"slot": allocation.mirror.slot, "percent": allocation.mirror.percent}
            if view.name in pairs:
                spec.update(self._rollout_spec(allocation, *pairs[view.name], policies.get(view.name)))
            specs[view.name] = spec
        serving = self.settings.serving
        batching = {"max_batch_size": serving.max_batch_size, "max_wait_ms": serving.max_wait_ms}
        metrics = [self._metrics_token_hash] if self._metrics_token_hash is not None else []
        return {"endpoints": specs, "batching": batching, "metrics_token_hashes": metrics}

    def _rollout_pairs(self, env: str) -> dict[str, tuple[str, str | None]]:
        """Per endpoint with a rollout under way, the slot serving before it (the host answers from it when
        the new slot's model fails) and the new slot."""
        with self.db.read() as session:
            rows = session.execute(
                select(Rollout.endpoint, Rollout.from_slot, Rollout.to_slot).where(
                    Rollout.environment == env, Rollout.state.in_(rollouts.ACTIVE), Rollout.from_slot.is_not(None)
                )
            ).all()
        return {endpoint: (stable, new) for endpoint, stable, new in rows if stable is not None}

    def _rollout_spec(
        self, allocation: Allocation, stable: str, new: str | None, policy: EndpointConfig | None
    ) -> dict[str, Any]:
        """The spec's `stable` slot and, unless the policy turns it off, the `shadow` comparison with it."""
        before = allocation.get(stable)
        if before is None:
            return {}
        spec: dict[str, Any] = {"stable": stable}
        quality = policy.quality if policy is not None else QualityConfig()
        if new is not None and new != stable and allocation.get(new) is not None and quality.shadow_share > 0:
            shadow: dict[str, Any] = {
                "slot": new,
                "percent": quality.shadow_share * 100,
                "tolerance": quality.tolerance,
            }
            edges = self._prediction_edges(before.model_version_id)
            if edges:
                shadow["edges"] = edges
            spec["shadow"] = shadow
        return spec

    def _prediction_edges(self, model_version_id: int) -> list[float] | None:
        """The bin edges of a version's first baseline prediction column, if its profile has numeric ones."""
        with self.db.read() as session:
            row = session.get(ModelVersion, model_version_id)
            profile = row.profile if row is not None else None
        predictions = (profile or {}).get("predictions") or []
        first = predictions[0] if predictions and isinstance(predictions[0], dict) else {}
        edges = (first.get("bins") or {}).get("edges") if first.get("type") == "numeric" else None
        if not isinstance(edges, list) or not 0 < len(edges) <= MAX_SHADOW_EDGES:
            return None
        if not all(isinstance(e, int | float) and not isinstance(e, bool) for e in edges):
            return None
        return [float(e) for e in edges]

    def place(self, env: Environment, slot: SlotAllocation) -> Path:
        """The version's files under serving/<digest>/, from the environment's registry, digest checked."""
        target = env.serving_dir / slot.digest
        with self._placing_guard:
            lock = self._placing.setdefault(target, threading.Lock())
        with lock:
            if target.is_dir() and self._placed_digest(target) == slot.digest:
                return target
            return self._download_to(env, slot, target)

    def _download_to(self, env: Environment, slot: SlotAllocation, target: Path) -> Path:
        from mlgate.adapters.mlflow.copy import PromotionStore

        env.serving_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".incoming-", dir=env.serving_dir) as tmp:
            store = PromotionStore(self._upstream(env.name), env=env.name)
            folder = store.download_version(slot.model, slot.version, Path(tmp) / "model")
            digest = tree_digest(folder)
            if digest != slot.digest:
                raise ValidationError(
                    f"the files of version {slot.version} of '{slot.model}' in '{env.name}' have digest {digest}, "
                    f"not the registered {slot.digest}: refused to deploy them",
                    details={"digest": digest, "expected": slot.digest, "model": slot.model, "version": slot.version},
                )
            if target.exists():
                log.warning("replacing %s: its files no longer match their digest", target)
                shutil.rmtree(target)
            folder.rename(target)
        return target

    def _placed_digest(self, folder: Path) -> str:
        """A placed folder's digest, hashed again only when a stat walk shows a file changed: every push
        checks every deployed folder."""
        stat = tree_stat(folder)
        known = self._verified.get(folder)
        if known is not None and known[0] == stat:
            return known[1]
        digest = tree_digest(folder)
        self._verified[folder] = (stat, digest)
        return digest

    def _push(self, env: str, name: str, allocation: Allocation) -> None:
        self._host_up(env)
        self.backend.push(env, self._spec(env, {name: allocation}))

    def _record(self, env: str, name: str, allocation: Allocation, view: EndpointView, **kw: Any) -> EndpointView:
        """Push, then record; a failed record is undone on the host by pushing the recorded state again."""
        self._push(env, name, allocation)
        try:
            return endpoints.record_revision(self.db, env, name, allocation, expected=view.revision, **kw)
        except BaseException:
            self._sync_quietly(env)
            raise

    # --- endpoint changes ------------------------------------------------------------------------------

    def deploy(
        self,
        env: str,
        name: str,
        *,
        model: str,
        version: int,
        slot: str,
        traffic: int | None,
        mirror: float | None,
        actor: str,
    ) -> EndpointView:
        self.settings.environment(env)
        row_id, digest = self._deployable(env, model, version)
        with self._locks[env]:
            view = endpoints.get(self.db, env, name)
            allocation = allocations.deploy(
                view.allocation,
                slot=slot,
                model_version_id=row_id,
                model=model,
                version=version,
                digest=digest,
                traffic=traffic,
                mirror=mirror,
            )
            return self._record(
                env,
                name,
                allocation,
                view,
                actor=actor,
                reason="deploy",
                payload={"slot": slot, "model": model, "version": version, "digest": digest},
            )

    def shift(
        self, env: str, name: str, weights: dict[str, int], *, mirror: Mirror | bool | None, actor: str
    ) -> EndpointView:
        with self._locks[env]:
            view = endpoints.get(self.db, env, name)
            allocation = allocations.shift(view.allocation, weights, mirror=mirror)
            return self._record(env, name, allocation, view, actor=actor, reason="traffic")

    def rollback(self, env: str, name: str, *, actor: str) -> EndpointView:
        with self._locks[env]:
            view = endpoints.get(self.db, env, name)
            allocation, parent = endpoints.rollback_target(self.db, env, name)
            return self._record(
                env,
                name,
                allocation,
                view,
                actor=actor,
                reason="rollback",
                parent=parent,
                payload={"from_revision": view.revision},
            )

    def rotate_key(self, env: str, name: str, which: Which, *, actor: str) -> str:
        with self._locks[env]:
            key = endpoints.rotate_key(self.db, env, name, which, actor=actor)
            self._sync_quietly(env)  # on failure the supervisor pushes it again
            return key

    def create(self, env: str, name: str, *, actor: str, description: str) -> tuple[EndpointView, endpoints.Keys]:
        """A new endpoint, and its environment's host started if this is the environment's first one."""
        created = endpoints.create(self.db, self.settings, env, name, actor=actor, description=description)
        with self._locks[env]:
            try:
                self._host_up(env)
            except MlgateError as exc:  # the endpoint exists: the supervisor starts the host at its next round
                log.error("could not start the serving host of %s: %s", env, exc.message)
        return created

    def _deployable(self, env: str, model: str, version: int) -> tuple[int, str]:
        """The version's row id and digest; into an environment behind a gate, only a version that came
        through that gate (into production: only what passed gate B)."""
        with self.db.read() as session:
            row = model_version(session, environment=env, name=model, version=version)
            if row is None:
                raise NotFoundError(
                    f"no version {version} of model '{model}' in '{env}'",
                    details={"model": model, "version": version, "environment": env},
                )
            gate = next((g for g in self.settings.gates if g.target == env), None)
            if gate is not None:
                passed = session.execute(
                    select(PromotionRequest.id).where(
                        PromotionRequest.target_version_id == row.id,
                        PromotionRequest.state == RequestState.PROMOTED.value,
                    )
                ).first()
                if passed is None:
                    raise PermissionDeniedError(
                        f"version {version} of '{model}' in '{env}' did not come through gate {gate.name}: "
                        "it cannot be deployed there",
                        details={"model": model, "version": version, "gate": gate.name},
                    )
            return row.id, row.digest
