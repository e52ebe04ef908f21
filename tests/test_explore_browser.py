"""`scratchgpt explore` in a real browser: headless Chromium, driven through Selenium as a person
would use the page. Needs Chromium and its driver (Debian: `apt-get install chromium
chromium-driver`); skipped without them."""

from __future__ import annotations

import re
import struct
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from scratchgpt.explore.server import Explorer, load, serving
from scratchgpt.explore.trace import trace_continuation
from scratchgpt.generate import Sampling

sys.path.insert(0, str(ROOT / "scripts"))
from explore_screenshots import CHROMEDRIVER, CHROMIUM, ExplorePage  # noqa: E402

pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="no Chromium or chromedriver here (Debian: apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def explorer(explore_models) -> Explorer:
    return Explorer(load(explore_models["finetuned"], "cpu"), load(explore_models["pretrained"], "cpu"))


@pytest.fixture(scope="module")
def page(explorer):
    with serving(explorer) as url:
        browser = ExplorePage(url)
        yield browser
        browser.close()


def test_type_a_prompt_watch_it_continue_and_point_at_a_token(page, explorer):
    status = page.continue_prompt("Lights go out", seed="11", max_new_tokens="8", temperature="0.8", top_k="50", top_p="0.95")
    assert status == "done: 8 new tokens, seed 11"
    # What the page shows is what the model did: trace the same draw here.
    main = explorer.main
    prompt = main.encoding.encode("Lights go out")
    steps = trace_continuation(main.model, main.encoding, prompt, 8, Sampling(0.8, 50, 0.95), torch.Generator().manual_seed(11))
    expected = [token for step in steps for token in step]
    tokens = page.tokens()
    assert [t.text for t in tokens] == [t["text"] for t in expected]
    assert [t.get_attribute("class") for t in tokens].count("tok new") == 8  # underlined: chosen by the sampler

    chosen = expected[len(prompt) + 1]
    tooltip = page.point_at(tokens[len(prompt) + 1])
    assert "chosen by the sampler" in tooltip
    shown = re.search(r"finetuned: p = (\S+), rank (\d+)", tooltip)
    assert float(shown[1]) == pytest.approx(chosen["probability"], rel=0.05) and int(shown[2]) == chosen["rank"]
    assert "pretrained: p = " in tooltip  # the other model's belief about the same token
    rows = page.driver.find_elements("css selector", "#tooltip table.candidates tr")
    assert len(rows) == 10 + (chosen["rank"] > 10)
    first = chosen["candidates"][0]["text"].replace(" ", "\u2423")
    assert rows[0].text.startswith(f"1. {first}")
    taken = page.driver.find_elements("css selector", "#tooltip tr.taken")
    assert len(taken) == 1 and taken[0].text.endswith("\u2190 taken")

    compared = page.tokens("text-compare")  # the same text, side by side, under the other model
    assert [t.text for t in compared] == [t.text for t in tokens]


def test_switch_the_attention_view(page, explorer):
    if not page.tokens():
        page.continue_prompt("Lights go out", seed="11", max_new_tokens="8")
    n = len(page.tokens())
    page.show_attention(block=0, head=0, token_index=n - 1)
    assert page.text_of("#heatmap-caption") == f"block 0, head 0: {n} x {n} tokens"
    first_head = page.heatmap_pixels()
    looked_at = page.text_of("#looked-at")
    assert f"(token {n - 1}), block 0, head 0, looked most at:" in looked_at
    weights = [float(w.rstrip("%")) for w in re.findall(r"(\d+\.\d+)%", looked_at)]
    assert len(weights) == 5 and weights == sorted(weights, reverse=True) and sum(weights) <= 100.01

    page.show_attention(block=1, head=1, token_index=2)
    assert page.text_of("#heatmap-caption") == f"block 1, head 1: {n} x {n} tokens"
    assert page.heatmap_pixels() != first_head  # another head, another map
    assert "(token 2), block 1, head 1" in page.text_of("#looked-at")
    assert len(re.findall(r"\d+\.\d+%", page.text_of("#looked-at"))) == 3  # token 2 sees only tokens 0..2


def test_mistakes_are_a_message_on_the_page(page):
    page.find("#tab-probabilities").click()
    assert page.continue_prompt("Lights go out", top_p="1.5") == "--top-p = 1.5: must be in (0, 1]"
    assert page.continue_prompt("Lights go out", top_p="0.95", min_p="2") == "--min-p = 2: must be in [0, 1]"
    assert (page.continue_prompt("Lights go out", min_p="0.0", repetition_penalty="0")
            == "--repetition-penalty = 0: must be > 0")
    assert page.continue_prompt("", repetition_penalty="1.0").startswith("the prompt is empty")


def test_off_loopback_the_page_passes_its_token_on_to_its_requests(explorer):
    with serving(explorer, "0.0.0.0") as url:  # http://0.0.0.0:PORT/?token=...
        browser = ExplorePage(url.replace("0.0.0.0", "127.0.0.1"))  # ExplorePage waits for /info's defaults
        try:
            assert browser.continue_prompt("Lights go out", seed="3", max_new_tokens="4") == "done: 4 new tokens, seed 3"
        finally:
            browser.close()


def test_the_screenshot_command_saves_both_views(explore_models, tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts/explore_screenshots.py"), "--model", str(explore_models["finetuned"]),
                    "--compare", str(explore_models["pretrained"]), "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("probabilities.png", "attention.png"):
        image = (tmp_path / name).read_bytes()
        width, height = struct.unpack(">II", image[16:24])
        assert image[:8] == b"\x89PNG\r\n\x1a\n" and width >= 1200 and height >= 800  # the whole page, not a blank one
