"""The README's two pictures of `scratchgpt explore`: its probability view and its attention view.

    python scripts/explore_screenshots.py --model models/finetuned/coldplay --compare models/pretrained --out docs/explore/

Serves the page on a free local port, drives headless Chromium through Selenium (Debian:
`apt-get install chromium chromium-driver`), continues a prompt with a fixed seed, and saves
probabilities.png (a continuation token pointed at, its candidates showing) and attention.png
(a heat map, a token chosen). `ExplorePage` is also what tests/test_explore_browser.py drives.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from scratchgpt.explore.server import Explorer, load, serving

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")


def headless_chromium(*arguments: str, width: int = 1400, height: int = 1000) -> webdriver.Chrome:
    """Headless Chromium, with Chromium's command-line `arguments` besides this script's own."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    own = ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}")
    for argument in (*own, *arguments):
        options.add_argument(argument)
    # The Debian driver, given explicitly: Selenium would otherwise try to download one.
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


class ExplorePage:
    """The explore page in headless Chromium, driven as a person would: type, click, point."""

    def __init__(self, url: str, width: int = 1400, height: int = 1000):
        self.driver = headless_chromium(width=width, height=height)
        self.driver.get(url)
        self.wait_for(lambda d: d.find_element(By.ID, "temperature").get_attribute("value"))  # /info has arrived

    def close(self) -> None:
        self.driver.quit()

    def wait_for(self, condition, seconds: float = 60):
        return WebDriverWait(self.driver, seconds).until(condition)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text_of(self, css: str) -> str:
        return self.find(css).text

    def continue_prompt(self, prompt: str, **settings: str) -> str:
        """Type `prompt` and `settings` (the page's field ids: top_p, seed, ...; a checkbox's
        "true" or "false"), press Continue, wait for the end of the continuation or an error; the
        status or error line."""
        for field, value in {"prompt": prompt, **settings}.items():
            box = self.find(f"#{field}")
            if box.get_attribute("type") == "checkbox":
                if box.is_selected() != (value == "true"):
                    box.click()
            else:
                box.clear()
                box.send_keys(value)
        self.find("#run").click()
        return self.wait_for(lambda d: d.find_element(By.ID, "error").text or
                             (d.find_element(By.ID, "status").text.startswith("done") and d.find_element(By.ID, "status").text))

    def tokens(self, pane: str = "text-main") -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, f"#{pane} .tok")

    def point_at(self, token: WebElement) -> str:
        """Move the mouse onto `token`; the tooltip's text."""
        ActionChains(self.driver).move_to_element(token).perform()
        self.wait_for(lambda d: d.find_element(By.ID, "tooltip").is_displayed())
        return self.text_of("#tooltip")

    def show_attention(self, block: int, head: int, token_index: int) -> None:
        """Open the attention view on `block` and `head`, and choose the token at `token_index`."""
        self.find("#tab-attention").click()
        Select(self.find("#block")).select_by_value(str(block))
        Select(self.find("#head")).select_by_value(str(head))
        self.driver.find_elements(By.CSS_SELECTOR, "#attention-text .tok")[token_index].click()

    def heatmap_pixels(self) -> str:
        return self.driver.execute_script("return document.getElementById('heatmap').toDataURL()")

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/finetuned/coldplay")
    parser.add_argument("--compare", default="models/pretrained")
    parser.add_argument("--out", type=Path, default=Path("docs/explore"))
    parser.add_argument("--prompt", default="Lights go out and I")
    parser.add_argument("--seed", default="7")
    parser.add_argument("--max-new-tokens", default="24")
    args = parser.parse_args()
    if CHROMIUM is None or CHROMEDRIVER is None:
        parser.exit(1, "error: needs Chromium and its driver (Debian: apt-get install chromium chromium-driver)\n")
    explorer = Explorer(load(args.model, "cpu"), load(args.compare, "cpu") if args.compare else None)
    with serving(explorer) as url:
        page = ExplorePage(url)
        try:
            status = page.continue_prompt(args.prompt, seed=args.seed, max_new_tokens=args.max_new_tokens)
            if not status.startswith("done"):
                parser.exit(1, f"error: the page says: {status}\n")
            tokens = page.tokens()
            prompt_length = len(tokens) - int(args.max_new_tokens)
            page.point_at(tokens[prompt_length + 2])  # a token the sampler chose
            page.screenshot(args.out / "probabilities.png")
            page.show_attention(block=explorer.main.model.config.num_blocks - 1, head=0, token_index=len(tokens) - 1)
            page.screenshot(args.out / "attention.png")
        finally:
            page.close()
    print(f"wrote {args.out / 'probabilities.png'} and {args.out / 'attention.png'}")


if __name__ == "__main__":
    main()
