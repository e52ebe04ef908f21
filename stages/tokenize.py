"""tokenize: every cleaned split to tiktoken ids in a few uint16 shards, plus meta.json per corpus."""

from pathlib import Path

from scratchgpt import params, stage, tokens
from scratchgpt.outputs import atomic_dir
from scratchgpt.text import read_documents


def main(clean: Path, out: Path) -> None:
    settings = params.load("tokenize").tokenize
    encoding = tokens.get_encoding(settings.encoding)
    with atomic_dir(out) as tmp:
        for corpus in sorted(p for p in clean.iterdir() if p.is_dir()):
            splits = {}
            for path in sorted(corpus.glob("*.parquet")):
                texts = read_documents(path)
                splits[path.stem] = tokens.tokenize_split(
                    encoding, texts, tmp / corpus.name, path.stem, settings.shard_tokens
                )
                print(f"{corpus.name}/{path.stem}: {splits[path.stem]['tokens']:,} tokens, {len(texts):,} documents")
            tokens.write_meta(tmp / corpus.name, encoding, splits)


if __name__ == "__main__":
    stage.run(main)
