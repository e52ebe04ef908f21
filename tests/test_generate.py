"""Generation: the KV cache changes nothing, padding ids are never chosen, sampling is repeatable."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
import torch

from conftest import MODERN_BLOCK, ROOT, ending_the_text, requires_shared_data, tiny_params
from scratchgpt.generate import Sampling, generate, next_token, stop_id, stream
from scratchgpt.model import GPT

TINY = dict(num_heads=2, vocab_size=50, embed_dim=16, attention_dim=16, num_blocks=1, context_length=8,
            dropout_rate=0.0)  # 50 ids, padded to 64 rows


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(**TINY).eval()


def article_generate(model, context, max_new_tokens, context_length):
    """The article's loop: the whole (cropped) context through the model for every new token."""
    for _ in range(max_new_tokens):
        logits = model(context[:, -context_length:])
        context = torch.cat([context, logits[:, -1, :].argmax(dim=-1, keepdim=True)], dim=1)
    return context


def test_greedy_matches_the_article_token_for_token_past_the_context(model):
    context = torch.tensor([[1, 2, 3]])
    ours = generate(model=model, context=context, max_new_tokens=20, context_length=8)
    assert torch.equal(ours, article_generate(model, context, 20, 8))


def test_the_modern_block_matches_the_article_past_the_context_too():
    """RoPE turns the keys it caches at their positions; past the context the window is run again
    from position 0, as the article's loop runs it."""
    torch.manual_seed(0)
    model = GPT(**TINY, **MODERN_BLOCK).eval()
    with torch.no_grad():  # its projections start at zero: weights as after some training
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    context = torch.tensor([[1, 2, 3]])
    ours = generate(model=model, context=context, max_new_tokens=20, context_length=8)
    assert torch.equal(ours, article_generate(model, context, 20, 8))


def test_sampling_never_picks_a_padding_id_and_repeats_with_its_seed(model):
    wide = Sampling(temperature=100.0)  # nearly uniform over every id the model offers
    draws = [torch.cat(list(stream(model, torch.tensor([[1]]), 200, 8, sampling=wide,
                                   generator=torch.Generator().manual_seed(7)))) for _ in range(2)]
    assert torch.equal(draws[0], draws[1])
    assert int(draws[0].max()) < TINY["vocab_size"] < model.config.padded_vocab_size
    assert len(set(draws[0].flatten().tolist())) > 30  # it did explore


def test_top_k_of_one_is_greedy_and_top_p_keeps_the_likeliest():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9]])
    generator = torch.Generator().manual_seed(0)
    assert next_token(logits, Sampling()).item() == 1
    assert {next_token(logits, Sampling(temperature=5.0, top_k=1), generator).item() for _ in range(20)} == {1}
    assert {next_token(logits, Sampling(temperature=1.0, top_p=0.5), generator).item() for _ in range(50)} <= {1, 3}


def test_sampling_settings_are_one_keyword_argument():
    for function in (generate, stream):
        parameters = inspect.signature(function).parameters
        assert list(parameters) == ["model", "context", "max_new_tokens", "context_length", "sampling", "generator",
                                    "stop_at"]
        assert {parameters[name].kind for name in ("sampling", "generator", "stop_at")} == {inspect.Parameter.KEYWORD_ONLY}
    with pytest.raises(dataclasses.FrozenInstanceError):
        Sampling().temperature = 1.0  # type: ignore[misc]


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's example, verbatim, on a tiny random model saved where it looks."""
    from conftest import requires_shared_data
    from scratchgpt.encodings import get_encoding
    from scratchgpt.saved_model import save_model

    requires_shared_data()  # the gpt2 encoding, offline
    [example] = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    save_model(GPT(**{**TINY, "vocab_size": 50257, "context_length": 32}), get_encoding("gpt2"),
               "models/finetuned/coldplay")
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("I want something") and len(printed) > len("I want something\n")


def test_min_p_keeps_the_tokens_at_least_min_p_times_as_likely_as_the_likeliest():
    # probabilities 0.5, 0.3, 0.1, 0.1: at min_p 0.5 the threshold is 0.25
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.1, 0.1]]))
    generator = torch.Generator().manual_seed(0)
    draws = {next_token(logits, Sampling(temperature=1.0, min_p=0.5), generator).item() for _ in range(200)}
    assert draws == {0, 1}
    only_the_best = {next_token(logits, Sampling(temperature=1.0, min_p=1.0), generator).item() for _ in range(50)}
    assert only_the_best == {0}
    # min_p compares probabilities after temperature: at temperature 3, 0.1 is 0.58x as likely as 0.5
    hot = {next_token(logits, Sampling(temperature=3.0, min_p=0.5), generator).item() for _ in range(300)}
    assert hot == {0, 1, 2, 3}


def test_repetition_penalty_divides_positive_logits_and_multiplies_negative_ones():
    from scratchgpt.generate import penalize_repetition

    logits = torch.tensor([[2.0, -1.0, 3.0, 0.5]])
    seen = torch.tensor([[0, 1, 1]])  # token 1 twice: penalised once
    penalised = penalize_repetition(logits, seen, 2.0)
    assert penalised.tolist() == [[1.0, -2.0, 3.0, 0.5]]
    assert logits.tolist() == [[2.0, -1.0, 3.0, 0.5]]  # the input is left as it was
    # Greedy too: the seen favourite (3.0 / 2) falls below an unseen 2.0.
    logits = torch.tensor([[3.0, 2.0]])
    assert next_token(logits, Sampling(repetition_penalty=2.0), seen=torch.tensor([[0]])).item() == 1
    assert next_token(logits, Sampling(repetition_penalty=1.4), seen=torch.tensor([[0]])).item() == 0
    with pytest.raises(ValueError, match="needs the tokens seen so far"):
        next_token(logits, Sampling(repetition_penalty=2.0))  # not silently unpenalised


def test_settings_that_are_off_change_nothing():
    logits = torch.randn(3, 50)
    seen = torch.randint(0, 50, (3, 7))
    off = Sampling(temperature=0.7, repetition_penalty=1.0, min_p=0.0)
    plain = Sampling(temperature=0.7)
    draws = [torch.cat([next_token(logits, s, torch.Generator().manual_seed(1), seen=seen) for _ in range(20)], dim=1)
             for s in (off, plain)]
    assert torch.equal(draws[0], draws[1])
    assert torch.equal(next_token(logits, Sampling(repetition_penalty=1.0), seen=seen), logits.argmax(-1, keepdim=True))


def test_the_penalty_counts_the_prompt_and_what_was_generated(model):
    """Greedy decoding of a random model loops; a strong penalty never repeats a token while unseen ones remain."""
    context = torch.tensor([[1, 2, 3]])
    looped = generate(model, context, 20, 8)[0].tolist()
    assert len(set(looped)) < len(looped)
    varied = generate(model, context, 20, 8, sampling=Sampling(repetition_penalty=1e6))[0].tolist()
    assert len(set(varied)) == len(varied)


def test_the_text_ends_where_the_model_chooses_stop_at_which_is_not_yielded(model):
    context = torch.tensor([[1, 2, 3]])
    greedy = generate(model, context, 20, 8)[0, 3:].tolist()
    first = next(i for i in range(2, 20) if greedy[i] not in greedy[:i])  # a token first chosen after others
    ended = generate(model, context, 20, 8, stop_at=greedy[first])
    assert ended[0, 3:].tolist() == greedy[:first]
    never = next(token for token in range(TINY["vocab_size"]) if token not in greedy)
    assert generate(model, context, 20, 8, stop_at=never)[0, 3:].tolist() == greedy  # the whole length
    sampled = list(stream(model, context, 50, 8, sampling=Sampling(temperature=100.0), generator=torch.Generator().manual_seed(3),
                          stop_at=greedy[first]))
    assert 0 < len(sampled) < 50 and greedy[first] not in sampled  # drawn too, it ends there
    with pytest.raises(ValueError, match="stop_at ends one text; the context holds 2"):
        list(stream(model, torch.tensor([[1], [2]]), 3, 8, stop_at=greedy[first]))


def test_the_sample_stage_ends_at_end_of_text_unless_told_to_go_on(monkeypatch):
    from scratchgpt.encodings import get_encoding
    from scratchgpt.params import SampleParams, parse_section

    requires_shared_data()  # the gpt2 encoding, offline
    monkeypatch.syspath_prepend(str(ROOT))  # the stage scripts, which are not part of the package
    from stages.sample import continuations

    gpt2 = get_encoding("gpt2")
    torch.manual_seed(0)
    prompt = "I want something"
    model, before_the_end = ending_the_text(GPT(**{**TINY, "vocab_size": 50257, "context_length": 32}).eval(),
                                            gpt2.encode(prompt), gpt2.eot_token)
    texts = {}
    for stop in (True, False):
        settings = parse_section(SampleParams, {**tiny_params()["sample"], "prompts": [prompt], "max_new_tokens": 20,
                                                "temperature": 0.0, "repetition_penalty": 1.0,
                                                "stop_at_end_of_text": stop}, "sample")
        [texts[stop]] = continuations(model, gpt2, settings, Sampling.of(dataclasses.asdict(settings)), torch.device("cpu"), "")
    assert texts[True] == gpt2.decode(before_the_end) and texts[True]
    assert texts[False].startswith(texts[True] + "<|endoftext|>") and len(texts[False]) > len(texts[True] + "<|endoftext|>")
    assert (stop_id(gpt2, True), stop_id(gpt2, False)) == (50256, None)
