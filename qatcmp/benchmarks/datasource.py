"""Loading benchmark rows with `datasets`: from the hub at a pinned revision, from a local
file or folder (jsonl, jsonl.gz, parquet), or from the copy that ships with qatcmp."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from qatcmp.errors import DataError

BUILTIN = "builtin"


@dataclass(frozen=True)
class HubDataset:
    id: str
    revision: str
    split: str
    option: str  # the command-line option that points at a local copy instead


@dataclass
class LoadedRows:
    rows: list[dict[str, Any]]
    dataset: str  # what to record: hub id, "builtin:<file>", or the local path
    revision: str | None
    split: str | None


def builtin_path(filename: str) -> Path:
    return Path(str(resources.files("qatcmp") / "data" / filename))


def load_rows(source: str | None, hub: HubDataset, builtin_file: str) -> LoadedRows:
    """Rows of a benchmark. ``source`` None: the hub; ``builtin``: the shipped copy;
    anything else: a local file or folder."""
    if source is None:
        return _load_from_hub(hub)
    if source == BUILTIN:
        path = builtin_path(builtin_file)
        rows = _load_local(path, hub.option)
        return LoadedRows(rows, f"builtin:{builtin_file}", file_sha256(path), None)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{hub.option} {source}: no such file or folder")
    rows = _load_local(path, hub.option)
    revision = file_sha256(path) if path.is_file() else None
    return LoadedRows(rows, str(path.resolve()), revision, None)


def _load_from_hub(hub: HubDataset) -> LoadedRows:
    import datasets

    try:
        ds = datasets.load_dataset(hub.id, revision=hub.revision, split=hub.split)
    except Exception as exc:  # datasets raises many types for "no network"/"no such repo"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"cannot load {hub.id} from the Hugging Face hub ({reason}); without network use "
            f"{hub.option} builtin (the copy shipped with qatcmp) or {hub.option} PATH "
            "(jsonl, jsonl.gz, parquet or a folder)"
        ) from None
    return LoadedRows([dict(row) for row in ds], hub.id, hub.revision, hub.split)


def _load_local(path: Path, option: str) -> list[dict[str, Any]]:
    import datasets

    datasets.disable_progress_bars()
    try:
        if path.is_dir():
            dd = datasets.load_dataset(str(path))
            split = "test" if "test" in dd else next(iter(dd))
            ds = dd[split]
        else:
            builder = _builder_for(path)
            if builder is None:
                raise DataError(
                    f"{option} {path}: unsupported file type (use .jsonl, .jsonl.gz, .json or .parquet)"
                )
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except DataError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{option} {path}: cannot read ({reason})") from None
    return [dict(row) for row in ds]


def _builder_for(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "json"
    if name.endswith(".parquet"):
        return "parquet"
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


