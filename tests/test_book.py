"""The rendered book: every chapter present, nothing loaded from the network, math typeset in a real browser.

`bash runs/test.sh` renders the book before pytest runs. Run alone, these tests skip when there is no book,
except on CI, where a missing book is a failure.
"""
import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
from conftest import ROOT

from nanochat.devtools import book_html_dir, toc_files

HTML = book_html_dir(ROOT)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def html_dir():
    if not (HTML / "index.html").exists():
        if os.environ.get("CI"): pytest.fail("the book was not rendered: run `python -m nanochat.devtools book`")
        pytest.skip("no rendered book: run `python -m nanochat.devtools book` first")
    return HTML


def test_every_page_of_the_toc_is_rendered(html_dir):
    for page in toc_files(ROOT):
        assert (html_dir / f"{page}.html").exists(), page


EXTERNAL = re.compile(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=[\"'](https?:)?//", re.I)

def test_nothing_is_loaded_from_the_network(html_dir):
    for page in html_dir.glob("*.html"):
        hits = [m.group(0) for m in EXTERNAL.finditer(page.read_text(encoding="utf-8"))]
        # <link rel="canonical"> style references are fine only if not stylesheets/scripts; we allow none at all.
        assert not hits, f"{page.name} loads from the network: {hits[:3]}"


def test_mathjax_is_served_from_the_book(html_dir):
    assert (html_dir / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert "_static/mathjax/tex-chtml.js" in (html_dir / "01_config.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def book_server(html_dir):
    "Serve the built book on 127.0.0.1 (a free port) for the length of the module."
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html_dir))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.browser
def test_chapter_opens_in_chromium_with_typeset_math(book_server):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"): pytest.fail("Debian's chromium is missing: runs/setup.sh installs it")
        pytest.skip("no chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright
    shots = ROOT / "_build" / "book" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            page.goto(f"{book_server}/01_config.html", wait_until="load")
            assert "Configuration" in page.title()
            page.wait_for_selector("mjx-container", timeout=30_000)  # MathJax replaced the TeX with typeset math
            assert page.locator("mjx-container").count() >= 1
            assert "\\rightarrow" not in page.locator("article").inner_text()  # no raw TeX left on the page
            page.screenshot(path=str(shots / "01_config.png"), full_page=False)
        finally:
            browser.close()
    assert (shots / "01_config.png").stat().st_size > 10_000


def test_hidden_cells_and_reference_solutions_stay_out_of_the_book(html_dir):
    "Cells marked `#| hide` (tests, reference solutions of exercises) run during the build but are not shown."
    import html as html_lib
    import json

    from nanochat.devtools import cell_text, split_directives
    checked = 0
    for page in toc_files(ROOT):
        rendered = html_lib.unescape(re.sub(r"<[^>]+>", "", (html_dir / f"{page}.html").read_text(encoding="utf-8")))
        for cell in json.loads((ROOT / "nbs" / f"{page}.ipynb").read_text())["cells"]:
            if cell["cell_type"] != "code": continue
            directives, body = split_directives(cell_text(cell))
            lines = [ln.strip() for ln in body.splitlines() if len(ln.strip()) > 25]
            if "hide" in directives and lines:
                assert lines[0] not in rendered, f"{page}: hidden cell shown: {lines[0]}"
                checked += 1
            elif "export" in directives and lines:
                assert lines[0] in rendered, f"{page}: exported code missing from the book: {lines[0]}"
    assert checked >= 3  # every chapter with exercises hides its reference solution


def test_figures_are_drawn_into_the_pages(html_dir):
    "Every chapter that draws a plot shows it as an image (the kernel's inline backend, not a silent Agg backend)."
    drawn = [page for page in toc_files(ROOT) if "plt.show()" in (ROOT / "nbs" / f"{page}.ipynb").read_text()]
    assert drawn, "no chapter draws a figure?"
    for page in drawn:
        assert re.search(r"<img[^>]+src=\"_images/", (html_dir / f"{page}.html").read_text(encoding="utf-8")), page
