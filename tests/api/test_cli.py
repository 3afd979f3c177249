"""The `mlgate` CLI: light imports, `--json` for machines, API errors as messages, tokens shown once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from mlgate.ports import free_port
from tests.support.project import LiveServer

HEAVY = ("mlflow", "pandas", "fastapi", "sqlalchemy", "uvicorn")
MUST_NOT_LOAD = ("mlflow", "pandas", "fastapi")
TOKEN = re.compile(r"mlg_[A-Za-z0-9_-]{20,}")

# Runs the CLI's entry point in a fresh interpreter, then reports which heavy packages got imported.
PROBE = """
import json, sys
from mlgate.interfaces.cli.main import main
prefixes = tuple(sys.argv[2:])
sys.argv = json.loads(sys.argv[1])
code = None
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted({name.split(".")[0] for name in sys.modules if name.startswith(prefixes)})
print("PROBE " + json.dumps({"code": code, "heavy": heavy}))
"""


def probe(*argv: str) -> tuple[Any, list[str], str, str]:
    """(exit code, which of HEAVY got imported, stdout without the probe line, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_TRACKING"))}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(["mlgate", *argv]), *HEAVY, "typer"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    lines = result.stdout.splitlines()
    report = [line for line in lines if line.startswith("PROBE ")]
    assert report, f"the probe did not finish: {result.stderr[-2000:]}"
    data = json.loads(report[-1].removeprefix("PROBE "))
    assert "typer" in data["heavy"], data  # the probe sees what the CLI imports
    data["heavy"].remove("typer")
    shown = "\n".join(line for line in lines if not line.startswith("PROBE "))
    return data["code"], data["heavy"], shown, result.stderr


def test_help_imports_no_mlflow_pandas_or_fastapi() -> None:
    code, heavy, out, err = probe("--help")
    assert code == 0, err
    for command in ("init", "server", "stop", "whoami", "env", "user", "token", "audit"):
        assert command in out
    assert not set(MUST_NOT_LOAD) & set(heavy), heavy


def test_subcommand_help_imports_no_mlflow_pandas_or_fastapi() -> None:
    code, heavy, out, err = probe("env", "list", "--help")
    assert code == 0, err
    assert "--json" in out and "--url" in out
    assert not set(MUST_NOT_LOAD) & set(heavy), heavy


def test_an_unreachable_server_is_a_message_not_a_traceback() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, heavy, out, err = probe("whoami", "--url", url, "--token", "mlg_nothing")
    assert code == 1
    assert f"cannot reach the mlgate server at {url}" in err
    assert "Traceback" not in err + out
    assert not set(MUST_NOT_LOAD) & set(heavy), heavy


def run_json(live: LiveServer, *args: str, token: str) -> Any:
    result = live.project.run(*args, "--json", token=token, url=live.url)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_env_list_json(live_server: LiveServer) -> None:
    envs = run_json(live_server, "env", "list", token=live_server.project.tokens["lee"])
    assert [e["name"] for e in envs] == ["dev", "staging", "production"]
    assert [e["kind"] for e in envs] == ["development", "staging", "production"]
    for env in envs:
        assert env["tracking_uri"] == f"{live_server.url}/mlflow/{env['name']}/"
    assert {e["name"]: e["my_roles"] for e in envs} == {
        "dev": ["lead-data-scientist"],
        "staging": ["lead-data-scientist"],
        "production": [],
    }


def test_user_list_json(live_server: LiveServer) -> None:
    users = run_json(live_server, "user", "list", token=live_server.project.tokens["admin"])
    by_name = {u["name"]: u for u in users}
    assert {"admin", "dana", "lee", "sam", "olu", "vic"} <= set(by_name)
    assert by_name["dana"]["bindings"] == [{"role": "data-scientist", "environment": "dev"}]
    assert by_name["dana"]["email"] == "dana@example.com"


def test_whoami_json_and_plain(live_server: LiveServer) -> None:
    tokens = live_server.project.tokens
    me = run_json(live_server, "whoami", token=tokens["sam"])
    assert me["name"] == "sam"
    assert {(b["role"], b["environment"]) for b in me["bindings"]} == {
        ("software-developer", "staging"),
        ("software-developer", "production"),
    }
    plain = live_server.project.run("whoami", token=tokens["dana"], url=live_server.url)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == "dana: data-scientist @ dev"


@pytest.mark.parametrize(
    ("args", "who", "status"),
    [
        (("user", "list"), "dana", "403 forbidden"),
        (("audit", "list"), "vic", "403 forbidden"),
        (("env", "show", "nowhere"), "vic", "404 not_found"),
        (("whoami",), None, "401 unauthenticated"),
        (("whoami",), "mlg_not-a-real-token", "401 unauthenticated"),
    ],
    ids=["403 user list", "403 audit list", "404 unknown env", "401 no token", "401 unknown token"],
)
def test_api_errors_are_one_line_on_stderr_with_exit_code_1(
    live_server: LiveServer, args: tuple[str, ...], who: str | None, status: str
) -> None:
    token = live_server.project.tokens.get(who or "", who)
    result = live_server.project.run(*args, token=token, url=live_server.url)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error ({status}): ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_forbidden_names_the_user_and_the_action(live_server: LiveServer) -> None:
    result = live_server.project.run(
        "user", "create", "test_forbidden-x", "--role", "viewer", "--env", "dev",
        token=live_server.project.tokens["lee"], url=live_server.url,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("error (403 forbidden): lee may not do this")


def test_tokens_are_shown_once_and_never_listed(live_server: LiveServer, request: pytest.FixtureRequest) -> None:
    live, admin = live_server, live_server.project.tokens["admin"]
    name = f"{request.node.name}-kim"

    created = live.project.run("user", "create", name, "--role", "viewer", "--env", "dev", token=admin, url=live.url)
    assert created.returncode == 0, created.stderr
    first = TOKEN.findall(created.stdout)
    assert len(first) == 1, created.stdout
    assert "shown once" in created.stdout

    issued = live.project.run("token", "create", "--name", "laptop", token=first[0], url=live.url)
    assert issued.returncode == 0, issued.stderr
    values = TOKEN.findall(issued.stdout)
    assert len(values) == 1, issued.stdout
    value = values[0]
    assert value != first[0]
    assert issued.stdout.count(value) == 1
    assert f"'laptop' for {name}" in issued.stdout

    # the new token works, and is the user's
    assert run_json(live, "whoami", token=value)["name"] == name

    mine = live.project.run("token", "list", token=value, url=live.url)
    everyone = live.project.run("token", "list", "--all", token=admin, url=live.url)
    theirs = live.project.run("token", "list", "--json", "--user", name, token=admin, url=live.url)
    for listing in (mine, everyone, theirs):
        assert listing.returncode == 0, listing.stderr
        assert value not in listing.stdout
        assert first[0] not in listing.stdout
    assert value[:12] + "…" in mine.stdout
    assert value[:12] + "…" in everyone.stdout
    rows = json.loads(theirs.stdout)
    assert sorted(r["name"] for r in rows) == ["default", "laptop"]
    assert {r["prefix"] for r in rows} == {first[0][:12], value[:12]}
    assert all("token" not in r for r in rows)
