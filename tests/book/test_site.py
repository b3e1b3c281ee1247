"""The book's website, built from the committed notebooks and loaded page by page in headless Chromium.

One test, so that one pytest worker builds the site and drives one browser. It collects every problem on every page
(an image that did not load, an internal link to a missing page or anchor, TeX left unrendered in the visible text, a
console error, a request that left this machine) and fails with the whole list. `make test` installs Debian's
`chromium` and `chromium-driver`; without them the test is skipped with that instruction.
"""
import functools
import http.server
import re
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from book import site  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]
SCREENSHOT_DIR = ROOT / "build" / "screenshots"
SCREENSHOT_CHAPTER = "06_transformer"

# Text nodes outside code, scripts and MathJax's own output: what a reader sees as prose.
VISIBLE_PROSE_JS = """
const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'TEXTAREA', 'MJX-CONTAINER', 'MJX-ASSISTIVE-MML', 'NOSCRIPT']);
const out = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  let el = node.parentElement, hidden = false;
  for (let e = el; e; e = e.parentElement) { if (skip.has(e.tagName)) { hidden = true; break; } }
  if (!hidden && el.checkVisibility() && node.textContent.trim()) out.push(node.textContent);
}
return out.join(' ');
"""
RAW_TEX = re.compile(r"\$\$|\\frac|\\begin\{|\\mathbf|\\sum_|\\sqrt|\\left|\$[^$\s][^$]{0,200}\\[a-zA-Z]+[^$]{0,200}\$")
WAIT_MATHJAX_JS = """
const done = arguments[arguments.length - 1];
if (window.MathJax && MathJax.startup && MathJax.startup.promise) { MathJax.startup.promise.then(() => done(true), e => done(String(e))); }
else { done(false); }
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def built_site():
    index = site.build()  # incremental: Sphinx re-reads only what changed since the last build
    return index.parent


@pytest.fixture(scope="module")
def server(built_site):
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("headless Chromium is not installed: `make test` installs it (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def _anchors(html_path, cache={}):
    if html_path not in cache:
        cache[html_path] = set(re.findall(r"""\sid=["']([^"']+)["']""", html_path.read_text(encoding="utf-8")))
    return cache[html_path]


def _check_page(driver, base, site_dir, page):
    """Load one page; return (its problems, the number of formulas MathJax rendered on it)."""
    url = f"{base}/{page.relative_to(site_dir).as_posix()}"
    driver.get_log("browser")  # drop what earlier pages left
    driver.get(url)
    driver.execute_async_script(WAIT_MATHJAX_JS)
    problems = []
    broken_images = driver.execute_script(
        "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
    problems += [f"image did not load: {src}" for src in broken_images]
    for href in set(driver.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)")):
        target = urlparse(href)
        if target.scheme not in ("http", "https") or target.netloc != urlparse(base).netloc:
            continue
        path, fragment = unquote(target.path), unquote(target.fragment)
        file = site_dir / path.lstrip("/")
        if file.is_dir():
            file = file / "index.html"
        if not file.exists():
            problems.append(f"broken link: {href}")
        elif fragment and file.suffix == ".html" and fragment not in _anchors(file):
            problems.append(f"link to a missing anchor: {href}")
    raw = RAW_TEX.findall(driver.execute_script(VISIBLE_PROSE_JS))
    problems += [f"unrendered TeX in the text: {snippet[:80]!r}" for snippet in raw[:5]]
    problems += [f"console {e['level']}: {e['message'][:200]}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    foreign = driver.execute_script(
        "return performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith(location.origin))")
    problems += [f"request that left this machine: {name}" for name in foreign]
    formulas = driver.execute_script("return document.querySelectorAll('mjx-container').length")
    return [f"{page.relative_to(site_dir)}: {p}" for p in problems], formulas


def test_site_in_a_browser(built_site, server, browser):
    # One test function: the module's fixtures (the build, the server, the browser) then live on one pytest worker.
    pages = sorted(p for p in built_site.rglob("*.html") if "_static" not in p.parts)  # _static: theme templates
    chapters = sorted(p.stem for p in (built_site / "chapters").glob("*.html"))
    assert chapters == [p.stem for p in site.chapter_notebooks()], "the site has not one page per chapter"
    problems, formulas = [], {}
    for page in pages:
        page_problems, formulas[page.relative_to(built_site).as_posix()] = _check_page(browser, server, built_site, page)
        problems += page_problems
    assert not problems, f"{len(problems)} problem(s) on {len(pages)} pages:\n" + "\n".join(problems)
    # The maths did render: chapter 6 derives every equation, the API reference prints them from the docstrings.
    assert formulas[f"chapters/{SCREENSHOT_CHAPTER}.html"] > 20, formulas
    assert formulas["api/ops.html"] > 20, formulas
    _check_navigation(browser, server)

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    for name, rel in [("site_home.png", "index.html"), ("site_chapter.png", f"chapters/{SCREENSHOT_CHAPTER}.html")]:
        browser.get(f"{server}/{rel}")
        browser.execute_async_script(WAIT_MATHJAX_JS)
        if "chapters/" in rel:  # the chapter's first figure, with the text and maths around it
            browser.execute_script("const img = document.querySelector('.cell_output img');"
                                   "if (img) img.scrollIntoView({block: 'center'});")
        assert browser.save_screenshot(str(SCREENSHOT_DIR / name))


def _check_navigation(browser, server):
    """The home page lists every chapter, the sidebar too, a chapter has prev/next links, and search finds things."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server}/index.html")
    links = browser.execute_script(
        "return [...document.querySelectorAll('article a[href*=\"chapters/\"]')].map(a => a.getAttribute('href'))")
    for nb in site.chapter_notebooks():
        assert any(nb.stem in href for href in links), f"the home page does not link {nb.stem}"
    # Sidebar: every chapter; footer: a next-page link.
    sidebar = browser.execute_script("return [...document.querySelectorAll('nav.bd-links a')].map(a => a.href)")
    assert sum("chapters/" in h for h in sidebar) == len(site.chapter_notebooks())
    browser.get(f"{server}/chapters/{SCREENSHOT_CHAPTER}.html")
    assert browser.find_elements("css selector", "a.left-prev") and browser.find_elements("css selector", "a.right-next")
    # Search, offline, from the index Sphinx wrote.
    browser.get(f"{server}/search.html?q=layernorm")
    WebDriverWait(browser, 60).until(  # Sphinx writes the summary once it has listed every hit
        lambda d: "found" in d.execute_script("const p = document.querySelector('#search-results p'); return p ? p.textContent : ''"))
    hits = browser.execute_script("return [...document.querySelectorAll('#search-results ul.search li a')].map(a => a.href)")
    assert any("06_transformer" in h for h in hits) and any("api/ops" in h for h in hits), hits
