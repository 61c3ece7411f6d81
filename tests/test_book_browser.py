"""The built book as a reader's browser shows it: every page of ``_build/html`` opened in headless Chromium with
the network off (any request that is not a local file is refused and counts as a failure).

For every page: no console errors, no failed or remote requests, no markup errors rendered; MathJax has typeset
every math element (and reported no TeX error); every image has loaded; every link into the book resolves to a
file, and to an element with that id when it names a fragment.

Needs the built book (``make book``), the ``playwright`` Python package (the ``test`` extra) and a system Chromium
(Debian: ``apt-get install chromium``); Playwright drives that binary, nothing is downloaded. Set
``FLOWLIB_SCREENSHOTS=<folder>`` to save a screenshot of every page.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.parse
from pathlib import Path

import pytest

from flowlib.checkpoints import load_checkpoint
from flowlib.coding import VectorRANS
from flowlib.transforms import AffineCoupling

BOOK = Path(__file__).resolve().parent.parent / "_build" / "html"
SKIPPED_FOLDERS = {"_static", "_sources", "_images", "_sphinx_design_static", "_panels_static"}
ID_PATTERN = re.compile(r"""\bid=["']([^"']+)["']""")
REDIRECT = re.compile(r"""http-equiv=["']refresh["'][^>]*content=["'][^"']*url=([^"']+)["']""", re.IGNORECASE)


def _pages() -> list[Path]:
    if not BOOK.is_dir():
        return []
    return sorted(path for path in BOOK.rglob("*.html")
                  if not SKIPPED_FOLDERS & set(path.relative_to(BOOK).parts[:-1]))


def _chromium() -> str | None:
    configured = os.environ.get("FLOWLIB_CHROMIUM")
    if configured:
        return configured
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


PAGES = _pages()


@pytest.fixture(scope="module")
def browser():
    if not PAGES:
        pytest.skip(f"the book is not built ({BOOK} has no pages): run `make book` first")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: `pip install playwright` (the test extra); it drives the "
                    "system's Chromium and needs no browser download")
    executable = _chromium()
    if executable is None:
        pytest.skip("Chromium is not installed: `sudo apt-get install chromium` (Debian/Ubuntu), or set "
                    "FLOWLIB_CHROMIUM to a Chromium or Chrome binary")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


_ids: dict[Path, set[str]] = {}


def _ids_of(path: Path) -> set[str]:
    if path not in _ids:
        _ids[path] = set(ID_PATTERN.findall(path.read_text(errors="replace")))
    return _ids[path]


def _broken_link(href: str) -> str | None:
    """Why ``href`` (an absolute URL from the page) does not resolve inside the book, or None if it does."""
    parts = urllib.parse.urlsplit(href)
    if parts.scheme != "file":
        return None  # links that leave the book are not followed offline
    target = Path(urllib.parse.unquote(parts.path))
    if target.is_dir():
        target = target / "index.html"
    if not target.exists():
        return f"{href}: no such file"
    fragment = urllib.parse.unquote(parts.fragment)
    if fragment and target.suffix == ".html" and fragment not in _ids_of(target):
        return f"{href}: no element with id {fragment!r}"
    return None


@pytest.mark.parametrize("page_path", PAGES or [None], ids=[str(p.relative_to(BOOK)) for p in PAGES] or ["book"])
def test_page_renders_offline(browser, page_path):
    redirect = REDIRECT.search(page_path.read_text(errors="replace"))
    if redirect:  # the root index.html only forwards to the first page: check where it points
        assert _broken_link(urllib.parse.urljoin(page_path.as_uri(), redirect.group(1))) is None
        return
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"JavaScript error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"failed request: {request.url}"))

    def offline(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            problems.append(f"remote request (the network is off): {route.request.url}")
            route.abort()

    page.route("**/*", offline)
    try:
        page.goto(page_path.as_uri(), wait_until="load")
        markup_errors = page.locator(".problematic, .system-message").all_inner_texts()
        problems += [f"reStructuredText/MyST error rendered on the page: {text[:80]!r}" for text in markup_errors]
        math_elements = page.locator(".math").count()
        if math_elements:
            typeset = page.evaluate(
                """async () => {
                    if (!window.MathJax || !MathJax.startup) return {loaded: false};
                    await MathJax.startup.promise;
                    return {loaded: true, containers: document.querySelectorAll('mjx-container').length,
                            errors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent)};
                }"""
            )
            if not typeset["loaded"]:
                problems.append(f"{math_elements} math elements but MathJax did not load")
            elif typeset["containers"] < math_elements or typeset["errors"]:
                problems.append(f"MathJax typeset {typeset['containers']} of {math_elements} math elements; TeX "
                                f"errors: {typeset['errors'][:5]}")
        images = page.evaluate(
            """async () => Promise.all([...document.images].map(async (image) => {
                image.loading = 'eager';
                try { await image.decode(); } catch (error) {}
                return {src: image.currentSrc || image.src, ok: image.complete && image.naturalWidth > 0};
            }))"""
        )
        problems += [f"image did not load: {image['src']}" for image in images if not image["ok"]]
        links = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
        problems += [f"broken link {reason}" for reason in map(_broken_link, links) if reason]
        if os.environ.get("FLOWLIB_SCREENSHOTS"):
            shot = Path(os.environ["FLOWLIB_SCREENSHOTS"]) / (str(page_path.relative_to(BOOK)).replace("/", "_")
                                                              + ".png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
    finally:
        page.close()
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_api_reference_documents_the_library():
    """The API pages hold the docstrings (autodoc ran), and the index and search cover them."""
    if not PAGES:
        pytest.skip(f"the book is not built ({BOOK} has no pages): run `make book` first")
    api = sorted((BOOK / "book" / "api").glob("*.html"))
    assert len(api) >= 8, f"API reference pages: {[path.name for path in api]}"
    for page in api:
        if page.name != "index.html":
            assert page.read_text().count('class="sig sig-object py"') >= 3, f"{page.name} documents no members"
    index = (BOOK / "genindex.html").read_text()
    for package, documented in (("flowlib.checkpoints", load_checkpoint), ("flowlib.transforms", AffineCoupling),
                                ("flowlib.coding", VectorRANS)):
        # Each object is documented once: under the package that exports it (flowlib.transforms.AffineCoupling)
        # or at the module that defines it (flowlib.coding.rans.VectorRANS).
        names = {f"{package}.{documented.__qualname__}", f"{documented.__module__}.{documented.__qualname__}"}
        assert any(name in index for name in names), f"none of {sorted(names)} is in the general index"
    assert "flowlib.compress" in (BOOK / "searchindex.js").read_text()
