"""A model folder's file references: every file its MLmodel names, and every symlink in it, stays inside it.

The digest covers the folder's own files. A path in MLmodel that leaves the folder (absolute, with
`..`, or through a symlink) would let the bytes that are loaded change after approval while the digest
stays the same, so such a folder is refused, at registration and again by the serving host before it
unpickles anything. The caller parses MLmodel (YAML, safe_load) and passes the mapping; this module only
walks it and the folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from mlgate.errors import ValidationError

MLMODEL = "MLmodel"
# Keys whose string values MLflow's flavors load as files or folders relative to the model folder
# (pyfunc `data`/`code`/`env`/`artifacts.*.path`/`python_model`/`model_code_path`, sklearn
# `pickled_model`, pytorch `model_data`, tensorflow `saved_model_dir`, shap `serialized_explainer`, ...).
PATH_KEYS = frozenset(
    {
        "adapter_weights",
        "artifact_path",
        "code",
        "conda",
        "data",
        "env",  # a string in older MLmodel files; a mapping of conda/virtualenv files now
        "model_binary",
        "model_code_path",
        "model_config",
        "model_data",
        "model_path",
        "parameters_path",
        "path",
        "pickled_model",
        "python_env",
        "python_model",
        "requirements",
        "saved_model_dir",
        "serialized_explainer",
        "serving_input_path",
        "virtualenv",
    }
)
# Sections of MLmodel that describe files; the rest (signature, metadata, ids, times) names none.
FILE_SECTIONS = ("flavors", "saved_input_example_info", "env")
# Where a model was logged from, recorded for information and never opened at load.
IGNORED_KEYS = frozenset({"uri"})


def _strings(value: Any, key: str) -> Iterator[tuple[str, str]]:
    """(dotted key, string) of every string under value, lists included, keys in IGNORED_KEYS left out."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for name, inner in value.items():
            if str(name) not in IGNORED_KEYS:
                yield from _strings(inner, f"{key}.{name}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _strings(inner, f"{key}[{index}]")


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1].split("[", 1)[0]


def referenced_paths(folder: Path, mlmodel: Any) -> list[tuple[str, str]]:
    """(MLmodel key, path) of every value that names a file: the known path keys' values, and any other
    string in a file section that exists as a path (relative to the folder, or absolute)."""
    if not isinstance(mlmodel, dict):
        return []
    found = []
    for section in FILE_SECTIONS:
        for key, value in _strings(mlmodel.get(section), section):
            if not value:
                continue
            if _leaf(key) in PATH_KEYS or _exists(folder, value):
                found.append((key, value))
    return found


def _exists(folder: Path, value: str) -> bool:
    try:
        return os.path.lexists(folder / value)
    except (ValueError, OSError):  # a NUL byte, a name too long: not a file of this folder
        return False


def _inside(root: Path, path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (ValueError, OSError, RuntimeError):  # a NUL byte, a symlink loop
        return False


def check_reference(folder: Path, key: str, value: str) -> None:
    """Refuse a path named in MLmodel that is absolute, climbs with `..` or resolves outside the folder."""
    details = {"key": key, "path": value}
    if value.startswith(("/", "\\")):
        raise ValidationError(
            f"MLmodel's {key} is an absolute path ({value}): a model may name only its own files", details=details
        )
    if ".." in PurePosixPath(value.replace("\\", "/")).parts:
        raise ValidationError(
            f"MLmodel's {key} ({value}) climbs out of the model folder with '..': a model may name only its own files",
            details=details,
        )
    root = folder.resolve()
    if not _inside(root, root / value):
        raise ValidationError(
            f"MLmodel's {key} ({value}) resolves outside the model folder through a symlink", details=details
        )


def outward_symlinks(folder: Path) -> list[str]:
    """Relative paths of the symlinks under folder whose target is outside it (dangling ones included)."""
    root = folder.resolve()
    found = []
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(top) / name
            if path.is_symlink() and not _inside(root, path):
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def check_symlinks(folder: Path) -> None:
    """Refuse a folder with a symlink that points outside it: run before reading any of its files."""
    outward = outward_symlinks(folder)
    if outward:
        raise ValidationError(
            f"{outward[0]} in the model folder is a symlink that points outside it: "
            "a model may name only its own files",
            details={"path": outward[0], "symlinks": outward},
        )


def check_references(folder: Path, mlmodel: Any) -> None:
    """Refuse an MLmodel that names a file outside the folder; ValidationError naming the key and path."""
    for key, value in referenced_paths(folder, mlmodel):
        check_reference(folder, key, value)


def check_model_files(folder: Path, mlmodel: Any) -> None:
    """Every symlink in the folder, and every file its MLmodel references, stays inside the folder."""
    check_symlinks(folder)
    check_references(folder, mlmodel)
