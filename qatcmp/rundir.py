"""The run folder on disk: paths, and crash-safe JSONL reading and writing.

Writers append one record per line and flush (and fsync) each one, so a crash - even
``kill -9`` - loses at most the requests in flight. A torn last line (the process died in the
middle of a write) is detected by the reader and dropped; the writer cuts it off before
appending, so the file stays valid JSONL.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from qatcmp.errors import DataError
from qatcmp.redact import mask_obj
from qatcmp.records import (
    Item,
    RunManifest,
    ScoreRecord,
    TranscriptRecord,
)

M = TypeVar("M", bound=BaseModel)

MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
TRANSCRIPTS = "transcripts"
SCORES = "scores.jsonl"

_ITEM_ADAPTER: TypeAdapter[Item] = TypeAdapter(Item)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class RunDir:
    """Paths inside one run folder."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def items(self) -> Path:
        return self.path / ITEMS

    @property
    def transcripts_dir(self) -> Path:
        return self.path / TRANSCRIPTS

    @property
    def scores(self) -> Path:
        return self.path / SCORES

    def transcript_file(self, model: str, benchmark: str) -> Path:
        return self.transcripts_dir / f"{model}.{benchmark}.jsonl"

    def transcript_files(self) -> list[Path]:
        if not self.transcripts_dir.is_dir():
            return []
        return sorted(self.transcripts_dir.glob("*.jsonl"))

    # ----------------------------------------------------------------- reading

    def require(self) -> None:
        if not self.manifest.is_file():
            raise DataError(f"{self.path} is not a qatcmp run folder (no {MANIFEST})")

    def read_manifest(self) -> RunManifest:
        self.require()
        try:
            return RunManifest.model_validate_json(self.manifest.read_text(encoding="utf-8"))
        except (ValidationError, ValueError) as exc:
            raise DataError(f"{self.manifest}: unreadable manifest ({_first_error(exc)})") from None

    def write_manifest(self, manifest: RunManifest) -> None:
        write_json_atomic(self.manifest, manifest.model_dump(mode="json"))

    def read_items(self) -> list[Item]:
        return [
            _ITEM_ADAPTER.validate_python(obj) for obj in read_jsonl_objects(self.items)
        ]

    def write_items(self, items: Iterable[Item]) -> None:
        lines = [_ITEM_ADAPTER.dump_json(item).decode() for item in items]
        write_text_atomic(self.items, "".join(line + "\n" for line in lines))

    def read_transcripts(self) -> list[TranscriptRecord]:
        """All transcript records, the latest one per (model, benchmark, item, sample).

        A resumed run appends a new record after an error record for the same key; the
        later record wins, so re-asking a failed question replaces its error.
        """
        latest: dict[tuple[str, str, str, int], TranscriptRecord] = {}
        for path in self.transcript_files():
            for record in read_jsonl(path, TranscriptRecord):
                latest[record.key] = record
        return list(latest.values())

    def read_scores(self) -> list[ScoreRecord]:
        return list(read_jsonl(self.scores, ScoreRecord))


# --------------------------------------------------------------------------- JSONL


def read_jsonl_objects(path: Path) -> Iterator[dict]:
    """Yield the JSON objects of a JSONL file; a torn (unterminated, unparsable) last line
    is skipped. A bad line anywhere else is an error: the file was damaged, not torn."""
    if not path.exists():
        return
    with path.open("rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    last = len(lines) - 1
    for number, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            yield json.loads(raw)
        except ValueError:
            if number == last:  # no newline after it: a write cut short by a crash
                return
            raise DataError(f"{path}:{number + 1}: not valid JSON") from None


def read_jsonl(path: Path, model: type[M]) -> Iterator[M]:
    for number, obj in enumerate(read_jsonl_objects(path), start=1):
        try:
            yield model.model_validate(obj)
        except ValidationError as exc:
            raise DataError(f"{path}: record {number}: {_first_error(exc)}") from None


def repair_torn_tail(path: Path) -> int:
    """Cut an unterminated last line off a JSONL file; return the bytes removed."""
    if not path.exists():
        return 0
    with path.open("rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return 0
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        # Find the end of the last complete line.
        chunk = 65536
        pos = size
        keep = 0
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            block = fh.read(pos - start)
            idx = block.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return size - keep


class JsonlAppender:
    """Appends records to a JSONL file, one flushed and fsynced line at a time."""

    def __init__(self, path: Path, *, fsync: bool = True):
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(path)
        self._fh = path.open("ab")

    def append(self, record: BaseModel) -> None:
        # One write call per record: the line is either all there or torn at the end.
        self._fh.write(record_line(record).encode() + b"\n")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_line(record: BaseModel) -> str:
    """One JSONL line, secrets masked (a server may echo a key into an error)."""
    return _encodable(json.dumps(mask_obj(record.model_dump(mode="json")), ensure_ascii=False, separators=(",", ":")))


def _encodable(text: str) -> str:
    # A lone surrogate (a hostile "\ud800" escape) cannot be written as UTF-8: keep it as
    # the JSON escape it came as, rather than crash.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def write_jsonl_atomic(path: Path, records: Iterable[BaseModel]) -> None:
    write_text_atomic(path, "".join(record_line(r) + "\n" for r in records))


def write_json_atomic(path: Path, obj: object) -> None:
    write_text_atomic(path, _encodable(json.dumps(mask_obj(obj), indent=2, ensure_ascii=False)) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary file and rename it over the target, so a reader (or a crash)
    never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        return f"{loc}: {err['msg']}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
