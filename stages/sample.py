"""sample: text from the pretrained model and the one fine-tuned on a dataset, for every prompt,
side by side in a markdown table."""

import dataclasses
import html
from pathlib import Path

import tiktoken
import torch

from scratchgpt import params, stage
from scratchgpt.saved_model import load_model
from scratchgpt.devices import prepare
from scratchgpt.generate import Sampling, stop_id, stream, text_to_token_ids
from scratchgpt.model import GPT
from scratchgpt.outputs import atomic_file
from scratchgpt.params import SampleParams, bad_value
from scratchgpt.progress import progress
from scratchgpt.quantize import quantize


def cell(text: str) -> str:
    """`text` as one markdown table cell: escaped, its line breaks kept."""
    return html.escape(text, quote=False).replace("|", "&#124;").replace("\n", "<br>")


def continuations(model: GPT, encoding: tiktoken.Encoding, settings: SampleParams, sampling: Sampling,
                  device: torch.device, name: str) -> list[str]:
    """Each of the settings' prompts continued by `model`, prompt i drawn with seed `seed + i`, to the
    end of the text where the settings stop there."""
    texts = []
    for index, prompt in enumerate(settings.prompts):
        context = text_to_token_ids(prompt, encoding, device)
        if not 0 < context.size(1) <= model.config.context_length:
            raise bad_value(
                f"sample.prompts[{index}]", prompt,
                f"is {context.size(1)} tokens; a prompt needs 1 to {model.config.context_length} (the model's context)",
            )
        generator = torch.Generator(device).manual_seed(settings.seed + index)
        tokens = stream(model, context, max_new_tokens=settings.max_new_tokens,
                        context_length=model.config.context_length, sampling=sampling, generator=generator,
                        stop_at=stop_id(encoding, settings.stop_at_end_of_text))
        bar = progress(tokens, total=settings.max_new_tokens, desc=f"{name}, prompt {index + 1}", unit="token")
        texts.append(encoding.decode([int(token) for token in bar]))
    return texts


def main(dataset: str, pretrained: Path, finetuned: Path, out: Path) -> None:
    settings = params.load("sample").sample
    device = prepare(settings.device, "fp32", None, "sample").device
    sampling = Sampling.of(dataclasses.asdict(settings))
    columns = {}
    for name, folder in (("pretrained", pretrained), ("finetuned", finetuned)):
        model, encoding = load_model(folder, device)
        model = quantize(model, settings.quantize, "sample.quantize")
        columns[name] = continuations(model, encoding, settings, sampling, device, name)
    described = [f"temperature {settings.temperature}", f"top_k {settings.top_k}", f"top_p {settings.top_p}"]
    # Settings that are off go unnamed, so the samples of runs made before they existed keep their bytes.
    if settings.repetition_penalty != 1.0:
        described.append(f"repetition_penalty {settings.repetition_penalty}")
    if settings.min_p > 0:
        described.append(f"min_p {settings.min_p}")
    if settings.quantize != "none":
        described.append(f"{settings.quantize} weights")
    if settings.stop_at_end_of_text:  # off: going on past it, as every sample did before the key
        described.append("stopping at end of text")
    described += [f"{settings.max_new_tokens} new tokens", f"seed {settings.seed}"]
    lines = [
        "# Samples",
        "",
        ", ".join(described),
        "",
        f"| prompt | pretrained (IMDb) | fine-tuned ({cell(dataset)}) |",
        "| --- | --- | --- |",
    ]
    for index, prompt in enumerate(settings.prompts):
        lines.append(f"| **{cell(prompt)}** | {cell(columns['pretrained'][index])} | {cell(columns['finetuned'][index])} |")
    with atomic_file(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    stage.run(main)
