"""mlgate.yaml: defaults, paths relative to the file, errors naming the key and what was expected."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlgate.config import default_config_text, load_settings, parse_config
from mlgate.domain.environments import EnvironmentKind
from mlgate.errors import ConfigError
from tests.support.project import Project


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mlgate.yaml"
    config.write_text(text)
    return config


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))

    assert settings.config_path == (tmp_path / "mlgate.yaml").resolve()
    assert settings.home == (tmp_path / ".mlgate").resolve()
    assert settings.database_url == f"sqlite:///{settings.home / 'control.db'}"
    assert (settings.server_host, settings.server_port, settings.public_url) == ("127.0.0.1", 8750, None)
    assert settings.env_names == ["dev", "staging", "production"]
    assert [env.kind for env in settings.environments] == [
        EnvironmentKind.DEVELOPMENT,
        EnvironmentKind.STAGING,
        EnvironmentKind.PRODUCTION,
    ]
    assert [env.index for env in settings.environments] == [0, 1, 2]
    dev = settings.environment("dev")
    env_dir = settings.home / "envs" / "dev"
    assert dev.tracking_store == f"sqlite:///{env_dir / 'mlflow.db'}"
    assert (dev.artifact_root, dev.data_dir, dev.serving_dir, dev.monitoring_dir) == (
        env_dir / "artifacts",
        env_dir / "data",
        env_dir / "serving",
        env_dir / "monitoring",
    )
    assert dev.serving_port == 0


def test_the_default_config_text_is_commented_and_means_the_defaults(tmp_path: Path) -> None:
    assert sum(line.lstrip().startswith("#") for line in default_config_text().splitlines()) >= 5
    written = load_settings(write(tmp_path / "written", default_config_text()))
    empty = load_settings(write(tmp_path / "empty", ""))
    assert written.raw == empty.raw
    assert written.env_names == empty.env_names == ["dev", "staging", "production"]


def test_paths_resolve_relative_to_the_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "project",
        "home: state/here\nenvironments:\n  - name: dev\n    artifact_root: ../shared/artifacts\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    settings = load_settings(Path("../project/mlgate.yaml"))

    assert settings.home == (tmp_path / "project" / "state" / "here").resolve()
    assert settings.database_url == f"sqlite:///{settings.home / 'control.db'}"
    assert settings.environment("dev").artifact_root == (tmp_path / "shared" / "artifacts").resolve()
    assert settings.config_path == config.resolve()


def test_the_nearest_config_above_the_working_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "environments:\n  - name: only\n")
    nested = tmp_path / "src" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)

    settings = load_settings()

    assert settings.env_names == ["only"]
    assert settings.home == (tmp_path / ".mlgate").resolve()


def test_one_environment_is_development_and_two_are_development_then_production(tmp_path: Path) -> None:
    one = load_settings(write(tmp_path / "one", "environments:\n  - name: lab\n"))
    two = load_settings(write(tmp_path / "two", "environments:\n  - name: lab\n  - name: live\n"))
    assert one.environments[0].kind is EnvironmentKind.DEVELOPMENT
    assert [env.kind for env in two.environments] == [EnvironmentKind.DEVELOPMENT, EnvironmentKind.PRODUCTION]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://mlgate:secret@db.example.com:5432/mlgate",
        "postgresql://mlgate@localhost/mlgate",
    ],
)
def test_a_postgresql_url_is_accepted(tmp_path: Path, url: str) -> None:
    settings = load_settings(write(tmp_path, f"database:\n  url: {url}\n"))
    assert settings.database_url == url


def test_explicit_values_are_kept(tmp_path: Path) -> None:
    text = (
        "server:\n  host: 0.0.0.0\n  port: 9000\n  public_url: https://mlgate.example.com/\n"
        "environments:\n  - name: dev\n    serving_port: 8001\n    tracking_store: sqlite:////x/dev.db\n"
        "  - name: prod\n"
    )
    settings = load_settings(write(tmp_path, text))
    assert (settings.server_host, settings.server_port) == ("0.0.0.0", 9000)
    assert settings.public_url == "https://mlgate.example.com"  # trailing slash dropped
    assert settings.environment("dev").serving_port == 8001
    assert settings.environment("dev").tracking_store == "sqlite:////x/dev.db"


# (case, yaml text, fragments the message must contain: the key path and what was expected)
INVALID = [
    ("unknown top-level key", "colour: red\n", ["colour", "unknown key"]),
    (
        "unknown key in an environment",
        "environments:\n  - name: dev\n    colour: red\n",
        ["environments[0].colour", "unknown key"],
    ),
    (
        "serving_port not a number",
        "environments:\n  - name: dev\n    serving_port: abc\n",
        ["environments[0].serving_port", "valid integer", "'abc'"],
    ),
    ("server port too large", "server:\n  port: 70000\n", ["server.port", "65535", "70000"]),
    (
        "serving_port too large",
        "environments:\n  - name: dev\n    serving_port: 70000\n",
        ["environments[0].serving_port", "65535"],
    ),
    (
        "duplicate environment names",
        "environments:\n  - name: dev\n  - name: prod\n  - name: dev\n",
        ["environments", "unique", "dev"],
    ),
    ("empty environments list", "environments: []\n", ["environments", "at least one environment"]),
    ("environments not a list", "environments: dev\n", ["environments", "list"]),
    (
        "bad environment name",
        "environments:\n  - name: dev\n  - name: Dev!\n",
        ["environments[1].name", "lowercase", "'Dev!'"],
    ),
    ("unsupported database", "database:\n  url: mysql://x\n", ["database.url", "postgresql", "mysql://x"]),
    ("public_url not http", "server:\n  public_url: ftp://x\n", ["server.public_url", "http://"]),
    ("not a mapping: a list", "- dev\n- prod\n", ["expected a mapping"]),
    ("not a mapping: a scalar", "just words\n", ["expected a mapping"]),
    ("invalid YAML syntax", "server:\n  port: [8750\n", ["not valid YAML", "line"]),
]


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_configs_fail_naming_the_key_and_what_was_expected(text: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="team.yaml")
    message = caught.value.message
    assert message.startswith("team.yaml: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "(top level)" not in message  # problems are reported where they are, not at the top


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("colour: red\nserver:\n  port: 70000\n")
    assert sorted(caught.value.details["problems"]) == [
        "colour: unknown key",
        "server.port: Input should be less than or equal to 65535 (got 70000)",
    ]


def test_a_value_the_validator_names_is_not_repeated() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("monitors:\n  - name: drift\n    endpoint: web\n    window: 5 fortnights\n")
    assert caught.value.details["problems"] == [
        "monitors[0].window: expected a lookback like 30m, 1h, 1d or '5000 rows', got '5 fortnights'"
    ]


def test_values_past_what_the_loader_can_hold_are_refused_by_key() -> None:
    cases = {
        "monitors:\n  - {name: m, endpoint: web, window: 99999999999999999d}\n": "monitors[0].window: expected a "
        "duration of at most 3650 days, got '99999999999999999d'",
        "monitors:\n  - {name: m, endpoint: web, schedule: 9999999m}\n": "monitors[0].schedule: expected a duration",
        'home: "a\\0b"\n': "home: expected a path, got one with a NUL character",
        "home: 2020-13-01\n": "not valid YAML: ValueError: month must be in 1..12",
        "server: {port: !!int 0x}\n": "not valid YAML: ValueError",
        'server: {port: !!int ""}\n': "not valid YAML: IndexError",
        'server: {host: !!bool ""}\n': "not valid YAML: KeyError",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError) as caught:
            parse_config(text)
        assert expected in caught.value.message, (text, caught.value.message)


def test_load_settings_names_the_file_in_its_errors(tmp_path: Path) -> None:
    config = write(tmp_path, "server:\n  port: 70000\n")
    with pytest.raises(ConfigError, match=r"server\.port") as caught:
        load_settings(config)
    assert caught.value.message.startswith(f"{config}: ")


def test_load_settings_without_a_config_says_to_run_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no mlgate\.yaml here or in any parent folder; run `mlgate init`"):
        load_settings()


def test_load_settings_of_a_missing_file_says_it_cannot_read_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "mlgate.yaml"
    with pytest.raises(ConfigError, match=r"cannot read .*mlgate\.yaml: No such file"):
        load_settings(missing)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("environments:\n  - name: dev\n    serving_port: abc\n", "environments[0].serving_port"),
        ("server: [\n", "not valid YAML"),
    ],
    ids=["invalid value", "invalid syntax"],
)
def test_mlgate_server_with_an_invalid_config_exits_with_the_message(tmp_path: Path, text: str, expected: str) -> None:
    config = write(tmp_path / "project", text)

    result = Project(config.parent).run("server", "--port", "0")

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {config}: ")
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (config.parent / ".mlgate").exists()  # nothing was started or created


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "notifications:\n  smtp: {host: h, sender: s, username: u}\n",
            "notifications.smtp: username and password_env",
        ),
        ("gates:\n  - {from: dev, to: production, approver_role: operator}\n", "gates[0]: a gate leads from"),
        ("gates:\n  - {from: dev, to: qa, approver_role: operator}\n", "gates[0].to: unknown environment 'qa'"),
        ("gates:\n  - {from: dev, to: staging, approver_role: wizard}\n", "gates[0].approver_role: expected one of"),
        ("endpoints:\n  qa:\n    - name: web\n", "endpoints.qa: unknown environment"),
        (
            "endpoints:\n  staging:\n    - name: web\n    - name: web\n",
            "endpoints.staging: duplicate endpoint name(s) web",
        ),
        ("endpoints:\n  staging:\n    - name: 'no spaces'\n", "endpoints.staging[0].name: expected letters"),
        ("endpoints:\n  staging:\n    - {name: web, colour: red}\n", "endpoints.staging[0].colour: unknown key"),
        ("serving:\n  workers: 0\n", "serving.workers: Input should be greater than or equal to 1"),
        ("serving:\n  max_batch_size: lots\n", "serving.max_batch_size"),
        ("serving:\n  header_timeout_s: 0\n", "serving.header_timeout_s: Input should be greater than 0"),
        ("serving:\n  body_timeout_s: 7200\n", "serving.body_timeout_s: Input should be less than or equal to 3600"),
        ("serving:\n  max_connections: 0\n", "serving.max_connections: Input should be greater than or equal to 1"),
        ("serving:\n  max_concurrency: 100000\n", "serving.max_concurrency: Input should be less than or equal"),
        ("serving:\n  max_connections: 8\n  max_concurrency: 9\n", "max_concurrency (9) must not exceed"),
        ("serving:\n  metrics_token_env: 'no spaces'\n", "serving.metrics_token_env: String should match"),
    ],
)
def test_policy_sections_name_the_bad_key(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "mlgate.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(config)


def test_serving_and_endpoints_sections_are_read(tmp_path: Path) -> None:
    config = tmp_path / "mlgate.yaml"
    config.write_text(
        "serving: {workers: 2, max_batch_size: 128, max_wait_ms: 2.5}\n"
        "endpoints:\n  production:\n    - {name: web, description: the web app}\n"
    )
    settings = load_settings(config)
    assert (settings.serving.workers, settings.serving.max_batch_size, settings.serving.max_wait_ms) == (2, 128, 2.5)
    serving = settings.serving  # what callers may take of a host: the defaults
    assert (serving.header_timeout_s, serving.body_timeout_s, serving.max_connections, serving.max_concurrency) == (
        10.0,
        30.0,
        512,
        128,
    )
    assert serving.metrics_token_env == "MLGATE_METRICS_TOKEN"
    assert [(e.name, e.description) for e in settings.endpoints["production"]] == [("web", "the web app")]


def test_default_gates_follow_the_environments(tmp_path: Path) -> None:
    config = tmp_path / "mlgate.yaml"
    config.write_text("")
    gates = load_settings(config).gates
    assert [(g.name, g.source, g.target, g.approver_role.value) for g in gates] == [
        ("A", "dev", "staging", "lead-data-scientist"),
        ("B", "staging", "production", "software-developer"),
    ]
    assert gates[1].checks == ("lint", "unit-tests", "model-validation", "endpoint-tests") and not gates[0].checks
