"""Data assets through the CLI and the REST API of a running server: versions of CSV files and Parquet
folders, content addressing, what each version keeps, who may register, and bad input."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mlgate.domain.jobs import DataRef
from mlgate.services.training import data_assets
from mlgate.snapshot import pack_data
from tests.support.project import LiveServer, Project, bearer, start_server, stop_server
from tests.support.tarballs import tgz


@pytest.fixture(scope="module")
def server(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("data-assets") / "project"
    live = start_server(project_template.copy(folder))
    yield live
    stop_server(live)


def mlgate(server: LiveServer, *args: str, user: str = "dana") -> tuple[int, str, str]:
    done = server.project.run(*args, token=server.project.tokens[user])
    return done.returncode, done.stdout, done.stderr


def put(server: LiveServer, name: str, archive: bytes, *, user: str = "dana", env: str = "dev") -> httpx.Response:
    return httpx.put(
        f"{server.url}/api/v1/environments/{env}/data/{name}",
        content=archive,
        headers=bearer(server.project.tokens[user]) | {"Content-Type": "application/gzip"},
        timeout=60,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_csv_file_gets_versions_that_keep_their_bytes(server: LiveServer, tmp_path: Path) -> None:
    csv = tmp_path / "patients.csv"
    csv.write_text("PatientID,Age,Diabetic\n1,50,1\n2,31,0\n3,62,1\n")
    original = csv.read_bytes()

    code, out, err = mlgate(server, "data", "register", "patients", str(csv), "--env", "dev")
    assert code == 0, err
    assert "patients@1 in dev: 3 rows" in out
    assert "csv; columns PatientID, Age, Diabetic" in out

    # The same bytes again: the same version, answered 200 rather than 201.
    again = put(server, "patients", pack_data(csv, limit=1 << 20))
    assert again.status_code == 200, again.text
    assert again.json()["version"] == 1

    csv.write_text(csv.read_text() + "4,45,0\n")
    code, out, err = mlgate(server, "data", "register", "patients", str(csv), "--env", "dev", "--json")
    assert code == 0, err
    second = json.loads(out)
    assert (second["version"], second["rows"], second["format"]) == (2, 4, "csv")
    assert second["source"] == str(csv.resolve())
    assert second["created_by"] == "dana"

    # Version 1 still holds the first bytes, whatever happened to the file since.
    code, out, err = mlgate(server, "data", "show", "patients@1", "--env", "dev", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["rows"] == 3
    assert first["files"] == [
        {"path": "patients.csv", "sha256": hashlib.sha256(original).hexdigest(), "size": len(original)}
    ]
    assert first["columns"] == [
        {"name": "PatientID", "type": "int64"},
        {"name": "Age", "type": "int64"},
        {"name": "Diabetic", "type": "int64"},
    ]
    assert first["sha256"] != second["sha256"]
    db = server.project.db()
    try:
        asset = data_assets.resolve(db, "dev", DataRef("patients", 1))
    finally:
        db.dispose()
    copy = data_assets.materialize(server.project.settings.environment("dev"), asset, tmp_path / "materialized")
    assert copy.read_bytes() == original

    code, out, err = mlgate(server, "data", "show", "patients", "--env", "dev")
    assert code == 0, err
    assert "patients@2 in dev: 4 rows" in out
    assert "PatientID" in out and "int64" in out

    code, out, err = mlgate(server, "data", "list", "--env", "dev", "--json")
    assert code == 0, err
    versions = [(a["name"], a["version"], a["rows"]) for a in json.loads(out) if a["name"] == "patients"]
    assert versions == [("patients", 1, 3), ("patients", 2, 4)]
    code, out, err = mlgate(server, "data", "list", "--env", "dev", "--name", "patients")
    assert code == 0, err
    assert "data assets in dev" in out and out.count("patients") == 2


def test_a_folder_of_parquet_files_is_one_version(server: LiveServer, tmp_path: Path) -> None:
    folder = tmp_path / "visits"
    (folder / "month=02").mkdir(parents=True)
    pd.DataFrame({"PatientID": [1, 2], "BMI": [31.5, 22.0]}).to_parquet(folder / "part-0.parquet")
    pd.DataFrame({"PatientID": [3, 4, 5], "BMI": [40.1, 19.9, 27.3]}).to_parquet(folder / "month=02" / "part-1.parquet")
    (folder / "_SUCCESS").write_text("")  # what Spark leaves beside its output: not data, not uploaded

    created = put(server, "visits", pack_data(folder, limit=1 << 24))
    assert created.status_code == 201, created.text
    asset = created.json()
    assert (asset["version"], asset["format"], asset["rows"]) == (1, "parquet", 5)
    assert sorted(f["path"] for f in asset["files"]) == ["month=02/part-1.parquet", "part-0.parquet"]
    assert [c["name"] for c in asset["columns"]] == ["PatientID", "BMI"]

    code, out, err = mlgate(server, "data", "register", "visits", str(folder), "--env", "dev")
    assert code == 0, err
    assert "visits@1 in dev: 5 rows" in out  # same bytes, same version

    pd.DataFrame({"PatientID": [6], "BMI": [33.3]}).to_parquet(folder / "part-2.parquet")
    code, out, err = mlgate(server, "data", "register", "visits", str(folder), "--env", "dev")
    assert code == 0, err
    assert "visits@2 in dev: 6 rows" in out


def _parquet() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"a": [1, 2]}).to_parquet(buffer)
    return buffer.getvalue()


# (asset name, upload, status, message); the test ids are the names (an archive's gzip header holds a time,
# which would make the ids differ between two collections).
BAD_UPLOADS = [
    ("notes", tgz({"notes.txt": b"a,b\n1,2\n"}), 422, "'notes.txt' is neither CSV nor Parquet"),
    ("mixed", tgz({"a.csv": b"a\n1\n", "b.parquet": _parquet()}), 422, "all CSV or all Parquet, not both"),
    ("broken", tgz({"broken.parquet": b"PAR1 this is not parquet"}), 422, "cannot read broken.parquet as parquet"),
    ("empty", tgz({"empty.csv": b""}), 422, "cannot read empty.csv as csv"),
    ("escape", tgz({"../escape.csv": b"a\n1\n"}), 422, "refused data upload: '../escape.csv' points outside"),
    ("garbage", b"not a tarball", 422, "not a valid data upload"),
    ("Patients", tgz({"p.csv": b"a\n1\n"}), 422, "invalid data asset name 'Patients'"),
    ("nothing", b"", 422, "the data upload is empty"),
]


@pytest.mark.parametrize(("name", "archive", "status", "message"), BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_bad_uploads_get_a_clear_error_and_register_nothing(
    server: LiveServer, name: str, archive: bytes, status: int, message: str
) -> None:
    refused = put(server, name, archive)

    assert refused.status_code == status, refused.text
    assert message in refused.json()["error"]["message"]
    listed = httpx.get(
        f"{server.url}/api/v1/environments/dev/data",
        params={"name": name},
        headers=bearer(server.project.tokens["vic"]),
    )
    assert listed.json()["count"] == 0


def test_bad_references_from_the_cli(server: LiveServer, tmp_path: Path) -> None:
    code, _, err = mlgate(server, "data", "register", "ghost", str(tmp_path / "nowhere.csv"), "--env", "dev")
    assert code == 1
    assert "no such file or folder" in err and "nowhere.csv" in err

    csv = tmp_path / "ok.csv"
    csv.write_text("a\n1\n")
    code, _, err = mlgate(server, "data", "register", "Bad Name", str(csv), "--env", "dev")
    assert code == 1
    assert "422" in err and "invalid data asset name 'Bad Name'" in err

    mlgate(server, "data", "register", "known", str(csv), "--env", "dev")
    code, _, err = mlgate(server, "data", "show", "known@99", "--env", "dev")
    assert code == 1
    assert "404" in err and "no data asset 'known@99' in 'dev'" in err
    code, _, err = mlgate(server, "data", "show", "known@latest", "--env", "dev")
    assert code == 1
    assert "422" in err and "expected NAME or NAME@VERSION" in err


def test_data_is_registered_by_training_roles_in_dev_and_by_the_lead_in_staging(
    server: LiveServer, tmp_path: Path
) -> None:
    csv = tmp_path / "roles.csv"
    csv.write_text("a\n1\n")
    archive = pack_data(csv, limit=1 << 20)

    viewer = put(server, "roles", archive, user="vic")
    assert viewer.status_code == 403
    assert "vic may not do this" in viewer.json()["error"]["message"]
    code, _, err = mlgate(server, "data", "register", "roles", str(csv), "--env", "dev", user="vic")
    assert code == 1 and "403" in err
    # staging: the lead's held-out data for model validation; nobody else's
    assert put(server, "roles", archive, user="olu", env="staging").status_code == 403
    assert put(server, "roles", archive, user="sam", env="staging").status_code == 403
    assert put(server, "roles", archive, user="lee", env="staging").status_code == 201
    assert put(server, "roles", archive, user="olu", env="production").status_code == 403  # production: nobody

    assert put(server, "roles", archive, user="lee").status_code == 201  # a lead data scientist in dev
    shown = httpx.get(f"{server.url}/api/v1/environments/dev/data/roles", headers=bearer(server.project.tokens["vic"]))
    assert shown.status_code == 200 and shown.json()["created_by"] == "lee"
