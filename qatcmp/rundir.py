"""The run folder on disk: paths, crash-safe JSONL reading and writing, and the checks that
a run folder (perhaps sent by someone else) is what its manifest says.

Writers append one record per line and flush (and fsync) each one, so a crash - even
``kill -9`` - loses at most the requests in flight. A torn last line (the process died in the
middle of a write) is detected by the reader and dropped; the writer cuts it off before
appending, so the file stays valid JSONL. A last line that is complete but lacks its newline
(an editor, a copy) is a record: it is kept, and the writer adds the newline.

What is trusted, and why (a run folder is input like any other):
- a transcript's model and benchmark are its file name's (``<model>.<benchmark>.jsonl``); a
  record that says otherwise, a file named for a model or benchmark the manifest does not
  hold, a sample outside 0..K-1 or a question outside the run's selection is refused by name;
- items.jsonl must hold every question of the manifest, each unchanged since the run was
  made (the manifest keeps a sha256 of each item), so tests cannot be edited behind a score.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from qatcmp.errors import DataError
from qatcmp.redact import mask_obj
from qatcmp.records import (
    Item,
    RunManifest,
    ScoreRecord,
    Session,
    TranscriptRecord,
    utcnow,
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
        """Every ``*.jsonl`` under transcripts/ (other files are not transcripts by name)."""
        if not self.transcripts_dir.is_dir():
            return []
        return sorted(self.transcripts_dir.glob("*.jsonl"))

    def transcript_owner(self, path: Path, manifest: RunManifest) -> tuple[str, str]:
        """The (model, benchmark) a transcript file belongs to, from its name; refuse a file
        that is not ``<model>.<benchmark>.jsonl`` of this run (a stray or backup copy)."""
        where = f"{TRANSCRIPTS}/{path.name}"
        if path.is_dir():
            raise DataError(f"{self.path}: {where} is a folder, not a transcript file")
        model, _, benchmark = path.name[: -len(".jsonl")].rpartition(".")
        benchmarks = [b.name for b in manifest.spec.benchmarks]
        if benchmark not in benchmarks or not model:
            raise DataError(
                f"{self.path}: {where} is not <model>.<benchmark>.jsonl for a benchmark of this run "
                f"({', '.join(benchmarks)}); move it out of {TRANSCRIPTS}/"
            )
        if model not in manifest.spec.models:
            raise DataError(
                f"{self.path}: {where} is for model '{model}', which is not in this run "
                f"({', '.join(manifest.spec.models)}); move it out of {TRANSCRIPTS}/"
            )
        return model, benchmark

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

    def read_items(self, manifest: RunManifest | None = None) -> list[Item]:
        """The items, checked against the manifest: every question of the run present and,
        where the manifest holds their hashes (runs made since they were added), unchanged."""
        manifest = manifest or self.read_manifest()
        items: list[Item] = []
        hashes: dict[tuple[str, str], str] = {}
        for number, obj in enumerate(read_jsonl_objects(self.items), start=1):
            try:
                item = _ITEM_ADAPTER.validate_python(obj)
            except ValidationError as exc:
                raise DataError(f"{self.items}: item {number}: {_first_error(exc)}") from None
            items.append(item)
            hashes[(item.benchmark, item.item_id)] = object_sha256(obj)
        for selection in manifest.spec.benchmarks:
            expected = manifest.item_hashes.get(selection.name, {})
            for item_id in selection.item_ids:
                found = hashes.get((selection.name, item_id))
                if found is None:
                    raise DataError(f"{self.items}: {selection.name} item {item_id} of the manifest is missing")
                if item_id in expected and expected[item_id] != found:
                    raise DataError(
                        f"{self.items}: {selection.name} item {item_id} is not the one this run was made with "
                        "(edited after the run?); restore it, or make a new run"
                    )
        return items

    def write_items(self, items: Iterable[Item]) -> None:
        lines = [_ITEM_ADAPTER.dump_json(item).decode() for item in items]
        write_text_atomic(self.items, "".join(line + "\n" for line in lines))

    def read_transcripts(self, manifest: RunManifest | None = None) -> list[TranscriptRecord]:
        """All transcript records, the latest one per (model, benchmark, item, sample),
        each checked against its file name and the manifest.

        A resumed run appends a new record after an error record for the same key; the
        later record wins, so re-asking a failed question replaces its error.
        """
        manifest = manifest or self.read_manifest()
        questions = {b.name: set(b.item_ids) for b in manifest.spec.benchmarks}
        latest: dict[tuple[str, str, str, int], TranscriptRecord] = {}
        for path in self.transcript_files():
            model, benchmark = self.transcript_owner(path, manifest)
            for number, record in enumerate(read_jsonl(path, TranscriptRecord), start=1):
                problem = _record_problem(record, model, benchmark, questions[benchmark], manifest.spec.samples)
                if problem:
                    raise DataError(f"{path}: record {number}: {problem}")
                latest[record.key] = record
        return list(latest.values())

    def read_scores(self, *, strict: bool = False) -> list[ScoreRecord]:
        """The scores; ``strict``: a cut last line is an error too (scores.jsonl is written
        whole, so any damage means it is not the file qatcmp wrote)."""
        return list(read_jsonl(self.scores, ScoreRecord, strict=strict))


# --------------------------------------------------------------------------- sessions


def start_session(manifest: RunManifest, *, command: list[str], config: dict[str, Any], version: str) -> None:
    """Add this `qatcmp run` to the manifest's sessions; the top-level command, config and
    servers become this session's (the servers are filled in as they are asked)."""
    if not manifest.sessions and (manifest.command or manifest.servers):
        # A manifest from before sessions were kept: its one recorded attempt becomes the first.
        manifest.sessions.append(Session(
            command=manifest.command, config=manifest.config, qatcmp_version=manifest.qatcmp_version,
            started_at=manifest.created_at, finished_at=manifest.updated_at, servers=dict(manifest.servers),
        ))
    manifest.sessions.append(Session(command=command, config=config, qatcmp_version=version, started_at=utcnow()))
    manifest.command = command
    manifest.config = config
    manifest.servers = {}


def finish_session(run: RunDir, sessions_before: int, *, outcome: str, sent: int, errors: int) -> None:
    """Record how the session that `start_session` added ended (if it got that far)."""
    manifest = run.read_manifest()
    if len(manifest.sessions) <= sessions_before:
        return  # refused before it started: nothing of it to record
    session = manifest.sessions[-1]
    session.finished_at = utcnow()
    session.outcome = outcome
    session.sent = sent
    session.errors = errors
    session.servers = dict(manifest.servers)
    manifest.updated_at = session.finished_at
    run.write_manifest(manifest)


def _record_problem(record: TranscriptRecord, model: str, benchmark: str, questions: set[str], samples: int) -> str | None:
    if record.model != model:
        return f"says model '{record.model}', but the file is {model}'s; a transcript's model is its file name's"
    if record.benchmark != benchmark:
        return f"says benchmark '{record.benchmark}', but the file is for {benchmark}"
    if not 0 <= record.sample < samples:
        return f"sample {record.sample} is outside this run's samples 0..{samples - 1}"
    if record.item_id not in questions:
        return f"{benchmark} item {record.item_id} is not one of this run's questions"
    return None


def object_sha256(obj: object) -> str:
    """A hash of a JSON object that does not depend on key order or spacing."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def item_hashes(items: Iterable[Item]) -> dict[str, dict[str, str]]:
    """benchmark -> item id -> sha256 of the item as written to items.jsonl (for the manifest)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        out.setdefault(item.benchmark, {})[item.item_id] = object_sha256(_ITEM_ADAPTER.dump_python(item, mode="json"))
    return out


# --------------------------------------------------------------------------- JSONL


def read_jsonl_objects(path: Path, *, strict: bool = False) -> Iterator[dict]:
    """Yield the JSON objects of a JSONL file; a torn (unterminated, unparsable) last line
    is skipped unless ``strict``. A bad line anywhere else is an error: the file was
    damaged, not torn."""
    if not path.exists():
        return
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a JSONL file")
    try:
        with path.open("rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    lines = data.split(b"\n")
    last = len(lines) - 1
    for number, raw in enumerate(lines):
        if not raw.strip():
            continue
        obj = _parse_object(raw)
        if obj is None:
            if number == last and not strict:  # no newline after it: a write cut short by a crash
                return
            raise DataError(f"{path}:{number + 1}: not a valid JSON object")
        yield obj


def _parse_object(raw: bytes) -> dict | None:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested beyond what json can parse
        return None
    return obj if isinstance(obj, dict) else None


def read_jsonl(path: Path, model: type[M], *, strict: bool = False) -> Iterator[M]:
    for number, obj in enumerate(read_jsonl_objects(path, strict=strict), start=1):
        try:
            yield model.model_validate(obj)
        except (ValidationError, RecursionError) as exc:
            raise DataError(f"{path}: record {number}: {_first_error(exc)}") from None


def repair_torn_tail(path: Path) -> int:
    """Make a JSONL file end with a newline before appending to it: an unterminated last
    line that is a whole JSON object (saved by an editor, copied) is kept and terminated;
    one that is not (a write cut short) is cut off. Return the bytes removed."""
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
        fh.seek(keep)
        if _parse_object(fh.read(size - keep)) is not None:
            fh.seek(size)
            fh.write(b"\n")  # the readers counted it as a record: it stays one
            keep = size
        else:
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
            # Every record was flushed when appended; a flush that fails here (a full disk)
            # retries a line already reported as failed: the descriptor is closed anyway.
            with contextlib.suppress(OSError):
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
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A full disk (or Ctrl-C) half-way: the old file stays as it was, and no temporary
        # file is left behind.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _first_error(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        return f"{loc}: {err['msg']}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
