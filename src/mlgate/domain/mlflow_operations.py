"""What each MLflow request is: the door's allow-list, one line per route the installed MLflow registers.

The tracking server routes on the decoded path; so does `resolve`, on the same decoded form of the raw
path the door forwards, so the operation the door authorizes is the one the upstream runs. A route is
a read (any role bound to the environment), a write (the action it needs; writes happen in the
development environment only), or denied (a surface mlgate does not offer, with the reason). Anything
not in the table is denied. `tests/unit/test_mlflow_routes.py` compares the table with the routes of
the installed MLflow, both ways, so an upgrade that adds a route fails until it is classified.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from urllib.parse import unquote

from mlgate.domain.permissions import Action

API = "{api}"  # a route MLflow registers twice, under /api/ and under /ajax-api/ (what its UI calls)
MIB = 1024 * 1024
JSON_LIMIT = 16 * MIB  # log-batch's 1,000 metrics and MLflow's longest values fit many times over
ARTIFACT_LIMIT = 4 * 1024 * MIB  # one artifact file; streamed, never held in memory
SMALL_LIMIT = 1 * MIB  # GraphQL queries, OpenTelemetry batches of spans' metadata


class Kind(StrEnum):
    READ = "read"
    WRITE = "write"
    DENIED = "denied"


class Body(StrEnum):
    """How the door handles a request body: read whole (capped) to inspect it, or streamed through."""

    JSON = "json"
    STREAM = "stream"


# Why a family of routes is denied, named in the refusal.
DENIALS: dict[str, str] = {
    "assistant": "MLflow's assistant runs tools on the tracking server's host and is meant for localhost only",
    "gateway": "MLflow's AI gateway stores provider secrets and calls out to providers; mlgate does not offer it",
    "jobs": "MLflow's job runner executes code in the tracking server; mlgate runs jobs in its own sandbox",
    "mcp": "MLflow's MCP server registry is not offered through mlgate",
    "code": "this operation runs user-supplied code (scorers, evaluations, optimizations) in the tracking server",
    "webhooks": "MLflow webhooks make the tracking server call arbitrary addresses; mlgate sends notifications itself",
    "workspaces": "workspaces are off: each environment is its own tracking server",
    "presigned": "the tracking server keeps its artifacts; they are read and written through the door, not by URL",
    "demo": "MLflow's demo data generator is not offered through mlgate",
    "telemetry": "MLflow's UI telemetry is not collected",
    "promptlab": "prompt-lab runs call out to model providers through MLflow's gateway, which mlgate does not offer",
}

# One route per line: kind, methods (comma-separated), pattern, then flags:
#   audit          a write recorded in the audit log (creating, deleting, renaming, moving aliases)
#   stream         the body is streamed through (artifacts), not read to be inspected
#   guard=NAME     a check the door makes on this write (see the door's guards)
#   limit=N        a body cap in MiB other than the kind's default
#   deny=FAMILY    (denied routes) the reason, from DENIALS
# Patterns use MLflow's own parameter syntax: <name> is one segment, <path:name> the rest of the path.
ROUTES = """
# ui: the MLflow UI's pages and files, and the server's own answers
read   GET              /
read   GET              /static-files/<path:path>
read   GET              /build/<path:filename>
read   GET              /health
read   GET              /version
read   GET              {api}/3.0/mlflow/server-info
read   GET,POST         /graphql
# experiments
write  POST             {api}/2.0/mlflow/experiments/create                audit guard=tags
write  POST             {api}/2.0/mlflow/experiments/delete                audit
write  POST             {api}/2.0/mlflow/experiments/restore               audit
write  POST             {api}/2.0/mlflow/experiments/update                audit
write  POST             {api}/2.0/mlflow/experiments/set-experiment-tag    guard=tags
write  POST             {api}/2.0/mlflow/experiments/delete-experiment-tag guard=tags
read   GET              {api}/2.0/mlflow/experiments/get
read   GET              {api}/2.0/mlflow/experiments/get-by-name
read   GET,POST         {api}/2.0/mlflow/experiments/search
read   POST             /ajax-api/2.0/mlflow/experiments/search-datasets
read   POST             {api}/2.0mlflow/experiments/search-datasets
# runs and their metrics
write  POST             {api}/2.0/mlflow/runs/create                       audit guard=run-create
write  POST             {api}/2.0/mlflow/runs/update
write  POST             {api}/2.0/mlflow/runs/delete                       audit guard=run-delete
write  POST             {api}/2.0/mlflow/runs/restore                      audit
write  POST             {api}/2.0/mlflow/runs/log-metric
write  POST             {api}/2.0/mlflow/runs/log-parameter
write  POST             {api}/2.0/mlflow/runs/set-tag                      guard=tags
write  POST             {api}/2.0/mlflow/runs/delete-tag                   guard=tags
write  POST             {api}/2.0/mlflow/runs/log-batch                    guard=tags
write  POST             {api}/2.0/mlflow/runs/log-model                    guard=artifact-write
write  POST             {api}/2.0/mlflow/runs/log-inputs
write  POST             {api}/2.0/mlflow/runs/outputs
read   GET              {api}/2.0/mlflow/runs/get
read   POST             {api}/2.0/mlflow/runs/search
read   GET              {api}/2.0/mlflow/metrics/get-history
read   GET              /ajax-api/2.0/mlflow/metrics/get-history-bulk
read   GET              {api}/2.0/mlflow/metrics/get-history-bulk-interval
# artifacts, and logged models (their files included)
read   GET              {api}/2.0/mlflow/artifacts/list
read   GET              {api}/2.0/mlflow-artifacts/artifacts
read   GET              {api}/2.0/mlflow-artifacts/artifacts/<path:artifact_path>       stream
write  PUT              {api}/2.0/mlflow-artifacts/artifacts/<path:artifact_path>       stream guard=artifact-write
write  DELETE           {api}/2.0/mlflow-artifacts/artifacts/<path:artifact_path>       audit guard=artifact-write
write  POST             {api}/2.0/mlflow-artifacts/mpu/create/<path:artifact_path>      guard=artifact-write
write  POST             {api}/2.0/mlflow-artifacts/mpu/complete/<path:artifact_path>    guard=artifact-write
write  POST             {api}/2.0/mlflow-artifacts/mpu/abort/<path:artifact_path>       guard=artifact-write
write  POST             /ajax-api/2.0/mlflow/upload-artifact                            stream guard=artifact-write
read   GET              /get-artifact                                                   stream
read   GET              /model-versions/get-artifact                                    stream
write  POST             {api}/2.0/mlflow/logged-models                                  audit guard=tags
read   POST             {api}/2.0/mlflow/logged-models/search
read   GET              {api}/2.0/mlflow/logged-models/<model_id>
write  PATCH            {api}/2.0/mlflow/logged-models/<model_id>                       guard=logged-model-write
write  DELETE           {api}/2.0/mlflow/logged-models/<model_id>                       audit guard=logged-model-write
write  POST             {api}/2.0/mlflow/logged-models/<model_id>/params
write  PATCH            {api}/2.0/mlflow/logged-models/<model_id>/tags                  guard=tags
write  DELETE           {api}/2.0/mlflow/logged-models/<model_id>/tags/<tag_key>        guard=tags
read   GET              {api}/2.0/mlflow/logged-models/<model_id>/artifacts/directories
read   GET              /ajax-api/2.0/mlflow/logged-models/<model_id>/artifacts/files   stream
# registry: registered models and model versions
write  POST             {api}/2.0/mlflow/registered-models/create              audit guard=tags
write  POST             {api}/2.0/mlflow/registered-models/rename              audit guard=model-write
write  PATCH            {api}/2.0/mlflow/registered-models/update
write  DELETE           {api}/2.0/mlflow/registered-models/delete              audit guard=model-write
write  POST             {api}/2.0/mlflow/registered-models/set-tag             guard=tags
write  DELETE           {api}/2.0/mlflow/registered-models/delete-tag          guard=tags
read   GET              {api}/2.0/mlflow/registered-models/alias
write  POST,DELETE      {api}/2.0/mlflow/registered-models/alias               audit
read   GET              {api}/2.0/mlflow/registered-models/get
read   GET              {api}/2.0/mlflow/registered-models/search
read   GET,POST         {api}/2.0/mlflow/registered-models/get-latest-versions
write  POST             {api}/2.0/mlflow/model-versions/create                 audit guard=version-create
write  PATCH            {api}/2.0/mlflow/model-versions/update
write  POST             {api}/2.0/mlflow/model-versions/transition-stage       audit
write  DELETE           {api}/2.0/mlflow/model-versions/delete                 audit guard=version-delete
write  POST             {api}/2.0/mlflow/model-versions/set-tag                guard=tags
write  DELETE           {api}/2.0/mlflow/model-versions/delete-tag             guard=tags
read   GET              {api}/2.0/mlflow/model-versions/get
read   GET              {api}/2.0/mlflow/model-versions/search
read   GET              {api}/2.0/mlflow/model-versions/get-download-uri
# traces (v2, for MLflow's older clients, and v3), assessments, and OpenTelemetry's export
read   GET              {api}/2.0/mlflow/traces
write  POST             {api}/2.0/mlflow/traces                                        guard=tags
write  PATCH            {api}/2.0/mlflow/traces/<request_id>                           guard=tags
read   GET              {api}/2.0/mlflow/traces/<request_id>/info
write  PATCH,DELETE     {api}/2.0/mlflow/traces/<request_id>/tags                      guard=tags
write  POST             {api}/2.0/mlflow/traces/delete-traces                          audit
write  POST             {api}/2.0/mlflow/traces/link-prompts
write  POST             {api}/2.0/mlflow/traces/link-to-run
read   GET              /ajax-api/2.0/mlflow/get-trace-artifact                        stream
read   GET              {api}/2.0/mlflow/get-online-trace-details
read   GET              {api}/2.0/mlflow/unified-traces
write  POST             {api}/3.0/mlflow/traces                                        guard=tags
read   GET              {api}/3.0/mlflow/traces/get
read   GET              {api}/3.0/mlflow/traces/batchGet
read   POST             {api}/3.0/mlflow/traces/batchGetInfos
read   POST             {api}/3.0/mlflow/traces/search
read   POST             {api}/3.0/mlflow/traces/metrics
read   POST             {api}/3.0/mlflow/traces/calculate-filter-correlation
write  POST             {api}/3.0/mlflow/traces/delete-traces                          audit
read   GET              {api}/3.0/mlflow/traces/<trace_id>
write  PATCH,DELETE     {api}/3.0/mlflow/traces/<trace_id>/tags                        guard=tags
write  POST             {api}/3.0/mlflow/traces/<trace_id>/assessments
read   GET              {api}/3.0/mlflow/traces/<trace_id>/assessments/<assessment_id>
write  PATCH,DELETE     {api}/3.0/mlflow/traces/<trace_id>/assessments/<assessment_id>
read   GET              /ajax-api/3.0/mlflow/get-trace-artifact                        stream
write  POST             /v1/traces                                                     limit=1
# GenAI evaluation: datasets, label schemas, issues, review queues; scorers' and prompt optimizations' reads
write  POST             {api}/3.0/mlflow/datasets/create                          audit guard=tags
read   GET,POST         {api}/3.0/mlflow/datasets/search
read   GET              {api}/3.0/mlflow/datasets/<dataset_id>
write  DELETE           {api}/3.0/mlflow/datasets/<dataset_id>                    audit
read   GET              {api}/3.0/mlflow/datasets/<dataset_id>/records
write  POST,DELETE      {api}/3.0/mlflow/datasets/<dataset_id>/records
write  PATCH            {api}/3.0/mlflow/datasets/<dataset_id>/tags               guard=tags
write  DELETE           {api}/3.0/mlflow/datasets/<dataset_id>/tags/<key>         guard=tags
read   GET              {api}/3.0/mlflow/datasets/<dataset_id>/experiment-ids
write  POST             {api}/3.0/mlflow/datasets/<dataset_id>/add-experiments
write  POST             {api}/3.0/mlflow/datasets/<dataset_id>/remove-experiments
write  POST             {api}/3.0/mlflow/label-schemas/create
write  PATCH            {api}/3.0/mlflow/label-schemas/update
write  DELETE           {api}/3.0/mlflow/label-schemas/delete
read   GET              {api}/3.0/mlflow/label-schemas/get
read   GET              {api}/3.0/mlflow/label-schemas/get-by-name
read   GET              {api}/3.0/mlflow/label-schemas/list
write  POST             {api}/3.0/mlflow/issues
read   POST             {api}/3.0/mlflow/issues/search
read   GET              {api}/3.0/mlflow/issues/<issue_id>
write  PATCH            {api}/3.0/mlflow/issues/<issue_id>
write  POST             {api}/3.0/mlflow/review-queues/create
write  POST             {api}/3.0/mlflow/review-queues/update
write  POST             {api}/3.0/mlflow/review-queues/delete
write  POST             {api}/3.0/mlflow/review-queues/get-or-create-user
read   GET              {api}/3.0/mlflow/review-queues/get
read   GET              {api}/3.0/mlflow/review-queues/get-by-name
read   GET              {api}/3.0/mlflow/review-queues/list
write  POST             {api}/3.0/mlflow/review-queues/items/add
write  POST             {api}/3.0/mlflow/review-queues/items/remove
write  POST             {api}/3.0/mlflow/review-queues/items/set-status
read   GET              {api}/3.0/mlflow/review-queues/items/list
read   GET              {api}/3.0/mlflow/scorers/list
read   GET              {api}/3.0/mlflow/scorers/get
read   GET              {api}/3.0/mlflow/scorers/versions
read   GET              {api}/3.0/mlflow/scorers/online-configs
read   GET,POST         {api}/3.0/mlflow/prompt-optimization/jobs/search
read   GET              {api}/3.0/mlflow/prompt-optimization/jobs/<job_id>
# denied surfaces (the reason is DENIALS[deny]); MCP's routes in MLflow's order: the first match wins
denied POST             /ajax-api/3.0/mlflow/assistant/message                                           deny=assistant
denied GET              /ajax-api/3.0/mlflow/assistant/sessions/<session_id>/stream                      deny=assistant
denied PATCH            /ajax-api/3.0/mlflow/assistant/sessions/<session_id>                             deny=assistant
denied POST             /ajax-api/3.0/mlflow/assistant/sessions/<session_id>/permission                  deny=assistant
denied POST             /ajax-api/3.0/mlflow/assistant/sessions/<session_id>/tool-result                 deny=assistant
denied GET              /ajax-api/3.0/mlflow/assistant/providers/<provider>/health                       deny=assistant
denied GET              /ajax-api/3.0/mlflow/assistant/providers                                         deny=assistant
denied GET,PUT          /ajax-api/3.0/mlflow/assistant/config                                            deny=assistant
denied POST             /ajax-api/3.0/mlflow/assistant/skills/install                                    deny=assistant
denied GET              /ajax-api/3.0/mlflow/assistant/providers/<provider>/models                       deny=assistant
denied POST             /gateway/<endpoint_name>/mlflow/invocations                                      deny=gateway
denied POST             /gateway/mlflow/v1/chat/completions                                              deny=gateway
denied GET              /gateway/mlflow/v1/models                                                        deny=gateway
denied POST             /gateway/openai/v1/chat/completions                                              deny=gateway
denied POST             /gateway/openai/v1/embeddings                                                    deny=gateway
denied POST             /gateway/typesafe/v1/systemone                                                   deny=gateway
denied POST             /gateway/openai/v1/responses                                                     deny=gateway
denied POST             /gateway/openai/v1/responses/compact                                             deny=gateway
denied POST             /gateway/anthropic/v1/messages                                                   deny=gateway
denied POST             /gateway/gemini/v1beta/models/<endpoint_name>:generateContent                    deny=gateway
denied POST             /gateway/gemini/v1beta/models/<endpoint_name>:streamGenerateContent              deny=gateway
denied POST             /gateway/proxy/<endpoint_name>/<path:path>                                       deny=gateway
denied GET,POST         /ajax-api/2.0/mlflow/gateway-proxy                                               deny=gateway
denied POST             {api}/3.0/mlflow/gateway/budgets/create                                          deny=gateway
denied DELETE           {api}/3.0/mlflow/gateway/budgets/delete                                          deny=gateway
denied GET              {api}/3.0/mlflow/gateway/budgets/get                                             deny=gateway
denied GET              {api}/3.0/mlflow/gateway/budgets/list                                            deny=gateway
denied POST             {api}/3.0/mlflow/gateway/budgets/update                                          deny=gateway
denied GET              {api}/3.0/mlflow/gateway/budgets/windows                                         deny=gateway
denied POST             {api}/3.0/mlflow/gateway/endpoints/create                                        deny=gateway
denied DELETE           {api}/3.0/mlflow/gateway/endpoints/delete                                        deny=gateway
denied DELETE           {api}/3.0/mlflow/gateway/endpoints/delete-tag                                    deny=gateway
denied GET              {api}/3.0/mlflow/gateway/endpoints/get                                           deny=gateway
denied GET              {api}/3.0/mlflow/gateway/endpoints/list                                          deny=gateway
denied POST             {api}/3.0/mlflow/gateway/endpoints/set-tag                                       deny=gateway
denied POST             {api}/3.0/mlflow/gateway/endpoints/update                                        deny=gateway
denied POST             {api}/3.0/mlflow/gateway/endpoints/models/attach                                 deny=gateway
denied POST             {api}/3.0/mlflow/gateway/endpoints/models/detach                                 deny=gateway
denied POST             {api}/3.0/mlflow/gateway/endpoints/bindings/create                               deny=gateway
denied DELETE           {api}/3.0/mlflow/gateway/endpoints/bindings/delete                               deny=gateway
denied GET              {api}/3.0/mlflow/gateway/endpoints/bindings/list                                 deny=gateway
denied POST             {api}/3.0/mlflow/gateway/guardrails/create                                       deny=gateway
denied DELETE           {api}/3.0/mlflow/gateway/guardrails/delete                                       deny=gateway
denied GET              {api}/3.0/mlflow/gateway/guardrails/get                                          deny=gateway
denied GET              {api}/3.0/mlflow/gateway/guardrails/list                                         deny=gateway
denied POST             {api}/3.0/mlflow/gateway/guardrails/add-to-endpoint                              deny=gateway
denied DELETE           {api}/3.0/mlflow/gateway/guardrails/remove-from-endpoint                         deny=gateway
denied GET              {api}/3.0/mlflow/gateway/guardrails/list-for-endpoint                            deny=gateway
denied PATCH            {api}/3.0/mlflow/gateway/guardrails/update-config                                deny=gateway
denied POST             {api}/3.0/mlflow/gateway/model-definitions/create                                deny=gateway
denied DELETE           {api}/3.0/mlflow/gateway/model-definitions/delete                                deny=gateway
denied GET              {api}/3.0/mlflow/gateway/model-definitions/get                                   deny=gateway
denied GET              {api}/3.0/mlflow/gateway/model-definitions/list                                  deny=gateway
denied POST             {api}/3.0/mlflow/gateway/model-definitions/update                                deny=gateway
denied POST             {api}/3.0/mlflow/gateway/secrets/create                                          deny=gateway
denied DELETE           {api}/3.0/mlflow/gateway/secrets/delete                                          deny=gateway
denied GET              {api}/3.0/mlflow/gateway/secrets/get                                             deny=gateway
denied GET              {api}/3.0/mlflow/gateway/secrets/list                                            deny=gateway
denied POST             {api}/3.0/mlflow/gateway/secrets/update                                          deny=gateway
denied GET              /ajax-api/3.0/mlflow/gateway/provider-config                                     deny=gateway
denied GET              /ajax-api/3.0/mlflow/gateway/secrets/config                                      deny=gateway
denied GET              /ajax-api/3.0/mlflow/gateway/supported-models                                    deny=gateway
denied GET              /ajax-api/3.0/mlflow/gateway/supported-providers                                 deny=gateway
denied POST             /ajax-api/3.0/jobs/                                                              deny=jobs
denied POST             /ajax-api/3.0/jobs/search                                                        deny=jobs
denied GET              /ajax-api/3.0/jobs/<job_id>                                                      deny=jobs
denied PATCH            /ajax-api/3.0/jobs/cancel/<job_id>                                               deny=jobs
denied GET              /ajax-api/3.0/mlflow/jobs/<job_id>                                               deny=jobs
denied PATCH            /ajax-api/3.0/mlflow/jobs/cancel/<job_id>                                        deny=jobs
denied POST             {api}/3.0/mlflow/prompt-optimization/jobs                                        deny=jobs
denied DELETE           {api}/3.0/mlflow/prompt-optimization/jobs/<job_id>                               deny=jobs
denied POST             {api}/3.0/mlflow/prompt-optimization/jobs/<job_id>/cancel                        deny=jobs
denied GET,POST         {api}/3.0/mlflow/mcp-servers                                                     deny=mcp
denied GET              {api}/3.0/mlflow/mcp-servers/endpoints                                           deny=mcp
denied POST             {api}/3.0/mlflow/mcp-servers/<path:name>/versions/<path:version>/tags            deny=mcp
denied DELETE           {api}/3.0/mlflow/mcp-servers/<path:name>/versions/<path:version>/tags/<path:key> deny=mcp
denied GET,PATCH,DELETE {api}/3.0/mlflow/mcp-servers/<path:name>/versions/<path:version>                 deny=mcp
denied GET,POST         {api}/3.0/mlflow/mcp-servers/<path:name>/versions                                deny=mcp
denied GET,POST         {api}/3.0/mlflow/mcp-servers/<path:name>/endpoints                               deny=mcp
denied GET,PATCH,DELETE {api}/3.0/mlflow/mcp-servers/<path:name>/endpoints/<endpoint_id>                 deny=mcp
denied POST             {api}/3.0/mlflow/mcp-servers/<path:name>/tags                                    deny=mcp
denied DELETE           {api}/3.0/mlflow/mcp-servers/<path:name>/tags/<path:key>                         deny=mcp
denied POST             {api}/3.0/mlflow/mcp-servers/<path:name>/aliases                                 deny=mcp
denied GET,DELETE       {api}/3.0/mlflow/mcp-servers/<path:name>/aliases/<path:alias>                    deny=mcp
denied GET,PATCH,DELETE {api}/3.0/mlflow/mcp-servers/<path:name>                                         deny=mcp
denied POST             {api}/3.0/mlflow/scorers/register                                                deny=code
denied DELETE           {api}/3.0/mlflow/scorers/delete                                                  deny=code
denied PUT              {api}/3.0/mlflow/scorers/online-config                                           deny=code
denied POST             /ajax-api/3.0/mlflow/scorer/invoke                                               deny=code
denied POST             /ajax-api/3.0/mlflow/genai/evaluate/invoke                                       deny=code
denied POST             /ajax-api/3.0/mlflow/issues/invoke                                               deny=code
denied GET,POST         {api}/2.0/mlflow/webhooks                                                        deny=webhooks
denied GET,PATCH,DELETE {api}/2.0/mlflow/webhooks/<webhook_id>                                           deny=webhooks
denied POST             {api}/2.0/mlflow/webhooks/<webhook_id>/test                                      deny=webhooks
denied GET,POST         {api}/3.0/mlflow/workspaces                                                      deny=workspaces
denied GET,PATCH,DELETE {api}/3.0/mlflow/workspaces/<workspace_name>                                     deny=workspaces
denied POST             {api}/2.0/mlflow/artifacts/presigned-upload-url                                  deny=presigned
denied POST             {api}/2.0/mlflow/artifacts/presigned-download-url                                deny=presigned
denied GET              {api}/2.0/mlflow-artifacts/presigned/<path:artifact_path>                        deny=presigned
denied POST             /ajax-api/3.0/mlflow/demo/generate                                               deny=demo
denied POST             /ajax-api/3.0/mlflow/demo/delete                                                 deny=demo
denied GET,POST         /ajax-api/3.0/mlflow/ui-telemetry                                                deny=telemetry
denied POST             /ajax-api/2.0/mlflow/runs/create-promptlab-run                                   deny=promptlab
"""


@dataclass(frozen=True)
class Operation:
    """One classified route."""

    kind: Kind
    method: str
    pattern: str
    name: str  # e.g. "runs.create": the audit action is "mlflow." + name
    audited: bool = False
    body: Body = Body.JSON
    limit: int = JSON_LIMIT
    guard: str | None = None
    denial: str | None = None

    @property
    def action(self) -> Action:
        return Action.TRAIN if self.kind is Kind.WRITE else Action.READ

    @property
    def audit_action(self) -> str:
        return "mlflow." + self.name


@dataclass(frozen=True)
class Resolved:
    """A request matched to its operation, with the route's parameters (decoded)."""

    operation: Operation
    params: dict[str, str]
    path: str  # the decoded path, as the upstream routes on it


class PathRefused(ValueError):
    """The raw path is ambiguous: its decoded form could be read differently by the door and MLflow."""


class NotAllowed(LookupError):
    """No route in the table matches: the door opens no unknown operation."""


# -- the table ---------------------------------------------------------------------------------------

_VERBS = {"PUT": "put", "PATCH": "update", "DELETE": "delete"}
# What a POST does where its route, also read with GET, does not say it.
_POSTED = {"logged-models": "create", "issues": "create", "assessments": "create", "traces": "start", "alias": "set"}
_PARAM = re.compile(r"<(?:(path):)?([A-Za-z_][A-Za-z0-9_]*)>")


def _name(pattern: str, method: str) -> str:
    """The operation's name: the route's fixed segments after the API version, and the verb where the
    route alone does not say it (`logged-models/<model_id>` PATCH is `logged-models.update`). MLflow's 3.0
    trace routes twin its 2.0 ones, and are named `traces.v3.*` as MLflow's calls are (`DeleteTracesV3`)."""
    segments = [s for s in pattern.split("/") if s not in ("", API, "api", "ajax-api")]
    version = segments.pop(0) if segments and re.fullmatch(r"[23]\.0", segments[0]) else None
    if segments and segments[0] == "mlflow":
        segments = segments[1:]
    fixed = [s for s in segments if not _PARAM.fullmatch(s)]
    verb = _POSTED.get(segments[-1]) if method == "POST" and version and segments else _VERBS.get(method)
    if version == "3.0" and fixed[:1] == ["traces"]:
        fixed.insert(1, "v3")
    name = ".".join(fixed) or "ui"
    if verb and (not fixed or not fixed[-1].startswith(verb)):
        name += "." + verb
    return name


def _operation(line: str) -> list[Operation]:
    kind, methods, pattern, *flags = line.split()
    options = dict(f.partition("=")[::2] for f in flags)
    unknown = set(options) - {"audit", "stream", "guard", "limit", "deny"}
    if unknown:
        raise ValueError(f"unknown flags {sorted(unknown)} in the MLflow route table: {line!r}")
    family = options.get("deny")
    if (Kind(kind) is Kind.DENIED) != bool(family) or (family and family not in DENIALS):
        raise ValueError(f"a denied route, and only one, names a reason from DENIALS: {line!r}")
    stream = "stream" in options
    default_limit = ARTIFACT_LIMIT if stream else (SMALL_LIMIT if pattern == "/graphql" else JSON_LIMIT)
    return [
        Operation(
            kind=Kind(kind),
            method=method,
            pattern=pattern,
            name=_name(pattern, method),
            audited="audit" in options,
            body=Body.STREAM if stream else Body.JSON,
            limit=int(options["limit"]) * MIB if options.get("limit") else default_limit,
            guard=options.get("guard") or None,
            denial=DENIALS[family] if family else None,
        )
        for method in methods.split(",")
    ]


def _regex(pattern: str) -> re.Pattern[str]:
    out, last = [], 0
    for match in _PARAM.finditer(pattern):
        out.append(re.escape(pattern[last : match.start()]))
        out.append(f"(?P<{match[2]}>.+)" if match[1] else f"(?P<{match[2]}>[^/]+)")
        last = match.end()
    out.append(re.escape(pattern[last:]))
    return re.compile("".join(out))


@dataclass(frozen=True)
class _Table:
    fixed: dict[tuple[str, str], Operation]
    patterned: dict[str, list[tuple[re.Pattern[str], Operation]]]
    operations: tuple[Operation, ...]


def _expanded(pattern: str) -> list[str]:
    if pattern.startswith(API):
        rest = pattern[len(API) :]
        return ["/api" + rest, "/ajax-api" + rest]
    return [pattern]


@cache
def table() -> _Table:
    """The parsed table (built on first use, not at import)."""
    fixed: dict[tuple[str, str], Operation] = {}
    patterned: dict[str, list[tuple[re.Pattern[str], Operation]]] = {}
    operations: list[Operation] = []
    for line in ROUTES.strip().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        for operation in _operation(line):
            operations.append(operation)
            for path in _expanded(operation.pattern):
                key = (operation.method, path)
                if key in fixed or any(p.pattern == _regex(path).pattern for p, _ in patterned.get(key[0], [])):
                    raise ValueError(f"route classified twice in the MLflow route table: {key}")
                if _PARAM.search(path):
                    patterned.setdefault(operation.method, []).append((_regex(path), operation))
                else:
                    fixed[key] = operation
    return _Table(fixed=fixed, patterned=patterned, operations=tuple(operations))


# -- resolving a request --------------------------------------------------------------------------------

_UNSAFE = set("?#;\\%")


def decoded_path(raw: str) -> str:
    """The path as MLflow will route on it, refused where the door and MLflow could read it differently:
    an encoded `?`, `#`, `;`, `\\` or `%` (a double encoding), a dot segment, an empty segment, or a
    control character."""
    if not raw.isascii():
        raise PathRefused("the path holds characters that are not percent-encoded")
    try:
        path = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise PathRefused("the path is not valid UTF-8 once decoded") from None
    bad = sorted(_UNSAFE & set(path))
    if bad:
        raise PathRefused(f"the decoded path holds {', '.join(repr(c) for c in bad)}")
    if any(unicodedata.category(c) == "Cc" for c in path):
        raise PathRefused("the decoded path holds a control character")
    segments = path.split("/")[1:]
    if any(s in (".", "..") for s in segments):
        raise PathRefused("the path holds a dot segment ('.' or '..')")
    if any(s == "" for s in segments[:-1]):
        raise PathRefused("the path holds an empty segment ('//')")
    return path


def resolve(method: str, raw_path: str) -> Resolved:
    """The operation `method raw_path` is; `raw_path` is the part after `/mlflow/<env>`, as sent."""
    path = decoded_path(raw_path)
    lookup = "GET" if method == "HEAD" else method
    known = table()
    operation = known.fixed.get((lookup, path))
    if operation is not None:
        return Resolved(operation=operation, params={}, path=path)
    for regex, candidate in known.patterned.get(lookup, []):
        match = regex.fullmatch(path)
        if match:
            return Resolved(operation=candidate, params=match.groupdict(), path=path)
    raise NotAllowed(f"'{method} {path}' is not an MLflow operation the door knows, so it is denied")
