"""download: IMDb, from the Hub or a local copy, as parquet in one schema (the fine-tuning
datasets are each downloaded by their own `prepare` stage)."""

from pathlib import Path

from scratchgpt import params, sources, stage
from scratchgpt.outputs import atomic_dir, write_parquet


def main(out: Path) -> None:
    data = params.load("download").data
    tables = {f"imdb/{split}": table for split, table in sources.load_imdb(data.imdb).items()}
    with atomic_dir(out) as tmp:
        for name, table in tables.items():
            write_parquet(table, tmp / f"{name}.parquet")
            print(f"{name}: {table.num_rows:,} documents")


if __name__ == "__main__":
    stage.run(main)
