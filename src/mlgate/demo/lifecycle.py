"""`mlgate demo` from start to end: the inner loop, gate A and staging (`session`), the outer loop and
continuous deployment (`outer`, which ends with `monitoring`), then the audit log and the stop."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlgate.config import load_settings
from mlgate.demo import outer
from mlgate.demo.session import Demo
from mlgate.errors import MlgateError
from mlgate.interfaces.cli.output import console
from mlgate.runtime import alive, running_server


def run(*, serve: bool, folder: Path | None = None) -> None:
    folder = folder or Path(tempfile.mkdtemp(prefix="mlgate-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]mlgate demo[/bold] in {folder}")
    demo = Demo(folder)
    try:
        demo.setup()
        demo.start_server()
        demo.create_accounts()
        demo.show_environments()
        demo.inner_loop_plain_mlflow()
        demo.prepare_project()
        demo.train()
        demo.register()
        demo.gate_a()
        demo.serve_in_staging()
        outer.run(demo)
        demo.audit()
        if not serve:
            demo.step("Stop everything the demo started")
            demo.shutdown()
            return
        console.rule("[bold green]the demo is running")
        console.print(f"  server:       {demo.url}")
        console.print(f"  web UI:       {demo.url}/  (sign in with a token from the accounts table above:")
        console.print("                lee has a retrained candidate waiting in his inbox)")
        console.print(f"  API:          {demo.url}/api/v1  (OpenAPI: {demo.url}/api/v1/openapi.json)")
        console.print(f"  MLflow (dev): {demo.url}/mlflow/dev/")
        console.print(f"  endpoints:    {demo.endpoint_url}  (staging, diabetes)")
        console.print(f"                {demo.production_url}  (production, web)")
        console.print(f"  try:          cd {folder} && MLGATE_TOKEN={demo.tokens['admin']} mlgate env list")
        console.print("  Ctrl-C stops it.")
        assert demo.server is not None
        demo.server.wait()
    except KeyboardInterrupt:
        console.print("stopping")
        demo.shutdown()
    except BaseException:
        demo.shutdown()
        raise
    settings = load_settings(demo.config_path)
    if running_server(settings) or (demo.server and alive(demo.server.pid)):
        raise MlgateError("the demo's server is still running after stop")
