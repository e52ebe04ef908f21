"""clean: ASCII-only text with newlines for <br />, and a hash-stable validation split.

IMDb pretraining text is train + unsupervised minus validation; the test split stays whole
for the evaluate stage. The lyrics are split the same way.
"""

from pathlib import Path

from scratchgpt import params, stage
from scratchgpt.errors import ScratchGPTError
from scratchgpt.outputs import atomic_dir
from scratchgpt.text import clean_documents, read_documents, split_validation, write_documents


def main(raw: Path, out: Path) -> None:
    val_fraction = params.load("clean").clean.val_fraction
    imdb_pool = clean_documents(
        read_documents(raw / "imdb/train.parquet") + read_documents(raw / "imdb/unsupervised.parquet")
    )
    corpora = {
        "imdb": {
            **split_validation(imdb_pool, val_fraction),
            "test": clean_documents(read_documents(raw / "imdb/test.parquet")),
        },
        "lyrics": split_validation(clean_documents(read_documents(raw / "lyrics/train.parquet")), val_fraction),
    }
    for corpus, splits in corpora.items():
        for split, texts in splits.items():
            if not texts:
                raise ScratchGPTError(
                    f"clean: the {corpus} {split} split is empty after cleaning; give it more "
                    f"documents (data.{corpus}.max_docs) or change clean.val_fraction = {val_fraction}"
                )
    with atomic_dir(out) as tmp:
        for corpus, splits in corpora.items():
            for split, texts in splits.items():
                write_documents(texts, tmp / corpus / f"{split}.parquet")
                print(f"{corpus}/{split}: {len(texts):,} documents")


if __name__ == "__main__":
    stage.run(main)
