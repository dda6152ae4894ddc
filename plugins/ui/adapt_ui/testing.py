"""What tests of adapt ui share (this pack's and other packs' that drive the app): the served app
and a headless Chromium, driven by Selenium, that can reach nothing but 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
QUIET = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
         "ADAPT_DISABLE_PLUGINS": "mlflow"}


def need_browser() -> None:
    """Skip the test without Chromium, chromedriver or selenium; fail instead where
    ADAPT_REQUIRE_BROWSER is set (`make test`, so CI cannot skip it)."""
    import pytest

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install 'adapt-ui[test]')")
    if missing:
        if os.environ.get("ADAPT_REQUIRE_BROWSER"):
            pytest.fail(f"the browser test needs {', '.join(missing)}: `make browser` installs Chromium")
        pytest.skip(f"no {', '.join(missing)} (Debian: apt-get install chromium chromium-driver)")


def browser() -> Any:
    """Headless Chromium in which every host but 127.0.0.1 fails to resolve (no CDN, no telemetry)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,2400",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@contextlib.contextmanager
def served(runs: Path, port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """`adapt ui --runs RUNS --port PORT` running, until the block ends: its URL."""
    server = subprocess.Popen([sys.executable, "-m", "adapt", "ui", "--runs", str(runs), "--port", str(port)],
                              env={**os.environ, **QUIET, **(env or {})}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"adapt ui did not start: {server.stdout.read() if server.poll() is not None else 'no answer'}") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def requests_outside(driver: Any) -> list[str]:
    """The resources the page loaded from anywhere but 127.0.0.1 (none, offline)."""
    return driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"
                                 ".filter(n => !n.startsWith('http://127.0.0.1'))")


def field(driver: Any, element_id: str, timeout: float = 60) -> Any:
    """The text box or input of the component with ``element_id``, once it is there."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        lambda b: b.find_element(By.CSS_SELECTOR, f"#{element_id} textarea, #{element_id} input"))


def text(driver: Any, element_id: str) -> str:
    """What the component with ``element_id`` shows."""
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def choose(driver: Any, element_id: str, value: str) -> None:
    """Pick ``value`` in the dropdown with ``element_id`` (typed, then Enter)."""
    from selenium.webdriver.common.keys import Keys

    box = field(driver, element_id)
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value)
    time.sleep(0.3)
    box.send_keys(Keys.ENTER)
    time.sleep(0.3)


def tab(driver: Any, label: str) -> None:
    """Open the app's tab labelled ``label``."""
    from selenium.webdriver.common.by import By

    next(b for b in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text.strip() == label).click()
    time.sleep(1)


@contextlib.contextmanager
def app_in_browser(runs: Path, screenshots: Path) -> Iterator[Any]:
    """`adapt ui` on RUNS opened in :func:`browser`; a failing block leaves screenshots/failure.png."""
    from adapt.testing import free_port

    with served(runs, free_port()) as url:
        driver = browser()
        try:
            driver.get(url)
            yield driver
        except Exception:
            driver.save_screenshot(str(screenshots / "failure.png"))  # kept: the test failed
            raise
        finally:
            driver.quit()
