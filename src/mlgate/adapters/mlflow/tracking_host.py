"""One environment's MLflow tracking server in one process: `python -m mlgate.adapters.mlflow.tracking_host`.

`mlflow server` is a CLI process that imports MLflow, prepares the store, then runs uvicorn in a second
process that imports MLflow again (about 4.5 CPU seconds each). This does what that CLI does for the
options mlgate uses (`--serve-artifacts`, one uvicorn worker on a Unix socket, one allowed host, no job
execution) and then serves MLflow's own FastAPI app in the same process: one import, half the start.
MLflow's AI gateway and its assistant's remote mode are switched off (this MLflow has no switch for the
assistant as a whole): they run or proxy work on the host for whoever reaches the server, which no
environment's registry needs, and the door refuses their routes too. MLflow is pinned to one minor
version in pyproject.toml; the names read here are that version's.
"""

from __future__ import annotations

import argparse
import os
import uuid

ARTIFACTS_URI = "mlflow-artifacts:/"  # what `mlflow server --serve-artifacts` makes the default root


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlgate-tracking-host")
    parser.add_argument("--uds", required=True, help="the Unix socket to listen on")
    parser.add_argument("--allowed-host", required=True, help="the one Host header MLflow accepts")
    parser.add_argument("--backend-store-uri", required=True)
    parser.add_argument("--artifacts-destination", required=True)
    return parser.parse_args(argv)


def _server_environment(args: argparse.Namespace) -> dict[str, str]:
    """The variables `mlflow server` sets for its app process, for the options mlgate passes."""
    from mlflow.environment_variables import (
        _MLFLOW_IN_JOB_EXECUTOR,
        _MLFLOW_SERVER_BOOT_ID,
        _MLFLOW_SGI_NAME,
        MLFLOW_ENABLE_AI_GATEWAY,
        MLFLOW_ENABLE_REMOTE_ASSISTANT,
        MLFLOW_ENABLE_WORKSPACES,
    )
    from mlflow.server import constants as server

    return {
        server.BACKEND_STORE_URI_ENV_VAR: args.backend_store_uri,
        server.REGISTRY_STORE_URI_ENV_VAR: args.backend_store_uri,
        server.ARTIFACT_ROOT_ENV_VAR: ARTIFACTS_URI,
        server.SERVE_ARTIFACTS_ENV_VAR: "true",
        server.ARTIFACTS_DESTINATION_ENV_VAR: args.artifacts_destination,
        _MLFLOW_SGI_NAME.name: "uvicorn",
        _MLFLOW_SERVER_BOOT_ID.name: uuid.uuid4().hex,
        _MLFLOW_IN_JOB_EXECUTOR.name: "false",  # the server process never rebuilds scorer code
        MLFLOW_ENABLE_WORKSPACES.name: "false",
        MLFLOW_ENABLE_AI_GATEWAY.name: "false",
        MLFLOW_ENABLE_REMOTE_ASSISTANT.name: "false",
        "MLFLOW_SERVER_ALLOWED_HOSTS": args.allowed_host,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    os.environ.update(_server_environment(args))
    import uvicorn
    from mlflow.server.handlers import initialize_backend_stores

    # creates or migrates the store before the first request, as `mlflow server` does
    initialize_backend_stores(args.backend_store_uri, args.backend_store_uri, ARTIFACTS_URI)
    from mlflow.server.fastapi_app import app

    uvicorn.run(app, uds=args.uds, workers=1, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
