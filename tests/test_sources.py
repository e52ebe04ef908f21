"""Every local source format gives the same tables as the hub schema; bad sources are refused."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet  # noqa: F401  (pa.parquet)
import pytest

from scratchgpt.params import SourceParams
from scratchgpt.sources import SourceError, load_documents, load_imdb

REVIEWS = {
    ("train", "pos"): ["A wonderful film.<br />Loved it.", "Great acting."],
    ("train", "neg"): ["Dull and slow.", "I want my money back."],
    ("train", "unsup"): ["Saw it twice.", "No opinion yet.", "Popcorn was good."],
    ("test", "pos"): ["Brilliant!"],
    ("test", "neg"): ["Awful."],
}
LABELS = {"pos": 1, "neg": 0, "unsup": -1}


def load_lyrics(params: SourceParams) -> object:
    return load_documents(params, "datasets.coldplay")


def source(path: object, max_docs: int | None = None) -> SourceParams:
    return SourceParams(source=str(path), revision=None, max_docs=max_docs)


def write_aclimdb(root: Path) -> Path:
    for (split, kind), texts in REVIEWS.items():
        folder = root / "aclImdb" / split / kind
        folder.mkdir(parents=True)
        for i, text in enumerate(texts):
            (folder / f"{i}_{7 if kind == 'pos' else 2}.txt").write_text(text, encoding="utf-8")
    return root / "aclImdb"


def frames() -> dict[str, pd.DataFrame]:
    rows: dict[str, list] = {"train": [], "test": [], "unsupervised": []}
    for (split, kind), texts in REVIEWS.items():
        rows["unsupervised" if kind == "unsup" else split] += [(t, LABELS[kind]) for t in texts]
    return {split: pd.DataFrame(r, columns=["text", "label"]) for split, r in rows.items()}


def as_rows(tables) -> dict:
    return {split: table.to_pylist() for split, table in tables.items()}


@pytest.fixture
def expected(tmp_path):
    return as_rows(load_imdb(source(write_aclimdb(tmp_path / "reference"))))


def test_aclimdb_folder_has_the_hub_schema(expected):
    assert set(expected) == {"train", "test", "unsupervised"}
    assert {"text": "Brilliant!", "label": 1} in expected["test"]
    assert len(expected["unsupervised"]) == 3
    assert all(row["label"] == -1 for row in expected["unsupervised"])


def test_parent_of_aclimdb_folder(tmp_path, expected):
    write_aclimdb(tmp_path)
    assert as_rows(load_imdb(source(tmp_path))) == expected


def test_aclimdb_tarball(tmp_path, expected):
    folder = write_aclimdb(tmp_path / "unpacked")
    archive = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="aclImdb")
    assert as_rows(load_imdb(source(archive))) == expected


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_folder_of_tables_in_any_row_order(tmp_path, expected, suffix):
    for split, frame in frames().items():
        shuffled = frame.iloc[::-1]
        name = f"{split}-00000-of-00001.{suffix}"
        if suffix == "csv":
            shuffled.to_csv(tmp_path / name, index=False)
        else:
            shuffled.to_parquet(tmp_path / name, index=False)
    assert as_rows(load_imdb(source(tmp_path))) == expected


def test_unsupervised_split_is_optional(tmp_path):
    for split, frame in frames().items():
        if split != "unsupervised":
            frame.to_parquet(tmp_path / f"{split}.parquet", index=False)
    tables = load_imdb(source(tmp_path))
    assert tables["unsupervised"].num_rows == 0
    assert tables["unsupervised"].schema == tables["train"].schema


def test_max_docs_keeps_the_same_documents_whatever_the_order(tmp_path):
    ordered, reversed_ = tmp_path / "a", tmp_path / "b"
    for folder, step in ((ordered, 1), (reversed_, -1)):
        folder.mkdir()
        for split, frame in frames().items():
            frame.iloc[::step].to_parquet(folder / f"{split}.parquet", index=False)
    capped = as_rows(load_imdb(source(ordered, max_docs=2)))
    assert capped == as_rows(load_imdb(source(reversed_, max_docs=2)))
    assert [len(rows) for rows in capped.values()] == [2, 2, 2]


SONGS = ["First verse\nand more\n\nchorus", "Second song", "Third song\n\nends here"]


def test_lyrics_formats_agree(tmp_path):
    txt = tmp_path / "songs.txt"
    txt.write_text("\n\n\n".join(SONGS) + "\n", encoding="utf-8")
    csv = tmp_path / "songs.csv"
    pd.DataFrame({"title": ["a", "b", "c"], "lyrics": SONGS}).to_csv(csv, index=False)
    parquet = tmp_path / "songs.parquet"
    pd.DataFrame({"text": SONGS}).to_parquet(parquet, index=False)
    folder = tmp_path / "songs"  # a folder of .txt files, one document each, in subfolders too
    for index, song in enumerate(SONGS):
        (folder / f"album{index % 2}").mkdir(parents=True, exist_ok=True)
        (folder / f"album{index % 2}/{index}.txt").write_text(song + "\n", encoding="utf-8")
    tables = [load_lyrics(source(p)) for p in (txt, csv, parquet, folder)]
    assert tables[0].column_names == ["text"]
    assert sorted(tables[0].column("text").to_pylist()) == sorted(SONGS)
    assert all(tables[0].equals(table) for table in tables[1:])


def test_real_lyrics_file():
    from conftest import SHARED_DATA, requires_shared_data

    requires_shared_data()
    songs = load_lyrics(source(SHARED_DATA / "lyrics" / "coldplay.txt"))
    assert songs.num_rows == 99


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "nowhere", "no such file or folder"),
        (lambda tmp: tmp / "missing.tar.gz", "no such file or folder"),
        (lambda tmp: (tmp / "x.json").write_text("{}") and tmp / "x.json", "unknown format"),
        (lambda tmp: (tmp / "bad.tar.gz").write_bytes(b"not a tarball") and tmp / "bad.tar.gz", "tar archive"),
        (lambda tmp: tmp, "no 'train' split"),
    ],
)
def test_bad_imdb_sources_are_refused(tmp_path, make, message):
    with pytest.raises(SourceError, match=message) as error:
        load_imdb(source(make(tmp_path)))
    assert "data.imdb.source" in str(error.value) and "\n" not in str(error.value)


def test_table_without_text_column_is_refused(tmp_path):
    pd.DataFrame({"review": ["x"], "label": [1]}).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame({"review": ["x"], "label": [1]}).to_parquet(tmp_path / "test.parquet")
    with pytest.raises(SourceError, match="no text column .columns: review, label"):
        load_imdb(source(tmp_path))


def test_empty_lyrics_are_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n\n\n")
    with pytest.raises(SourceError, match="has no documents"):
        load_lyrics(source(empty))


def test_unreachable_hub_says_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceError, match="point datasets.coldplay.source at a local copy"):
        load_lyrics(SourceParams(source="huggingartists/no-such-artist", revision=None, max_docs=None))


def _flip(data: bytes, at: float) -> bytes:
    """`data` with four bytes inverted at fraction `at` of its length."""
    i = int(len(data) * at)
    return data[:i] + bytes(b ^ 0xFF for b in data[i : i + 4]) + data[i + 4 :]


def _bad_header(data: bytes, member_offset: int) -> bytes:
    return data[:member_offset] + b"garbage!" + data[member_offset + 8 :]


@pytest.mark.parametrize(
    "suffix, damage",
    [
        ("tar.gz", lambda data, offset: _flip(data, 0.97)),  # read as a smaller corpus before
        ("tar.gz", lambda data, offset: _flip(data, 0.5)),
        ("tar.gz", lambda data, offset: data[: len(data) // 2]),
        ("tar", lambda data, offset: data[:offset]),  # cut at a header: looked like the end
        ("tar", _bad_header),
    ],
    ids=["gz-flipped-near-end", "gz-flipped-middle", "gz-truncated", "tar-cut-at-header", "tar-bad-header"],
)
def test_damaged_aclimdb_tarball_is_refused(tmp_path, suffix, damage):
    folder = write_aclimdb(tmp_path / "unpacked")
    archive = tmp_path / f"aclImdb_v1.{suffix}"
    with tarfile.open(archive, "w:gz" if suffix == "tar.gz" else "w") as tar:
        tar.add(folder, arcname="aclImdb")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        offset = members[len(members) // 2].offset  # a header in the middle (uncompressed offset)
    archive.write_bytes(damage(archive.read_bytes(), offset))
    with pytest.raises(SourceError, match="not a readable tar archive") as error:
        load_imdb(source(archive))
    assert "\n" not in str(error.value)


LATIN1 = "Caf\xe9 society, na\xefve plot".encode("latin-1")


def _latin1_lyrics(tmp: Path) -> tuple[Path, object]:
    path = tmp / "songs.txt"
    path.write_bytes(b"First song\n\n\n" + LATIN1)
    return path, load_lyrics


def _latin1_review(tmp: Path) -> tuple[Path, object]:
    folder = write_aclimdb(tmp)
    (folder / "train" / "pos" / "9_9.txt").write_bytes(LATIN1)
    return folder, load_imdb


def _latin1_review_in_tarball(tmp: Path) -> tuple[Path, object]:
    folder, _ = _latin1_review(tmp / "unpacked")
    archive = tmp / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="aclImdb")
    return archive, load_imdb


@pytest.mark.parametrize("make", [_latin1_lyrics, _latin1_review, _latin1_review_in_tarball])
def test_text_that_is_not_utf8_is_refused_in_one_line(tmp_path, make):
    path, load = make(tmp_path)
    with pytest.raises(SourceError, match=r"not UTF-8 text \(byte 0xe9") as error:
        load(source(path))
    assert ("9_9.txt" in str(error.value) or "songs.txt" in str(error.value)) and "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["mylyrics.json", "lyrics", "data/songs.txt", "./coldplay"])
def test_missing_local_path_is_not_called_a_hub_problem(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match="no such file or folder") as error:
        load_lyrics(source(name))
    assert "Hub" not in str(error.value)


@pytest.mark.parametrize(
    "revision, warns",
    [("refs/convert/parquet", True), ("main", True), (None, True), ("610bdae015434d0a02e81468da0abb51c2164bc8", False)],
)
def test_hub_revision_that_can_move_is_warned_about(monkeypatch, capsys, revision, warns):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceError):  # offline: the load itself fails after the check
        load_lyrics(SourceParams(source="huggingartists/coldplay", revision=revision, max_docs=None))
    assert ("not a commit hash" in capsys.readouterr().err) == warns


# A text column whose values are not all strings, as each format can hold it: pyarrow arrays
# for parquet and the hub, plain values for csv (where only a column of numbers is not text).
BAD_TEXT = {
    "null": (pa.array(["A review.", None, None]), "2 of 3 rows are not text (2 null)"),
    "number": (pa.array([143, 115, 7]), "3 of 3 rows are not text (3 int)"),
    "float": (pa.array([1.5, float("nan"), 2.0]), "3 of 3 rows are not text (2 float, 1 null)"),
    "bytes": (pa.array([b"A review.", b"Another."]), "2 of 2 rows are not text (2 bytes)"),
    "list": (pa.array([["A", "review"], ["B"]]), "2 of 2 rows are not text (2 list)"),
}


def _imdb_folder(tmp: Path, train_text: pa.Array, suffix: str) -> tuple[Path, str]:
    """An IMDb folder whose train split holds `train_text`; the other splits are good."""
    tables = {split: pa.Table.from_pandas(frame, preserve_index=False) for split, frame in frames().items()}
    tables["train"] = pa.table({"text": train_text, "label": pa.array([1] * len(train_text))})
    for split, table in tables.items():
        if suffix == "csv":
            table.to_pandas().to_csv(tmp / f"{split}.csv", index=False)
        else:
            pa.parquet.write_table(table, tmp / f"{split}.parquet")
    return tmp, str(tmp / f"train.{suffix}")


def _lyrics_file(tmp: Path, text: pa.Array, suffix: str) -> tuple[Path, str]:
    path = tmp / f"songs.{suffix}"
    table = pa.table({"title": pa.array([f"song {i}" for i in range(len(text))]), "lyrics": text})
    if suffix == "csv":
        table.to_pandas().to_csv(path, index=False)
    else:
        pa.parquet.write_table(table, path)
    return path, str(path)


FORMATS = {  # format: (how to write the source, its loader, the text column's name, kinds it can hold)
    "imdb-parquet": (lambda tmp, text: _imdb_folder(tmp, text, "parquet"), load_imdb, "text", set(BAD_TEXT)),
    "imdb-csv": (lambda tmp, text: _imdb_folder(tmp, text, "csv"), load_imdb, "text", {"number"}),
    "lyrics-parquet": (lambda tmp, text: _lyrics_file(tmp, text, "parquet"), load_lyrics, "lyrics", set(BAD_TEXT)),
    "lyrics-csv": (lambda tmp, text: _lyrics_file(tmp, text, "csv"), load_lyrics, "lyrics", {"number"}),
}


@pytest.mark.parametrize(
    "fmt, kind", [(fmt, kind) for fmt, (*_, kinds) in FORMATS.items() for kind in BAD_TEXT if kind in kinds]
)
def test_text_column_that_is_not_all_strings_is_refused_in_one_line(tmp_path, fmt, kind):
    write, load, column, _ = FORMATS[fmt]
    values, counted = BAD_TEXT[kind]
    path, file = write(tmp_path, values)
    with pytest.raises(SourceError) as error:
        load(source(path))
    message = str(error.value)
    assert "\n" not in message
    for part in (file, "split 'train'", f"column {column!r}", counted):
        assert part in message, message


def test_text_column_that_is_not_all_strings_is_refused_from_the_hub(monkeypatch):
    datasets = pytest.importorskip("datasets")
    values, counted = BAD_TEXT["null"]
    table = pa.table({"text": values})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict({"train": datasets.Dataset(table)}))
    with pytest.raises(SourceError, match=re.escape(f"huggingartists/coldplay (datasets.coldplay.source), split 'train', "
                                                    f"column 'text': {counted}")):
        load_lyrics(SourceParams(source="huggingartists/coldplay", revision="0" * 40, max_docs=None))


@pytest.mark.parametrize("fmt", ["imdb-parquet", "imdb-csv", "lyrics-parquet", "lyrics-csv"])
def test_empty_documents_are_skipped_with_a_count(tmp_path, capsys, fmt):
    write, load, column, _ = FORMATS[fmt]
    path, file = write(tmp_path, pa.array(["A real document.", "", "  \n "]))
    loaded = load(source(path))
    texts = (loaded["train"] if isinstance(loaded, dict) else loaded).column("text").to_pylist()
    assert texts == ["A real document."]
    [warning] = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("warning: ") and file in warning and "skipped 2 empty document(s) of 3" in warning


@pytest.mark.parametrize(
    "labels, counted",
    [(pa.array([1, None]), "1 of 2 rows are not whole numbers (1 null)"),
     (pa.array(["pos", "neg"]), "2 of 2 rows are not whole numbers (2 text)")],
    ids=["null", "text"],
)
def test_imdb_labels_that_are_not_whole_numbers_are_refused(tmp_path, labels, counted):
    _imdb_folder(tmp_path, pa.array(["Good.", "Bad."]), "parquet")
    pa.parquet.write_table(pa.table({"text": ["Good.", "Bad."], "label": labels}), tmp_path / "train.parquet")
    with pytest.raises(SourceError, match=re.escape(f"train.parquet (data.imdb.source), split 'train', column 'label': {counted}")):
        load_imdb(source(tmp_path))
