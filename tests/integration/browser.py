"""A real browser for tests: Debian's headless Chromium driven by selenium through Debian's chromedriver.

A pytest plugin (tests/conftest.py lists it in `pytest_plugins`), so any test can ask for:
  browser      a fresh headless Chromium (selenium WebDriver), its page 1440x900 CSS px, quit afterwards
  artifacts    build/test-artifacts/<test name>/, emptied when the test starts, kept afterwards
  screenshot   screenshot("overview") saves build/test-artifacts/<test name>/overview.png and returns the path
When a test that used `browser` fails, failure.png, failure.html and console.log land in its artifacts folder.

Nothing is downloaded: the browser and the driver are the Debian packages `chromium` and `chromium-driver`
(`make system` installs both, from one source package, so at one version), and SE_OFFLINE=true keeps Selenium
Manager from ever fetching a browser or a driver. A missing browser is a failure naming `make system`, never a skip.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from guardian.settings import REPO_ROOT

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO_ROOT / "build" / "test-artifacts"
WINDOW = (1440, 900)
ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root (CI too), where Chromium's sandbox refuses to start
    "--disable-dev-shm-usage",  # /dev/shm is small in containers
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)
INSTALL = "run `make system` (or: bash deploy/local/install-system.sh chromium chromium-driver)"

_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Remember whether a test's setup or body failed, for the `browser` fixture's teardown."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        item.stash[_FAILED] = True
    return report


def start_browser() -> WebDriver:
    """Debian's headless Chromium through Debian's chromedriver; the caller quits it."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download a browser or a driver
    os.environ["SE_AVOID_STATS"] = "true"
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(
            f"the browser tests need Debian's chromium and chromium-driver; missing {missing}: {INSTALL}", pytrace=False
        )
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
    except ImportError:
        pytest.fail("selenium is not installed: run `make setup` (pip install -e '.[dev]')", pytrace=False)

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ARGUMENTS:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages, for console_errors()
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:  # e.g. chromium and chromium-driver at different versions
        pytest.fail(f"Chromium did not start through {CHROMEDRIVER}: {exc.msg}\n{INSTALL}", pytrace=False)
    # --window-size is the outer window; grow it by the browser's own frame so the page (and every
    # screenshot) is exactly WINDOW.
    frame = driver.execute_script("return window.outerHeight - window.innerHeight")
    driver.set_window_size(WINDOW[0], WINDOW[1] + frame)
    return driver


def artifact_dir(name: str, *, empty: bool = False) -> Path:
    """build/test-artifacts/<name>/, created (emptied first with empty=True); `name` is made safe for a path."""
    directory = ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed")
    if empty:
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def save_screenshot(driver: WebDriver, directory: Path, name: str) -> Path:
    """The browser's viewport as directory/<name>.png."""
    path = directory / f"{name}.png"
    if not driver.save_screenshot(str(path)):
        raise AssertionError(f"Chromium could not save a screenshot to {path}")
    return path


def console_log(driver: WebDriver) -> list[dict[str, Any]]:
    """Every console entry since the browser started ({level, message, timestamp}); selenium's own
    get_log("browser") drains what it returns, so this keeps them on the driver."""
    kept: list[dict[str, Any]] = driver.__dict__.setdefault("_guardian_console", [])
    kept.extend(driver.get_log("browser"))
    return kept


def console_errors(driver: WebDriver) -> list[str]:
    """The console messages at SEVERE since the browser started (a script or page that failed to load is one)."""
    return [entry["message"] for entry in console_log(driver) if entry["level"] == "SEVERE"]


def wait_js(driver: WebDriver, script: str, timeout: float, what: str) -> Any:
    """Run `script` (a body that `return`s) until its result is truthy; fail naming `what` after `timeout` s."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(script))
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout} s in the browser waiting for {what}") from None


def first_contentful_paint(driver: WebDriver, timeout: float = 10.0) -> float:
    """The current page's first-contentful-paint, in ms since its navigation started (Paint Timing API)."""
    return float(
        wait_js(
            driver,
            "const p = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');"
            "return p ? p.startTime : null;",
            timeout,
            "a first-contentful-paint entry",
        )
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    # a *.sse file is served as one burst of Server-Sent Events (the browser reconnects after `retry:` ms)
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".sse": "text/event-stream",
    }

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no request lines on the test's stderr


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve `root` over HTTP on loopback (a free port the OS picks); yields the base URL, no trailing slash.
    Symlinks are followed (link api/static/vendor into `root`); a *.sse file is served as text/event-stream."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="serve_directory", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """build/test-artifacts/<test name>/, emptied for this run; kept afterwards, pass or fail."""
    return artifact_dir(request.node.name, empty=True)


@pytest.fixture
def browser(request: pytest.FixtureRequest, artifacts: Path) -> Iterator[WebDriver]:
    """A fresh headless Chromium for one test; on failure its screenshot, HTML and console go to `artifacts`."""
    driver = start_browser()
    try:
        yield driver
    finally:
        if request.node.stash.get(_FAILED, False):
            with contextlib.suppress(Exception):  # best effort: the page may be what broke
                save_screenshot(driver, artifacts, "failure")
                (artifacts / "failure.html").write_text(driver.page_source)
                lines = [f"{e['timestamp']} {e['level']} {e['message']}" for e in console_log(driver)]
                (artifacts / "console.log").write_text("\n".join(lines) + "\n")
        driver.quit()


@pytest.fixture
def screenshot(browser: WebDriver, artifacts: Path) -> Callable[[str], Path]:
    """screenshot(name) saves the browser's viewport as build/test-artifacts/<test name>/<name>.png."""
    return functools.partial(save_screenshot, browser, artifacts)
