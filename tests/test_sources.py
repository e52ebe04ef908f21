"""Every local source format gives the same tables as the hub schema; bad sources are refused."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pandas as pd
import pytest

from scratchgpt.params import SourceParams
from scratchgpt.sources import SourceError, load_imdb, load_lyrics

REVIEWS = {
    ("train", "pos"): ["A wonderful film.<br />Loved it.", "Great acting."],
    ("train", "neg"): ["Dull and slow.", "I want my money back."],
    ("train", "unsup"): ["Saw it twice.", "No opinion yet.", "Popcorn was good."],
    ("test", "pos"): ["Brilliant!"],
    ("test", "neg"): ["Awful."],
}
LABELS = {"pos": 1, "neg": 0, "unsup": -1}


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
    tables = [load_lyrics(source(p)) for p in (txt, csv, parquet)]
    assert tables[0].column_names == ["text"]
    assert sorted(tables[0].column("text").to_pylist()) == sorted(SONGS)
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])


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
    with pytest.raises(SourceError, match="point data.lyrics.source at a local copy"):
        load_lyrics(SourceParams(source="huggingartists/no-such-artist", revision=None, max_docs=None))
