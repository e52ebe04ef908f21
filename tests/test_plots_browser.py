"""`dvc plots show`'s page draws the reference run's curves in a real (headless) browser.

Needs Chromium (Debian: `apt-get install chromium`); skipped without it. The page loads Vega from
a CDN; machines without network get the same libraries inline (vl-convert's bundle) instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import vl_convert
import yaml

from conftest import DVC, ROOT, run

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CDN_SCRIPT = re.compile(r'\s*<script src="https://cdn\.jsdelivr\.net/npm/[^"]+"></script>')


def offline(page: str) -> str:
    """The page with its CDN scripts replaced by one inline bundle of Vega, Vega-Lite and Vega-Embed."""
    page, replaced = CDN_SCRIPT.subn("", page)
    assert replaced == 3, "dvc plots show's page no longer loads vega, vega-lite and vega-embed"
    return page.replace("</title>", f"</title>\n<script>{vl_convert.javascript_bundle()}</script>", 1)


def chromium(*args: str) -> str:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                           *args], capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium)")
def test_the_plots_page_draws_every_curve(tmp_path):
    run([*DVC, "plots", "show", "-o", str(tmp_path / "dvc_plots")], ROOT)
    page = tmp_path / "dvc_plots/index.html"
    page.write_text(offline(page.read_text()))
    dom = chromium("--dump-dom", page.as_uri())
    embedded = page.read_text().count("vegaEmbed('#")
    assert embedded >= 3 and dom.count('class="chart-wrapper') == embedded  # every plot rendered
    assert dom.count('class="mark-line role-mark') >= embedded  # with its lines drawn
    titles = [next(iter(plot)) for plot in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]]
    for title in titles:
        assert f">{title}</text>" in dom  # the title drawn in the chart, not only in the source
    chromium("--hide-scrollbars", "--window-size=1300,1500", f"--screenshot={tmp_path / 'plots.png'}", page.as_uri())
    assert (tmp_path / "plots.png").stat().st_size > 50_000  # a page of charts, not a blank one
