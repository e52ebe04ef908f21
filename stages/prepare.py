"""prepare: one fine-tuning dataset (params `datasets.<name>`), downloaded, cleaned, split and
encoded with the pretrained model's tokenizer, as the data stages do for IMDb.

`data/finetune/<name>/` holds its train and val token shards and meta.json. The dataset's
`val_fraction` of its documents, chosen by a hash of their text and `split_seed`, is held out:
the evaluate_finetuned stage scores every token of it.
"""

from pathlib import Path

from scratchgpt import params, sources, stage, tokens
from scratchgpt.errors import ScratchGPTError
from scratchgpt.outputs import atomic_dir
from scratchgpt.text import clean_documents, deduplicate, split_validation


def main(dataset: str, pretraining_tokens: Path, out: Path) -> None:
    settings = params.load("prepare", item=dataset)
    data, key = settings.datasets, f"datasets.{dataset}"
    documents = clean_documents(sources.load_documents(data, key).column("text").to_pylist())
    unique = deduplicate(documents)
    if len(unique) < len(documents):
        print(f"{key}: dropped {len(documents) - len(unique)} exact repeat(s) of other documents")
    splits = split_validation(unique, data.val_fraction, data.split_seed)
    for split, texts in splits.items():
        if not texts:
            raise ScratchGPTError(
                f"prepare: the {dataset} {split} split is empty ({len(unique)} documents after cleaning); "
                f"give it more documents or change {key}.val_fraction = {data.val_fraction}"
            )
    encoding = tokens.TokenShards(pretraining_tokens / "imdb", "train").load_encoding()
    with atomic_dir(out) as tmp:
        written = {}
        for split, texts in splits.items():
            written[split] = tokens.tokenize_split(encoding, texts, tmp, split, settings.tokenize.shard_tokens)
            size = sum(len(text.encode("utf-8")) for text in texts)
            print(f"{dataset}/{split}: {len(texts):,} documents, {written[split]['tokens']:,} tokens, {size:,} bytes")
        tokens.write_meta(tmp, encoding, written)


if __name__ == "__main__":
    stage.run(main)
