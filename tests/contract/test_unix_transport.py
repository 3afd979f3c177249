"""MLflow's Python client reaches a tracking server on a Unix socket through `unix_transport`'s hook.

These fail if MLflow changes how its client builds its `requests` session, so that the hook no longer
applies: then the control plane could not reach its own tracking servers at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlgate.adapters.mlflow import unix_transport

ENV = "unit"


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on a Unix socket, started as LocalTrackingServers starts one; its pseudo URL."""
    root = tmp_path_factory.mktemp("tracking")
    folder = Path(tempfile.mkdtemp(prefix="mlgate-test-"))  # short: socket paths have a 107-byte limit
    sock = folder / "mlflow.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"
    }
    command = [sys.executable, "-m", "mlgate.adapters.mlflow.tracking_host", "--uds", str(sock)]
    command += ["--allowed-host", unix_transport.pseudo_host(ENV)]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(root / "artifacts")]
    with (root / "mlflow.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = unix_transport.route(ENV, sock)
    unix_transport.install()  # as the first MlflowRegistry the control plane makes does
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=2) as client:
            while True:
                assert process.poll() is None, (root / "mlflow.log").read_text()[-2000:]
                try:  # once the socket exists (a refused connect to a missing one leaks a socket in httpcore)
                    if sock.exists() and client.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the tracking server did not start"
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def test_mlflow_client_calls_and_artifacts_go_over_the_socket(tracking: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    assert "Default" in [e.name for e in client.search_experiments()]
    run = client.create_run("0")
    (tmp_path / "a.txt").write_text("over the socket")
    client.log_artifact(run.info.run_id, str(tmp_path / "a.txt"))  # an `mlflow-artifacts:` upload
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    out = client.download_artifacts(run.info.run_id, "a.txt", str(tmp_path / "down"))
    assert Path(out).read_text() == "over the socket"
    client.create_registered_model("over-the-socket")
    assert client.get_registered_model("over-the-socket").name == "over-the-socket"


def test_the_hook_is_installed_once_and_unknown_pseudo_hosts_never_resolve(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from mlflow.utils import request_utils

    hooked = request_utils._get_request_session
    unix_transport.install()
    unix_transport.route(ENV, Path(str(unix_transport.socket_for(unix_transport.pseudo_host(ENV)))))
    assert request_utils._get_request_session is hooked  # idempotent: not wrapped twice
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once, not after minutes of retries
    with pytest.raises(Exception, match=r"(?i)resolve|name|connection"):
        MlflowClient(tracking_uri="http://mlflow-nowhere.mlgate.invalid").search_experiments()
