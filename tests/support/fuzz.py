"""The API fuzzed from its own OpenAPI document: schemathesis makes requests for every operation (valid ones
and invalid ones), each sent to a real server as several of the team's people, and every answer is checked
against the document: no 5xx, a documented status code, content type, headers and body, and every refusal
in the API's one error shape.

The run stays usable while it changes the server: the tokens it sends were made before it and are never
revoked by it, nor are the roles of its people (see `_keeps_the_run`). It runs on a server of its own,
since what it creates (users, tokens, endpoints, monitors) would show in another test's listings.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.project import bearer

# `make fuzz` sets these: more examples, every person on every example, fresh examples each run.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))
LONG = EXAMPLES > 0
# The Hypothesis runs of the serving host's parsers and the config loader (tests/unit/test_fuzz_*.py).
PARSERS = settings(
    max_examples=2000 if LONG else 150,
    deadline=None,
    database=None,
    derandomize=not LONG,
    suppress_health_check=list(HealthCheck),
)
# An environment's MLflow tracking server starts at its first use, within the request that uses it.
REQUEST_TIMEOUT_S = 60


def error_shape(_ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx and 5xx is `{"error": {"code": str, "message": str, "details": {...}}}`, as JSON."""
    if response.status_code < 400:
        return
    kind = response.headers.get("content-type", [""])[0]
    assert kind.startswith("application/json"), f"{response.status_code} sent as {kind!r}: {response.text[:200]}"
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"{response.status_code} without an 'error' object: {response.text[:200]}"
    assert isinstance(error.get("code"), str) and error["code"], f"no error code: {response.text[:200]}"
    assert isinstance(error.get("message"), str) and error["message"], f"no message: {response.text[:200]}"
    assert isinstance(error.get("details"), dict), f"details not an object: {response.text[:200]}"
    assert set(body) == {"error"} and set(error) == {"code", "message", "details"}, response.text[:200]


CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    error_shape,
]


@dataclass
class Figures:
    """What a run covered and found: operations, generated examples, requests sent, failures by operation."""

    operations: int = 0
    examples: int = 0
    requests: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    def count(self, _ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
        """A check that checks nothing: it counts the answers by operation and status."""
        self.statuses[(case.operation.label, response.status_code)] += 1

    def table(self) -> str:
        """Each operation's answers by status, as `make fuzz` prints them."""
        by_operation: dict[str, dict[int, int]] = {}
        for (label, status), count in sorted(self.statuses.items()):
            by_operation.setdefault(label, {})[status] = count
        return "\n".join(f"{label}: {answers}" for label, answers in by_operation.items())

    def summary(self) -> str:
        succeeded = {label for label, status in self.statuses if status < 300}
        return (
            f"{self.operations} operations ({len(succeeded)} answered 2xx), {self.examples} examples, "
            f"{self.requests} requests in {self.seconds:.1f} s, {len(self.failures)} failing operations"
        )


@dataclass(frozen=True)
class Protected:
    """What the run's own people need to stay able to act: their token ids and their names."""

    token_ids: frozenset[int]
    people: frozenset[str]


def _keeps_the_run(case: schemathesis.Case, protected: Protected) -> bool:
    """Whether a case leaves the run's credentials alone. Revoking a token the run sends, or a role of one of
    its people, would turn the rest of the run into 401s and 403s: such cases are not generated. Revoking the
    tokens the run itself made, or other people's roles, still is."""
    path = case.path_parameters or {}
    if case.operation.path.endswith("/tokens/{token_id}") and path.get("token_id") in protected.token_ids:
        return False
    return not (case.operation.path.endswith("/roles/revoke") and path.get("name") in protected.people)


def _steered(pair: tuple[schemathesis.Case, dict[str, str | None]]) -> schemathesis.Case:
    case, chosen = pair
    for parameter, value in chosen.items():
        if value is not None and case.path_parameters is not None:
            case.path_parameters[parameter] = value
    return case


def _pool(path: str, parameter: str, known: dict[str, list[str]]) -> list[str] | None:
    """The known values of a path parameter: by the segment before it (`monitors/{name}`), else by name."""
    segment = path.split(f"/{{{parameter}}}")[0].rsplit("/", 1)[-1]
    return known.get(f"{segment}/{{{parameter}}}", known.get(parameter))


def cases(operation: schemathesis.APIOperation, known: dict[str, list[str]]) -> st.SearchStrategy[schemathesis.Case]:
    """Valid and invalid requests for the operation. A path parameter with known values (the environments,
    the names of what the server holds) takes one of them most of the time, else the generated value: a
    random environment name is a 404 before anything else is looked at."""
    generated = st.one_of(
        operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
    )
    choices = {}
    for parameter in re.findall(r"{(\w+)}", operation.path):
        pool = _pool(operation.path, parameter, known)
        if pool:
            choices[parameter] = st.sampled_from([*pool, None])
    return st.tuples(generated, st.fixed_dictionaries(choices)).map(_steered)


def _people_for(example: int, tokens: dict[str, str], every: bool) -> Iterable[tuple[str, str]]:
    """Every person, or (a short run) the admin and one other person in turn: each example is sent as these."""
    if every:
        return tokens.items()
    others = [name for name in tokens if name != "admin"]
    chosen = {"admin", others[example % len(others)]} if others else {"admin"}
    return [(name, token) for name, token in tokens.items() if name in chosen]


def fuzz_operation(
    operation: schemathesis.APIOperation,
    *,
    base_url: str,
    tokens: dict[str, str],
    protected: Protected,
    known: dict[str, list[str]],
    figures: Figures,
    max_examples: int,
) -> None:
    """Run one operation's examples (valid and invalid requests); a failure is recorded, shrunk, by label."""
    session = requests.Session()
    strategy = cases(operation, known)

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=not LONG,  # the suite's run is the same every time; `make fuzz` looks further each time
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        hypothesis.assume(_keeps_the_run(case, protected))
        figures.examples += 1
        for _name, token in _people_for(figures.examples, tokens, every=LONG):
            figures.requests += 1
            case.call_and_validate(
                base_url=base_url,
                session=session,
                headers=bearer(token),
                checks=[*CHECKS, figures.count],
                timeout=REQUEST_TIMEOUT_S,
            )

    try:
        run()
    except Exception as exc:  # a check's failure group, or a request that could not be sent
        figures.failures[operation.label] = _report(exc)
    finally:
        session.close()


def _report(exc: BaseException) -> str:
    """The failure as text: a flaky one (failed once, not when replayed) with what failed the first time."""
    parts = [f"{type(exc).__name__}: {exc}"]
    if isinstance(exc, BaseExceptionGroup):
        parts += [_report(inner) for inner in exc.exceptions]
    return "\n".join(parts)[:4000]


def fuzz(
    schema: schemathesis.BaseSchema,
    *,
    base_url: str,
    tokens: dict[str, str],
    protected: Protected,
    known: dict[str, list[str]],
    max_examples: int,
) -> Figures:
    """Every operation of the document, in its order, each with `max_examples` examples."""
    figures = Figures()
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        figures.operations += 1
        fuzz_operation(
            operation,
            base_url=base_url,
            tokens=tokens,
            protected=protected,
            known=known,
            figures=figures,
            max_examples=max_examples,
        )
    figures.seconds = time.monotonic() - started
    return figures
