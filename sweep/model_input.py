"""Everything `--model` and a grid's `model = [...]` accept, resolved to a `ModelSpec`.

In this order: an existing file (`.toml`: an architecture file; `.json`: a Hugging Face
config.json when it has `model_type`, else an architecture file), an existing directory (a
snapshot holding config.json, or a cached repository `models--org--name`), a hub id cached
locally (`org/name`, `org/name@revision`; never downloaded), else a catalog name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sweep import architecture, hf_config
from sweep.errors import SweepError
from sweep.model import ModelSpec

FILE_SUFFIXES = (".json", ".toml")


def read_path(path: Path, name: str | None = None) -> ModelSpec:
    """An architecture file or a Hugging Face config.json, told apart by `model_type`."""
    if path.suffix == ".toml":
        return architecture.read_file(path)
    table = architecture.load_file(path)
    if "model_type" in table:
        return hf_config.spec_from_config(table, path, name)
    return architecture.read_file(path, table)


def read_directory(path: Path) -> ModelSpec:
    if (path / "config.json").is_file():
        return read_path(path / "config.json")
    if (path / "snapshots").is_dir():
        return hf_config.read_hf_config(hf_config.snapshot_config(path))
    raise SweepError(f"{path}: a directory without config.json (expected a model snapshot "
                     f"directory or a cached models--org--name directory).")


def resolve(name: str, catalog_lookup: Callable[[str], ModelSpec]) -> ModelSpec:
    """The model `name` designates (see the module docstring)."""
    if name.startswith("megatron:"):
        from sweep.megatron_args import read_model

        return read_model(name)
    path = Path(name).expanduser()
    if path.is_file():
        return read_path(path)
    if path.is_dir():
        return read_directory(path)
    if path.suffix in FILE_SUFFIXES:
        raise SweepError(f"{name}: no such file.")
    if hf_config.HUB_ID.match(name):
        return hf_config.read_hf_config(hf_config.cached_config(name), name=name)
    return catalog_lookup(name)
