"""The model-folder file references rule (`mlgate.domain.model_files`) and how the digest sees symlinks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlgate.domain.digest import tree_digest, tree_stat
from mlgate.domain.model_files import check_model_files, outward_symlinks, referenced_paths
from mlgate.errors import ValidationError


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "code").mkdir(parents=True)
    for name in ("MLmodel", "model.pkl", "input_example.json", "conda.yaml", "python_env.yaml", "code/util.py"):
        (folder / name).write_text(name)
    return folder


def _mlmodel(**sklearn: Any) -> dict[str, Any]:
    return {
        "artifact_path": "clf",  # the run's artifact path, not a file of the folder
        "run_id": "0123",
        "metadata": {"owner": "/home/dana"},
        "flavors": {
            "python_function": {
                "loader_module": "mlflow.sklearn",
                "model_path": "model.pkl",
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "artifacts": {"weights": {"path": "model.pkl", "uri": "/tmp/where/it/was/logged"}},
                "python_version": "3.11.7",
            },
            "sklearn": {"pickled_model": "model.pkl", "code": "code", "sklearn_version": "1.5.0", **sklearn},
        },
        "saved_input_example_info": {"artifact_path": "input_example.json", "type": "dataframe"},
    }


def test_an_ordinary_model_folder_passes_and_every_file_it_names_is_found(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    check_model_files(folder, _mlmodel())
    named = dict(referenced_paths(folder, _mlmodel()))
    assert named["flavors.sklearn.pickled_model"] == "model.pkl"
    assert named["flavors.python_function.env.virtualenv"] == "python_env.yaml"
    assert named["flavors.python_function.artifacts.weights.path"] == "model.pkl"
    assert named["saved_input_example_info.artifact_path"] == "input_example.json"
    assert named["flavors.sklearn.code"] == "code"
    assert "flavors.python_function.artifacts.weights.uri" not in named  # informational, never opened
    assert not any(key.startswith(("metadata", "artifact_path", "run_id")) for key in named)


@pytest.mark.parametrize(
    ("changes", "key", "said"),
    [
        ({"pickled_model": "../elsewhere/model.pkl"}, "flavors.sklearn.pickled_model", "'..'"),
        ({"pickled_model": "code/../../x.pkl"}, "flavors.sklearn.pickled_model", "'..'"),
        ({"pickled_model": "/etc/passwd"}, "flavors.sklearn.pickled_model", "absolute path"),
        ({"code": ["code", "/srv/lib"]}, "flavors.sklearn.code[1]", "absolute path"),
        # an unknown key is checked too when its value exists as a path
        ({"weights_file": "/etc/hostname"}, "flavors.sklearn.weights_file", "absolute path"),
    ],
)
def test_a_path_that_leaves_the_folder_is_refused_naming_key_and_path(
    tmp_path: Path, changes: dict[str, Any], key: str, said: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        check_model_files(_folder(tmp_path), _mlmodel(**changes))
    assert key in raised.value.message and said in raised.value.message
    assert raised.value.details["key"] == key


def test_a_path_through_a_symlink_inside_that_leads_out_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (folder / "lib").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValidationError, match="symlink that points outside") as raised:
        check_model_files(folder, _mlmodel(pickled_model="lib/model.pkl"))
    assert raised.value.details["path"] == "lib"


@pytest.mark.parametrize("target", ["../../outside.pkl", "/etc/passwd", "../../missing"])
def test_any_symlink_out_is_refused_even_one_mlmodel_does_not_name(tmp_path: Path, target: str) -> None:
    folder = _folder(tmp_path)
    (tmp_path / "outside.pkl").write_text("x")
    (folder / "code" / "extra").symlink_to(target)
    assert outward_symlinks(folder) == ["code/extra"]
    with pytest.raises(ValidationError, match="code/extra"):
        check_model_files(folder, _mlmodel())


def test_a_symlink_that_stays_inside_is_allowed_and_digested_as_a_link(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "good.pkl").write_text("good")
    (folder / "bad.pkl").write_text("bad")
    (folder / "model.pkl").unlink()
    (folder / "model.pkl").symlink_to("good.pkl")
    check_model_files(folder, _mlmodel())
    before, stat = tree_digest(folder), tree_stat(folder)
    (folder / "model.pkl").unlink()
    (folder / "model.pkl").symlink_to("bad.pkl")  # re-pointed: the same files, another model served
    assert tree_digest(folder) != before
    assert tree_stat(folder) != stat
    (folder / "model.pkl").unlink()
    (folder / "model.pkl").write_bytes(b"symlink\0bad.pkl")  # a file is never mistaken for a link
    assert tree_digest(folder) != before


def test_an_mlmodel_that_is_not_a_mapping_names_nothing(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    assert referenced_paths(folder, None) == []
    assert referenced_paths(folder, ["a"]) == []


def test_registration_reads_no_model_folder_that_names_a_file_outside_it(tmp_path: Path) -> None:
    """`read_model_folder` (what registration and model validation read a downloaded model with) refuses
    before it reads the input example or anything else the MLmodel names."""
    import yaml

    from mlgate.adapters.mlflow.registry import read_model_folder

    folder = _folder(tmp_path)
    (folder / "MLmodel").write_text(yaml.safe_dump(_mlmodel()))
    assert read_model_folder(folder).flavors == ["python_function", "sklearn"]
    (folder / "MLmodel").write_text(yaml.safe_dump(_mlmodel(pickled_model="../elsewhere/model.pkl")))
    with pytest.raises(ValidationError, match=r"flavors\.sklearn\.pickled_model \(\.\./elsewhere/model\.pkl\)"):
        read_model_folder(folder)
    (folder / "MLmodel").write_text(yaml.safe_dump(_mlmodel()))
    (folder / "input_example.json").unlink()
    (folder / "input_example.json").symlink_to("/etc/hostname")
    with pytest.raises(ValidationError, match=r"input_example\.json in the model folder is a symlink"):
        read_model_folder(folder)


def test_an_mlmodel_pyyaml_cannot_construct_is_refused_as_unreadable(tmp_path: Path) -> None:
    """Values PyYAML's scanner takes for typed ones but cannot build (`!!int ""`, `!!bool ""`, 2020-13-01)."""
    from mlgate.adapters.mlflow.registry import read_model_folder
    from mlgate.project import train_spec

    folder = _folder(tmp_path)
    for text in ('flavors: !!int ""', 'flavors: !!bool ""', "utc_time_created: 2020-13-01"):
        (folder / "MLmodel").write_text(text)
        with pytest.raises(ValidationError, match=r"the model's MLmodel file cannot be read"):
            read_model_folder(folder)
        with pytest.raises(ValidationError, match=r"mlgate\.yaml: not valid YAML"):
            train_spec(f"train: {{command: x}}\n{text}\n")
