"""The demo: one readable script of steps through mlgate's lifecycle, on the embedded defaults.

Each step goes through the public surface (CLI-equivalent SDK calls, plain MLflow code against the
server's door) exactly as a team would, and prints what it did.
"""

from __future__ import annotations

import csv
import email
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

from mlgate.config import default_config_text, load_settings
from mlgate.demo.policy import DEMO_POLICY, MONITOR_POLICY
from mlgate.errors import MlgateError
from mlgate.interfaces.cli.job_commands import follow
from mlgate.interfaces.cli.output import console, table
from mlgate.interfaces.sdk.client import ApiError, Client
from mlgate.ports import free_port
from mlgate.runtime import stop
from mlgate.services.setup import initialize
from mlgate.snapshot import pack, pack_data

SERVER_START_TIMEOUT_S = 180.0
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "diabetes"

# The demo accounts: name -> (roles, environments).
ACCOUNTS = {
    "dana": (["data-scientist"], ["dev"]),
    "lee": (["lead-data-scientist"], ["dev", "staging"]),
    "sam": (["software-developer"], ["staging", "production"]),
    "olu": (["operator"], ["staging", "production"]),
}

LABEL_AND_IDS = {"Diabetic", "PatientID"}


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


# The demo's policy: model validation on held-out data in staging; the staging test endpoint; production's
# endpoint, to which versions that pass gate B roll out by canary, watched against SLOs.

# What a data scientist runs in a notebook: plain MLflow, pointed at an environment by two variables.
PLAIN_MLFLOW_RUN = textwrap.dedent(
    """
    import mlflow
    mlflow.set_experiment("diabetes-exploration")
    with mlflow.start_run(run_name="first-look") as run:
        mlflow.log_param("reg_rate", 0.01)
        mlflow.log_metric("AUC", 0.87)
        mlflow.log_text("patients: 10000", "notes.txt")
    print(run.info.run_id)
    """
)


class MailSink:
    """A local SMTP server (aiosmtpd) that keeps what it receives, standing in for the team's mail."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.messages: list[tuple[list[str], str]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
                content = (
                    envelope.content.decode(errors="replace")
                    if isinstance(envelope.content, bytes)
                    else envelope.content
                )
                sink.messages.append((list(envelope.rcpt_tos), content))
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def wait_for(self, recipient: str, *, timeout_s: float, subject_contains: str = "") -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for recipients, content in self.messages:
                if recipient in recipients and subject_contains in email.message_from_string(content)["Subject"]:
                    return content
            time.sleep(0.2)
        raise MlgateError(f"no email for {recipient} reached the mail sink in {timeout_s:.0f} s")

    def stop(self) -> None:
        self._controller.stop()


class _Indented:
    """The job's log, indented under its step, a whole line at a time."""

    def __init__(self) -> None:
        self._pending = ""

    def write(self, text: str) -> None:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            console.print(f"    {line}", markup=False, highlight=False)

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        if self._pending:
            self.write("\n")


class Demo:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config_path = folder / "mlgate.yaml"
        self.server: subprocess.Popen[bytes] | None = None
        self.tokens: dict[str, str] = {}
        self.url = ""
        self._step = 0
        self.project = folder / "diabetes"
        self.run_id = ""
        self.version: dict[str, Any] = {}
        self.mail: MailSink
        self.endpoint_url = ""
        self.production_url = ""

    def step(self, title: str) -> None:
        self._step += 1
        console.rule(f"[bold]{self._step}. {title}")

    def client(self, user: str) -> Client:
        return Client(self.url, self.tokens[user])

    # -- steps ---------------------------------------------------------------------------------

    def setup(self) -> None:
        self.step("Setup: a new project home with three environments")
        port = free_port()
        self.mail = MailSink()
        config = (
            default_config_text()
            .replace("port: 8750", f"port: {port}")
            .replace("  public_url: null", f"  public_url: http://127.0.0.1:{port}")
        )
        config += (
            "\n# The demo's approvers get email at a local mail sink.\n"
            "notifications:\n  smtp:\n    host: 127.0.0.1\n"
            f"    port: {self.mail.port}\n    sender: mlgate@example.com\n"
        )
        config += DEMO_POLICY + MONITOR_POLICY
        self.config_path.write_text(config)
        settings = load_settings(self.config_path)
        report = initialize(settings)
        for line in report.created:
            console.print(f"  created {line}")
        assert report.admin_token is not None
        self.tokens["admin"] = report.admin_token

    def start_server(self) -> None:
        self.step("Start the control plane (and one MLflow tracking server per environment)")
        settings = load_settings(self.config_path)
        log_path = settings.logs_dir / "server.log"
        with log_path.open("ab") as log:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "mlgate", "server", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.folder,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{settings.server_port}"
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if self.server.poll() is not None:
                raise MlgateError(f"the server exited with code {self.server.returncode}; see {log_path}")
            try:
                Client(self.url).health()
                break
            except MlgateError:
                if time.monotonic() > deadline:
                    raise MlgateError(f"the server did not answer in time; see {log_path}") from None
                time.sleep(0.5)
        console.print(f"  server at {self.url} (log: {log_path})")
        console.print(
            "  one MLflow tracking server per environment, on a Unix socket only the server opens; "
            f"jobs, checks and serving hosts in the sandbox ({settings.execution.sandbox})"
        )

    def create_accounts(self) -> None:
        self.step("Setup: the team's accounts, each bound to its environments")
        with self.client("admin") as admin:
            for name, (roles, envs) in ACCOUNTS.items():
                created = admin.create_user(name, roles=roles, environments=envs, email=f"{name}@example.com")
                # The admin's token signs them in; they make their own, the only kind that decides a gate.
                with Client(self.url, created["token"]["token"]) as person:
                    self.tokens[name] = person.create_token(name="demo")["token"]
        rows = [["admin", "admin", "all", self.tokens["admin"]]]
        rows += [[n, ", ".join(r), ", ".join(e), self.tokens[n]] for n, (r, e) in ACCOUNTS.items()]
        console.print(
            "  each person signed in with the token the admin created and made their own: "
            "a token someone else created decides no gate"
        )
        table("demo accounts (tokens are shown once)", ["user", "roles", "environments", "token"], rows)

    def show_environments(self) -> None:
        self.step("Environments behind one door")
        with self.client("dana") as dana:
            envs = dana.environments()
        table(
            None,
            ["env", "tracking URI", "artifact root", "dana's roles"],
            [[e["name"], e["tracking_uri"], e["artifact_root"], ", ".join(e["my_roles"]) or "-"] for e in envs],
        )

    def _plain_mlflow(self, user: str, env: str) -> subprocess.CompletedProcess[str]:
        environ = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"{self.url}/mlflow/{env}",
            "MLFLOW_TRACKING_TOKEN": self.tokens[user],
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        }
        return subprocess.run(
            [sys.executable, "-c", PLAIN_MLFLOW_RUN],
            env=environ,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def inner_loop_plain_mlflow(self) -> None:
        self.step("Inner loop: dana logs a run to dev with plain MLflow code and her token")
        done = self._plain_mlflow("dana", "dev")
        if done.returncode != 0:
            raise MlgateError(f"logging to dev failed:\n{done.stderr[-2000:]}")
        console.print(f"  run {done.stdout.strip().splitlines()[-1]} logged in dev")
        self.step("The same code pointed at production is refused: only promotion writes there")
        refused = self._plain_mlflow("dana", "production")
        if refused.returncode == 0:
            raise MlgateError("a write to production through the MLflow door was accepted")
        reason = re.search(r"'message': [\"'](.+?)[\"'], 'details'", refused.stderr)
        console.print(f"  refused (403): {reason.group(1) if reason else refused.stderr.strip()[-300:]}")

    def prepare_project(self) -> None:
        self.step("The team's model repository: the diabetes project, and its training data")
        if not EXAMPLE.is_dir():
            raise MlgateError(f"the example project is missing: {EXAMPLE}")
        shutil.copytree(
            EXAMPLE, self.project, ignore=shutil.ignore_patterns("data", "mlruns", "__pycache__", ".*_cache")
        )
        subprocess.run(["git", "init", "-q"], cwd=self.project, check=True, capture_output=True)
        self.commit("diabetes model")
        data = self.folder / "data" / "diabetes.csv"
        generate = [sys.executable, "-m", "diabetes.data", "--rows", "10000", "--seed", "0", "--out", str(data)]
        environ = {**os.environ, "PYTHONPATH": str(self.project / "src")}
        done = subprocess.run(generate, env=environ, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise MlgateError(f"generating the data failed:\n{done.stderr[-2000:]}")
        console.print(f"  {done.stdout.strip()}")
        with self.client("dana") as dana:
            asset = dana.register_data("dev", "diabetes-train", pack_data(data, limit=1 << 30), source=str(data))
        console.print(
            f"  dana registered data asset {asset['name']}@{asset['version']} in dev: {asset['rows']} rows, "
            f"sha256 {asset['sha256'][:12]}"
        )
        holdout = self.folder / "data" / "diabetes-holdout.csv"
        generate = [sys.executable, "-m", "diabetes.data", "--rows", "2000", "--seed", "1", "--out", str(holdout)]
        done = subprocess.run(generate, env=environ, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise MlgateError(f"generating the held-out data failed:\n{done.stderr[-2000:]}")
        with self.client("lee") as lee:
            kept = lee.register_data("staging", "diabetes-holdout", pack_data(holdout, limit=1 << 30))
        console.print(
            f"  lee registered held-out data {kept['name']}@{kept['version']} in staging ({kept['rows']} rows), "
            "on which model validation scores every candidate"
        )

    def patients(self, *, drift: bool, rows: int = 2000) -> tuple[list[str], list[list[Any]]]:
        """Patients as the web app sees them (the features, without the label), from the example's generator."""
        out = self.folder / "data" / f"patients-{'drifted' if drift else 'normal'}.csv"
        generate = [sys.executable, "-m", "diabetes.data", "--rows", str(rows), "--seed", "7", "--out", str(out)]
        environ = {**os.environ, "PYTHONPATH": str(self.project / "src")}
        done = subprocess.run([*generate, *(["--drift"] if drift else [])], env=environ, capture_output=True, text=True)
        if done.returncode != 0:
            raise MlgateError(f"generating patients failed:\n{done.stderr[-2000:]}")
        with out.open() as handle:
            table = list(csv.reader(handle))
        header, body = table[0], table[1:]
        features = [i for i, name in enumerate(header) if name not in LABEL_AND_IDS]
        columns = [header[i] for i in features]
        return columns, [[_number(line[i]) for i in features] for line in body]

    def commit(self, message: str) -> None:
        for command in (["add", "-A"], ["commit", "-qm", message]):
            git = ["git", "-c", "user.name=dana", "-c", "user.email=dana@example.com", *command]
            subprocess.run(git, cwd=self.project, check=True, capture_output=True)

    def train(self) -> None:
        self.step("Inner loop: dana trains in dev (`mlgate train`): code snapshot, job, tracked run")
        snapshot = pack(self.project)
        with self.client("dana") as dana:
            uploaded = dana.upload_snapshot("dev", snapshot.data, git_commit=snapshot.git_commit, git_dirty=False)
            job = dana.submit_job("dev", snapshot=uploaded["sha256"])
            commit = (snapshot.git_commit or "")[:12]
            console.print(f"  code snapshot {snapshot.sha256[:12]} (git commit {commit}); job {job['id']}:")
            log = _Indented()
            job = follow(dana, "dev", job["id"], out=log)
            log.finish()
        if job["state"] != "succeeded":
            raise MlgateError(f"training job {job['id']} {job['state']}: {job['error']}")
        self.run_id = job["run_ids"][0]
        console.print(f"  job {job['id']} succeeded; MLflow run {self.run_id} in dev")

    def register(self) -> None:
        self.step("Continuous integration: register the run's model as diabetes (`mlgate register`)")
        with self.client("dana") as dana:
            version = dana.register_model("dev", name="diabetes", run_id=self.run_id)
        self.version = version
        metrics = version["lineage"].get("metrics", {})
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if isinstance(v, int | float))
        profiled = "baseline profile made" if version["profile"] else "no baseline profile"
        console.print(f"  diabetes version {version['version']} in dev; run metrics: {shown}")
        console.print(f"  digest {version['digest']}")
        console.print(f"  lineage: code {version['lineage'].get('snapshot_sha256', '')[:12]}, {profiled}")

    def gate_a(self) -> None:
        request_id = self.version["request_id"]
        self.step(f"Gate A: registering opened promotion request {request_id}; lee, the lead, is emailed")
        raw = self.mail.wait_for("lee@example.com", timeout_s=60)
        message = email.message_from_string(raw)
        body = message.get_payload(decode=True)
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(message.get_payload())
        shown = [f"{key}: {message[key]}" for key in ("From", "To", "Subject", "Date")]
        console.print("  the mail sink received:")
        for line in [*shown, "", *text.splitlines()]:
            console.print(f"    | {line}", markup=False, highlight=False)
        self.step("Gate A: dana may not approve her own model")
        try:
            with self.client("dana") as dana:
                dana.decide(request_id, approve=True)
            raise MlgateError("dana's approval of her own model was accepted")
        except ApiError as refused:
            console.print(f"  refused ({refused.status_code}): {refused.message}")
        self.step("Gate A: lee reviews the evidence and approves; the server copies the model into staging")
        with self.client("lee") as lee:
            request = lee.promotion_request(request_id)
            console.print(
                f"  evidence: digest {request['evidence']['digest'][:16]}…, metrics {request['evidence']['metrics']}"
            )
            lee.decide(request_id, approve=True, comment="metrics and lineage look right")
            deadline = time.monotonic() + 120
            while request["state"] not in ("promoted", "failed") and time.monotonic() < deadline:
                time.sleep(0.5)
                request = lee.promotion_request(request_id)
            if request["state"] != "promoted":
                raise MlgateError(f"request {request_id} ended {request['state']}: {request['failure']}")
            staged = lee.model_version("staging", "diabetes", request["target_version"])
        self.version["staged"] = staged["version"]
        same = "the same digest" if staged["digest"] == self.version["digest"] else "A DIFFERENT DIGEST"
        console.print(f"  diabetes version {staged['version']} in staging, {same}: {staged['digest']}")

    def serve_in_staging(self) -> None:
        self.step("Outer loop: sam deploys the promoted version to the staging endpoint's blue slot")
        version = self.version["staged"]
        with self.client("sam") as sam:
            shown = sam.deploy("staging", "diabetes", model="diabetes", version=version, slot="blue", traffic=100)
            key = sam.rotate_key("staging", "diabetes", "primary")["key"]
            example = sam.model_version("staging", "diabetes", version)["input_example"]
        slot = next(s for s in shown["slots"] if s["slot"] == "blue")
        console.print(
            f"  slot {slot['slot']}: diabetes v{slot['version']}, {slot['traffic']}% of the traffic, "
            f"ready: {slot['ready']} (serving host pid {shown['host']['pid']})"
        )
        console.print(f"  a new primary key for the endpoint (shown once): {key}")
        self.step("Outer loop: score the model's input example at the endpoint, with its key")
        payload = (
            {"dataframe_split": example} if isinstance(example, dict) and "columns" in example else {"inputs": example}
        )
        answer = httpx.post(shown["url"], json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        if answer.status_code != 200:
            raise MlgateError(f"the staging endpoint answered {answer.status_code}: {answer.text[:300]}")
        console.print(f"  POST {shown['url']}")
        console.print(f"  request:  {json.dumps(payload)[:200]}", markup=False, highlight=False)
        console.print(
            f"  answer:   {answer.text} (slot {answer.headers.get('mlgate-deployment')}, "
            f"request id {answer.headers.get('x-request-id')})",
            markup=False,
            highlight=False,
        )
        self.endpoint_url = shown["url"]

    def audit(self) -> None:
        self.step("Audit: every change is in the hash-chained log")
        with self.client("admin") as admin:
            events = admin.audit(limit=10)
            result = admin.verify_audit()
        table(
            None,
            ["seq", "actor", "action", "env", "subject"],
            [[e["seq"], e["actor"], e["action"], e["environment"] or "", e["subject"] or ""] for e in events],
        )
        if not result["ok"]:
            raise MlgateError(f"audit verify failed at {result['broken_seq']}: {result['reason']}")
        console.print(f"  audit verify: OK ({result['events']} events)")

    def shutdown(self) -> None:
        settings = load_settings(self.config_path)
        stopped = stop(settings)
        if self.server is not None:
            self.server.wait(timeout=30)
        for line in stopped:
            console.print(f"  stopped {line}")
        if hasattr(self, "mail"):
            self.mail.stop()
