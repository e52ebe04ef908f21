"""`scratchgpt explore` in a real browser: headless Chromium, driven through Selenium as a person
would use the page. Needs Chromium and its driver (Debian: `apt-get install chromium
chromium-driver`); skipped without them."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import torch
from selenium.webdriver.support.ui import WebDriverWait

from conftest import ROOT, ending_the_text
from scratchgpt.explore.server import Explorer, LoadedModel, load, serving
from scratchgpt.explore.trace import trace_continuation
from scratchgpt.generate import Sampling

sys.path.insert(0, str(ROOT / "scripts"))
from explore_screenshots import CHROMEDRIVER, CHROMIUM, ExplorePage, headless_chromium  # noqa: E402

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


def test_the_page_says_where_the_model_ended_the_text_and_can_go_on_past_it(explore_models):
    loaded = load(explore_models["finetuned"], "cpu")
    prompt = loaded.encoding.encode("Lights go out")
    model, before_the_end = ending_the_text(loaded.model, prompt, loaded.encoding.eot_token)
    with serving(Explorer(LoadedModel("ending", model, loaded.encoding))) as url:
        page = ExplorePage(url)
        try:
            assert page.find("#stop_at_end_of_text").is_selected()  # on unless unticked, as in generate
            status = page.continue_prompt("Lights go out", temperature="0", seed="1", max_new_tokens="20")
            assert status == f"done: {len(before_the_end)} new tokens, then the end of the text, seed 1"
            assert len(page.tokens()) == len(prompt) + len(before_the_end) and page.text_of("#error") == ""
            status = page.continue_prompt("Lights go out", temperature="0", seed="1", max_new_tokens="20",
                                          stop_at_end_of_text="false")
            assert status == "done: 20 new tokens, seed 1"
            assert page.tokens()[len(prompt) + len(before_the_end)].text == "<|endoftext|>"
        finally:
            page.close()


def test_off_loopback_the_page_passes_its_token_on_to_its_requests(explorer):
    with serving(explorer, "0.0.0.0") as url:  # http://0.0.0.0:PORT/?token=...
        browser = ExplorePage(url.replace("0.0.0.0", "127.0.0.1"))  # ExplorePage waits for /info's defaults
        try:
            assert browser.continue_prompt("Lights go out", seed="3", max_new_tokens="4") == "done: 4 new tokens, seed 3"
        finally:
            browser.close()


class _AnotherSite(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<p>another site</p>")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def another_site():
    """The port of another site's page, served on this machine."""
    with ThreadingHTTPServer(("127.0.0.1", 0), _AnotherSite) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.server_address[1]
        server.shutdown()
        thread.join()


# Every way a page could ask the server at `target`, run in that page: for each, what the page
# learns ("opaque": that an answer came, nothing of it), or "refused" where the browser refuses.
ATTEMPTS = """
const [target, done] = [arguments[0], arguments[arguments.length - 1]];
const body = JSON.stringify({prompt: "Lights go out", temperature: "0", top_k: "50", top_p: "0.95",
                             repetition_penalty: "1.0", min_p: "0.0", max_new_tokens: "4"});
const read = async (response) => response.type === "opaque" ? "opaque" : `${response.status} ${await response.text()}`;
Promise.allSettled([
  fetch(target + "generate", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body}).then(read),
  fetch(target + "generate", {method: "POST", headers: {"Content-Type": "application/json"}, body}).then(read),
  fetch(target + "info").then(read),
]).then((results) => done(results.map((r) => r.status === "fulfilled" ? r.value : "refused")));
"""
POST_A_FORM = """
const form = Object.assign(document.createElement("form"), {method: "POST", action: arguments[0], enctype: "text/plain"});
form.append(Object.assign(document.createElement("input"), {name: "prompt", value: "Lights go out"}));
document.body.append(form);
form.submit();
"""


def test_another_sites_page_can_neither_run_nor_read_the_model(explorer, another_site, monkeypatch):
    generated = []
    events = explorer.events
    monkeypatch.setattr(explorer, "events", lambda request: generated.append(request) or events(request))
    with serving(explorer) as url:
        port = urlsplit(url).port
        # evil.example leads to this machine, as a DNS-rebinding attacker makes its name do.
        driver = headless_chromium("--host-resolver-rules=MAP evil.example 127.0.0.1")
        try:
            driver.get(f"http://evil.example:{another_site}/")
            # Sent, but refused by the server (the page learns only that an answer came); the JSON
            # one stopped at its preflight; the answer to a GET unreadable.
            assert driver.execute_async_script(ATTEMPTS, url) == ["opaque", "refused", "refused"]
            driver.execute_script(POST_A_FORM, url + "generate")  # the classic cross-site form
            body = WebDriverWait(driver, 30).until(
                lambda d: d.current_url == url + "generate" and d.find_element("tag name", "body").text)
            assert json.loads(body)["error"] == (f"Origin 'http://evil.example:{another_site}' is another site's page: "
                                                 "only the page that `scratchgpt explore` serves may use it")
            # DNS rebinding: the attacker's name now leads to the server, which knows it for another's.
            driver.get(f"http://evil.example:{port}/")
            refused = {"error": f"Host 'evil.example:{port}' is not a name of this server: open the address that "
                                "`scratchgpt explore` printed (or name this one with --host)"}
            assert json.loads(driver.find_element("tag name", "body").text) == refused
            answers = driver.execute_async_script(ATTEMPTS, "/")  # same-origin now: every answer readable
            assert [answer.split(" ", 1)[0] for answer in answers] == ["403"] * 3
            assert all(json.loads(answer.split(" ", 1)[1]) == refused for answer in answers)
        finally:
            driver.quit()
        assert generated == []
        page = ExplorePage(url)  # while the page itself, at its address, works as ever
        try:
            assert page.continue_prompt("Lights go out", seed="3", max_new_tokens="4") == "done: 4 new tokens, seed 3"
        finally:
            page.close()
    assert len(generated) == 1


def test_the_screenshot_command_saves_both_views(explore_models, tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts/explore_screenshots.py"), "--model", str(explore_models["finetuned"]),
                    "--compare", str(explore_models["pretrained"]), "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("probabilities.png", "attention.png"):
        image = (tmp_path / name).read_bytes()
        width, height = struct.unpack(">II", image[16:24])
        assert image[:8] == b"\x89PNG\r\n\x1a\n" and width >= 1200 and height >= 800  # the whole page, not a blank one
