"""clean: ASCII-only text with newlines for <br />, and a hash-stable validation split.

IMDb pretraining text is train + unsupervised minus validation; the test split stays whole
for the evaluate stage.
"""

from pathlib import Path

from scratchgpt import params, stage
from scratchgpt.errors import ScratchGPTError
from scratchgpt.outputs import atomic_dir
from scratchgpt.text import clean_documents, read_documents, split_validation, write_documents


def main(raw: Path, out: Path) -> None:
    val_fraction = params.load("clean").clean.val_fraction
    pool = clean_documents(read_documents(raw / "imdb/train.parquet") + read_documents(raw / "imdb/unsupervised.parquet"))
    splits = {**split_validation(pool, val_fraction), "test": clean_documents(read_documents(raw / "imdb/test.parquet"))}
    for split, texts in splits.items():
        if not texts:
            raise ScratchGPTError(
                f"clean: the imdb {split} split is empty after cleaning; give it more "
                f"documents (data.imdb.max_docs) or change clean.val_fraction = {val_fraction}"
            )
    with atomic_dir(out) as tmp:
        for split, texts in splits.items():
            write_documents(texts, tmp / "imdb" / f"{split}.parquet")
            print(f"imdb/{split}: {len(texts):,} documents")


if __name__ == "__main__":
    stage.run(main)
