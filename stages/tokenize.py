"""tokenize: every cleaned split to token ids in a few uint16 shards, plus meta.json per corpus.

The tokenizer is tiktoken's `tokenize.encoding`, or, with `tokenize.vocab_size`, a byte-level
BPE trained here on IMDb's training split, saved beside the shards. It is the pretrained model's
tokenizer, so it is trained on the pretraining text alone: a fine-tuning dataset added later
(the `prepare` stage encodes it with this tokenizer) re-runs neither it nor pretraining.
"""

from pathlib import Path

from scratchgpt import encodings, params, stage, tokens
from scratchgpt.errors import warn
from scratchgpt.outputs import atomic_dir
from scratchgpt.text import read_documents

TRAINING_SPLIT = "imdb/train.parquet"  # never validation or test text


def main(clean: Path, out: Path) -> None:
    settings = params.load("tokenize").tokenize
    if settings.vocab_size is None:
        encoding = encodings.get_encoding(settings.encoding)
    else:
        texts = read_documents(clean / TRAINING_SPLIT)
        encoding = encodings.train_bpe(texts, settings.vocab_size)
        print(f"trained {encoding.name} on {len(texts):,} training documents")
        if encoding.n_vocab < settings.vocab_size:
            warn(f"tokenize.vocab_size = {settings.vocab_size}: the training text had pairs for only "
                 f"{encoding.n_vocab:,} ids, so the tokenizer has {encoding.n_vocab:,}")
    with atomic_dir(out) as tmp:
        if encodings.is_trained(encoding):
            encodings.save_encoding(encoding, tmp)
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
