"""Where the raw text comes from: a Hugging Face dataset or a local copy, read into one schema.

IMDb comes out as one table per split (train, test, unsupervised) with `text` and `label`
(0 negative, 1 positive, -1 unlabelled); a fine-tuning dataset (lyrics, or any text) as one
table of documents with `text`. Rows are
put in a canonical order, by a hash of their content, so the hub and a local copy of the same
data give byte-identical files, and `max_docs` keeps the same documents whatever order the
source listed them in.

Every value of a text column must be a string: a null, a number, bytes or a list is refused in
one line that names the file (or hub id), split and column and counts the bad rows, since no
rule could guess the text it stands for (and writing `143` or `nan` as a review would train on
it). An empty or blank string is a document with nothing in it: it is skipped, and counted in a
warning, as the `clean` stage drops what cleaning leaves empty.
"""

from __future__ import annotations

import lzma
import math
import re
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from scratchgpt.errors import ScratchGPTError, reason, warn
from scratchgpt.params import SourceParams
from scratchgpt.progress import progress
from scratchgpt.text import stable_hash

IMDB_SPLITS = ("train", "test", "unsupervised")
OPTIONAL_IMDB_SPLITS = ("unsupervised",)  # a user's own copy may leave out the unlabelled reviews
DOCUMENTS_SPLIT = "train"  # a fine-tuning dataset has one split; `prepare` holds some of it out
DOCUMENT_TEXT_COLUMNS = ("text", "lyrics")  # huggingartists uses `text`, Genius scrapes `lyrics`
TABLE_SUFFIXES = (".parquet", ".csv")

# aclImdb/<split>/<pos|neg|unsup>/<id>_<rating>.txt, as in the Stanford archive.
_ACLIMDB_FILE = re.compile(r"(?:^|/)(train|test)/(pos|neg|unsup)/\d+_\d+\.txt$")
_ACLIMDB_LABELS = {"neg": 0, "pos": 1, "unsup": -1}
# A Hugging Face dataset id is `owner/name`; a pinned revision is a full commit hash.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# What a damaged archive raises as it is decompressed and read, besides tarfile's own errors.
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)

# Each split's tables, each with where it came from (a file, or the hub id) for error messages.
Parts = dict[str, list[tuple[str, pd.DataFrame]]]


class SourceError(ScratchGPTError):
    """A data source that is missing, unreachable or not in a known format."""


def _fail(key: str, source: str, problem: str) -> SourceError:
    return SourceError(f"params.yaml: {key}.source = {source!r}: {problem}")


def _looks_like_path(source: str) -> bool:
    """Anything but `owner/name` is a path, and so is `owner/name` with a known file suffix."""
    return not _HUB_ID.match(source) or source.endswith((".gz", ".tgz", ".tar", ".txt", *TABLE_SUFFIXES))


def _local_path(source: str) -> Path | None:
    """The local path `source` names, None for a hub id; a path that does not exist is an error."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    if _looks_like_path(source):
        raise FileNotFoundError(source)
    return None


def _from_hub(source: str, revision: str | None, key: str) -> Parts:
    import datasets  # slow to import; only hub sources need it

    if revision is None or not _COMMIT.match(revision):
        # A branch or tag moves: the same params could download other bytes next month.
        warn(
            f"params.yaml: {key}.revision = {revision!r} is not a commit hash, so this download "
            "may differ from the last one; pin the commit (see the comment in params.yaml)"
        )

    try:
        dataset = datasets.load_dataset(source, revision=revision)
    except Exception as e:  # network, auth, missing repo: all mean "use a local copy"
        raise _fail(
            key,
            source,
            f"no such local file or folder, and the Hugging Face Hub could not load it "
            f"({reason(e)}); without network access, point {key}.source at a local copy",
        ) from e
    return {name: [(source, split.to_pandas())] for name, split in dataset.items()}


def _decode(content: bytes, name: str | Path) -> str:
    """UTF-8 text, or a one-line error naming the file and the first byte that is not."""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SourceError(f"{name}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from e


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise SourceError(f"{path}: cannot read it ({e.strerror or reason(e)})") from e


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".csv":
            # An empty cell is an empty string, not a null; one type per column for the whole
            # file (by default pandas guesses per block of rows, mixing numbers and strings).
            return pd.read_csv(path, keep_default_na=False, low_memory=False)
        return pd.read_parquet(path)
    except Exception as e:  # pandas and pyarrow raise many types for a damaged file
        raise SourceError(f"{path}: cannot read it as {path.suffix[1:]} ({reason(e)})") from e


def _tables_by_split(folder: Path) -> Parts:
    """Parquet or csv files named by split: `train.parquet`, `test-00000-of-00001.parquet`, ..."""
    parts: Parts = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix in TABLE_SUFFIXES and path.is_file():
            split = re.split(r"[-_.]", path.name, maxsplit=1)[0]
            parts.setdefault(split, []).append((str(path), _read_table(path)))
    return parts


def _aclimdb_rows(files: Iterator[tuple[str, str]], origin: Path) -> Parts:
    """Rows by split from (name inside aclImdb, text) pairs read from `origin`."""
    rows: dict[str, list[tuple[str, int]]] = {split: [] for split in IMDB_SPLITS}
    for name, text in files:
        match = _ACLIMDB_FILE.search(name)
        if match:
            split, kind = match.groups()
            split = "unsupervised" if kind == "unsup" else split
            rows[split].append((text, _ACLIMDB_LABELS[kind]))
    return {
        split: [(str(origin), pd.DataFrame(r, columns=["text", "label"]))] for split, r in rows.items() if r
    }


def _aclimdb_folder(folder: Path) -> Iterator[tuple[str, str]]:
    files = sorted(folder.glob("*/*/*.txt"))
    for path in progress(files, desc="read aclImdb", unit="file"):
        yield path.relative_to(folder).as_posix(), _decode(_read_bytes(path), path)


def _aclimdb_tarball(path: Path) -> Iterator[tuple[str, str]]:
    with tarfile.open(path, "r:*") as archive:
        for member in progress(archive, desc="read aclImdb tarball", unit="file"):
            if member.isfile() and _ACLIMDB_FILE.search(member.name):
                content = archive.extractfile(member).read()
                yield member.name, _decode(content, f"{path}: {member.name}")
        _require_whole(archive)


def _require_whole(archive: tarfile.TarFile) -> None:
    """Refuse an archive that ended early: tarfile stops quietly at a damaged or missing header,
    as if the archive ended there, and checks no compressed checksum unless read to the end.

    A whole archive ends with a zero block (padded with zeros); reading to its end makes gzip,
    bz2 and xz verify their checksums, which catches damage in the last members too.
    """
    fileobj = archive.fileobj
    fileobj.seek(archive.offset)  # the block tarfile took for the end of the archive
    zeros = 0
    while block := fileobj.read(1 << 20):
        if block.strip(b"\0"):
            raise tarfile.ReadError(f"damaged: an invalid header at byte {archive.offset:,}")
        zeros += len(block)
    if zeros < tarfile.BLOCKSIZE:
        raise tarfile.ReadError("truncated: no end-of-archive marker")


def _local_imdb(path: Path, key: str, source: str) -> Parts:
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            return _aclimdb_rows(_aclimdb_tarball(path), path)
        except _ARCHIVE_ERRORS as e:
            raise _fail(key, source, f"not a readable tar archive ({reason(e)})") from e
    if path.is_dir():
        for root in (path, path / "aclImdb"):
            if (root / "train" / "pos").is_dir():
                return _aclimdb_rows(_aclimdb_folder(root), root)
        return _tables_by_split(path)
    raise _fail(key, source, "unknown format: expected a folder of parquet or csv files, "
                "an aclImdb folder, or aclImdb_v1.tar.gz")


def _local_documents(path: Path, key: str, source: str) -> Parts:
    if path.suffix == ".txt":
        documents = [d.strip() for d in _decode(_read_bytes(path), path).split("\n\n\n")]
        return {DOCUMENTS_SPLIT: [(str(path), pd.DataFrame({"text": [d for d in documents if d]}))]}
    if path.suffix in TABLE_SUFFIXES:
        return {DOCUMENTS_SPLIT: [(str(path), _read_table(path))]}
    if path.is_dir():
        texts = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if texts and not any(p.suffix in TABLE_SUFFIXES for p in path.rglob("*")):
            # A folder of .txt files: each file is one document, in the order of their paths.
            return {DOCUMENTS_SPLIT: [(str(path), pd.DataFrame({"text": [_decode(_read_bytes(p), p).strip() for p in texts]}))]}
        return _tables_by_split(path)
    raise _fail(key, source, "unknown format: expected a .txt (documents separated by two blank "
                "lines), .csv or .parquet file, or a folder of .txt files (one document each)")


def _canonical(frame: pd.DataFrame, with_label: bool, max_docs: int | None) -> pa.Table:
    """Rows sorted by content hash (then label), capped to `max_docs`, in the one schema."""
    texts = frame["text"].tolist()  # strings only: see `_documents`
    labels = frame["label"].astype("int64").tolist() if with_label else [0] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: (stable_hash(texts[i]), labels[i], texts[i]))
    order = order[:max_docs]
    columns = {"text": pa.array([texts[i] for i in order], pa.string())}
    if with_label:
        columns["label"] = pa.array([labels[i] for i in order], pa.int64())
    return pa.table(columns)


def _load(params: SourceParams, key: str, read_local) -> Parts:
    try:
        path = _local_path(params.source)
    except FileNotFoundError as e:
        raise _fail(key, params.source, "no such file or folder") from e
    if path is None:
        return _from_hub(params.source, params.revision, key)
    return read_local(path, key, params.source)


def _kind(value: object) -> str:
    """What a value in a table is, in the words of an error message: `null`, `text`, `bytes`,
    `list`, or its type (`int`, `float`, ...)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "list"
    return type(value).__name__


def _require_all(values: list[object], fits: Callable[[object], bool], where: str, column: str, expected: str) -> None:
    """Refuse `values` unless every one `fits`, counting the others by kind."""
    kinds = Counter(_kind(value) for value in values if not fits(value))
    if kinds:
        counts = ", ".join(f"{n:,} {kind}" for kind, n in sorted(kinds.items()))
        raise SourceError(f"{where}, column {column!r}: {sum(kinds.values()):,} of {len(values):,} rows "
                          f"are not {expected} ({counts}); fix or remove those rows")


def _documents(frame: pd.DataFrame, column: str, where: str) -> pd.DataFrame:
    """`frame` with `column` as `text`: refused if a value is not a string, its empty documents
    skipped with a warning. `where` names the file or hub id, the key and the split."""
    values = frame[column].tolist()
    _require_all(values, lambda value: isinstance(value, str), where, column, "text")
    blank = [not v.strip() for v in values]
    if any(blank):
        warn(f"{where}, column {column!r}: skipped {sum(blank):,} empty document(s) of {len(values):,}")
        frame = frame[[not b for b in blank]]
    return frame.rename(columns={column: "text"})


def _labels(frame: pd.DataFrame, where: str) -> None:
    """Refuse IMDb labels that are not whole numbers (a null, text, a float) in one line."""
    if "label" not in frame.columns:
        raise SourceError(f"{where}: no label column")
    # pandas reads an integer column that has a null as floats: 1.0 is still the label 1.
    _require_all(frame["label"].tolist(), _whole_number, where, "label", "whole numbers")


def _whole_number(value: object) -> bool:
    return _kind(value) == "int" or (isinstance(value, float) and value.is_integer())


def _split_table(parts: list[tuple[str, pd.DataFrame]], split: str, key: str, text_columns: tuple[str, ...],
                 with_label: bool) -> pd.DataFrame:
    """A split's tables checked (see `_documents`) and joined, with the text in `text`."""
    frames = []
    for origin, frame in parts:
        where = f"{origin} ({key}.source), split {split!r}"
        column = next((c for c in text_columns if c in frame.columns), None)
        if column is None:
            raise SourceError(f"{where}: no {' or '.join(text_columns)} column "
                              f"(columns: {', '.join(map(str, frame.columns)) or 'none'})")
        if with_label:
            _labels(frame, where)
        frames.append(_documents(frame, column, where))
    return pd.concat(frames, ignore_index=True)


def _require_documents(frame: pd.DataFrame, split: str, key: str, source: str) -> None:
    if frame.empty:
        raise _fail(key, source, f"split {split!r} has no documents")


def load_imdb(params: SourceParams) -> dict[str, pa.Table]:
    """IMDb's train, test and unsupervised splits, each with `text` and `label`."""
    key = "data.imdb"
    splits = _load(params, key, _local_imdb)
    tables = {}
    for split in IMDB_SPLITS:
        parts = splits.get(split)
        if parts is None and split in OPTIONAL_IMDB_SPLITS:
            frame = pd.DataFrame({"text": [], "label": []})
        elif parts is None:
            found = ", ".join(sorted(splits)) or "none"
            raise _fail(key, params.source, f"no {split!r} split (found: {found})")
        else:
            frame = _split_table(parts, split, key, ("text",), with_label=True)
            _require_documents(frame, split, key, params.source)
        tables[split] = _canonical(frame, True, params.max_docs)
    return tables


def load_documents(params: SourceParams, key: str) -> pa.Table:
    """A fine-tuning dataset (params.yaml's `key`, `datasets.coldplay` say): one document (a
    song) per row, in a `text` column."""
    splits = _load(params, key, _local_documents)
    if DOCUMENTS_SPLIT not in splits:
        found = ", ".join(sorted(splits)) or "none"
        raise _fail(key, params.source, f"no {DOCUMENTS_SPLIT!r} split (found: {found})")
    frame = _split_table(splits[DOCUMENTS_SPLIT], DOCUMENTS_SPLIT, key, DOCUMENT_TEXT_COLUMNS, with_label=False)
    _require_documents(frame, DOCUMENTS_SPLIT, key, params.source)
    return _canonical(frame, False, params.max_docs)
