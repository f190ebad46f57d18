"""The explorer page in a real headless Chromium against a real node process, and the files it ships.

The browser tests need Debian's ``chromium`` and ``chromium-driver``
(``make explorer-test`` installs them when run as root) and selenium (the
dev extras); without them they skip and say so. The page is loaded before
the job exists, so everything the job makes appears through the websocket
subscription, without a reload. ``TDML_EXPLORER_SCREENSHOT=path`` saves the
finished page of the four-node run there (``make explorer-test`` writes
``docs/explorer.png``); ``TDML_EXPLORER_REQUIRED=1`` turns the skips into failures.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import shutil
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tdml_node.devnet import Devnet, running_devnet, submit_job
from tdml_node.explorer import ASSETS, get_asset
from tdml_node.work.jobs import get_job

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "tdml_node" / "explorer" / "static"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
STEPS = 12
EVAL_EVERY = 3
BYZANTINE_STEPS = 6


def test_package_data_ships_every_file_of_the_page() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["tdml_node.explorer"]
    files = sorted(p.name for p in STATIC.iterdir())
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f"static/{f}", pat) for pat in patterns)]
    assert files and not unshipped, f"not in pyproject's package-data: {unshipped}"
    assert sorted(ASSETS) == files


def test_assets_are_looked_up_by_exact_name_only() -> None:
    assert get_asset("index.html") is not None
    for name in ("../__init__.py", "static/index.html", "/etc/passwd", "", "INDEX.HTML", "app.js/"):
        assert get_asset(name) is None, name


def _referenced_files() -> set[str]:
    """Every file the page asks for: the HTML's /explorer/ links and each module's relative imports."""
    names = set(re.findall(r'"/explorer/([\w.]+)"', (STATIC / "index.html").read_text()))
    for js in STATIC.glob("*.js"):
        names |= set(re.findall(r'from "\./([\w.]+)"', js.read_text()))
    return names


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    net = Devnet.create(tmp_path_factory.mktemp("explorer") / "net", 1)
    with running_devnet(net):
        yield net


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.mark.slow
def test_the_node_serves_the_page_and_every_file_it_asks_for(devnet: Devnet) -> None:
    base = devnet.nodes[0].rpc_url
    status, headers, body = _get(base + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"/explorer/app.js" in body
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    referenced = _referenced_files()
    assert {"app.js", "rpc.js", "chart.js", "render.js", "style.css"} <= referenced
    for name in referenced:
        status, headers, body = _get(f"{base}/explorer/{name}")
        assert status == 200 and body == (STATIC / name).read_bytes(), name
        assert headers["Content-Type"].split(";")[0] in ("text/javascript", "text/css"), name
    for missing in ("nope.js", "..%2F__init__.py", "%2E%2E%2Fstatic%2Findex.html"):
        assert _get(f"{base}/explorer/{missing}")[0] == 404, missing


# ---------------------------------------------------------------- the browser


def _browser() -> Any:
    """A headless Chromium driven by chromedriver, or a skip saying what is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        _unavailable(f"no {' or '.join(missing)} (Debian's chromium and chromium-driver); run `make explorer-test`")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[dev]')")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1440,2200"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


def _unavailable(reason: str) -> NoReturn:
    """Skip, but fail where the browser was asked for (``make explorer-test`` sets TDML_EXPLORER_REQUIRED)."""
    if os.environ.get("TDML_EXPLORER_REQUIRED"):
        pytest.fail(reason)
    pytest.skip(reason)


def _wait(driver: Any, what: str, predicate: Any, timeout: float = 180.0) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: predicate(d) or None)
    except TimeoutException:
        logs = [e["message"] for e in driver.get_log("browser")]
        raise AssertionError(f"the page did not show {what} within {timeout:.0f}s; console: {logs}") from None


def _text(driver: Any, element_id: str) -> str:
    return str(driver.execute_script(f"return document.getElementById('{element_id}').textContent"))


def _points(driver: Any, chart: str, series: str) -> int:
    found = driver.execute_script(
        f"const p = document.querySelector('#{chart} polyline.{series}'); return p ? Number(p.dataset.points) : 0"
    )
    return int(found)


def _rows(driver: Any, tbody: str) -> list[list[str]]:
    rows = driver.execute_script(
        f"return [...document.querySelectorAll('#{tbody} tr:not(.empty)')]"
        ".map(r => [...r.cells].map(c => c.title || c.textContent))"
    )
    return [list(r) for r in rows]


@pytest.mark.slow
def test_the_page_follows_a_job_live_in_a_real_browser(devnet: Devnet, tmp_path: Path) -> None:
    node = devnet.nodes[0]
    client = node.client()
    driver = _browser()
    try:
        driver.get(node.rpc_url + "/")
        _wait(driver, "the live badge", lambda d: _text(d, "live") == "live", timeout=60)
        _wait(driver, "the head height", lambda d: _text(d, "head-height").isdigit(), timeout=60)
        first_head = int(_text(driver, "head-height"))
        address = "0x" + node.keypair.address.hex()
        assert [r[0] for r in _rows(driver, "validators-body")] == [address]
        assert _text(driver, "chain-id") == devnet.genesis.chain_id
        # A reload would drop this mark: it proves what follows arrives without one.
        driver.execute_script("window.__notReloaded = true")

        spec, dataset = get_job("digits-mlp", steps=STEPS)
        spec = dataclasses.replace(spec, eval_every=EVAL_EVERY)
        job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)

        _wait(driver, f"{STEPS} points on the loss curve", lambda d: _points(d, "loss-chart", "train") == STEPS)
        _wait(driver, "the finished job", lambda d: f"step {STEPS} of {STEPS} (done)" in _text(d, "job-progress"))
        assert driver.execute_script("return window.__notReloaded === true"), "the page reloaded"
        assert int(_text(driver, "head-height")) > first_head

        history = client.call("tdml_getJobHistory", job_id, 1000)
        evaluated = [o for o in history if o["eval_total"]]
        assert len(history) == STEPS and len(evaluated) == STEPS // EVAL_EVERY
        assert _points(driver, "loss-chart", "eval") == len(evaluated)
        assert _points(driver, "accuracy-chart", "accuracy") == len(evaluated)
        assert [r[1] for r in _rows(driver, "jobs-body")] == [job_id]

        record = client.call("tdml_getTrainer", address)
        _wait(driver, "the trainer's final record",
              lambda d: [r[:5] for r in _rows(d, "trainers-body")]
              == [[address, "trainer, validator", str(record["unitsDone"]), str(record["unitsVerified"]), "0"]])
        assert record["unitsDone"] == STEPS * spec.shards
        assert _rows(driver, "job-evidence-body") == []
        submits = [r for r in _rows(driver, "txs-body") if r[2] == "submit job"]
        assert len(submits) == 1 and submits[0][3] == "0x" + devnet.client_key.public_key.hex()
        # The chain goes on making empty blocks: the page must reach the head read here, and its
        # newest block row must be the head it shows.
        head = client.call("tdml_blockNumber")

        def _at_head(d: Any) -> bool:
            shown = _text(d, "head-height")
            return shown.isdigit() and int(shown) >= head and _rows(d, "blocks-body")[0][0] == shown

        _wait(driver, "the chain head", _at_head)
        _assert_no_console_errors(driver)

        # The node restarts on the same port: the page reconnects by itself and follows a second job.
        devnet.stop(node)
        _wait(driver, "the dropped connection", lambda d: _text(d, "live") == "reconnecting", timeout=60)
        devnet.start(node)
        devnet.wait_ready(nodes=[node])
        _wait(driver, "the live badge again", lambda d: _text(d, "live") == "live", timeout=60)
        second = submit_job(node.client(), devnet.client_key, devnet.genesis.chain_id, dataclasses.replace(spec, steps=2), dataset)
        _wait(driver, "the second job", lambda d: second in [r[1] for r in _rows(d, "jobs-body")], timeout=120)
        _wait(driver, "the head after the restart", lambda d: int(_text(d, "head-height")) > head, timeout=120)
        assert driver.execute_script("return window.__notReloaded === true"), "the page reloaded"
    finally:
        driver.quit()


def _assert_no_console_errors(driver: Any) -> None:
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def _save_screenshot(driver: Any, path: Path) -> None:
    """The whole page, not only the window: the window grows to the document's height first."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1440, min(height + 120, 8000))
    assert driver.save_screenshot(str(path))
    if os.environ.get("TDML_EXPLORER_SCREENSHOT"):
        shutil.copyfile(path, os.environ["TDML_EXPLORER_SCREENSHOT"])


@pytest.mark.slow
def test_a_cheating_trainer_shows_slashed_with_its_evidence(tmp_path: Path) -> None:
    """Four nodes, node 1 sends zero results: the page on an honest node shows the fraud and the slashing."""
    spec, dataset = get_job("digits-mlp", steps=BYZANTINE_STEPS)
    spec = dataclasses.replace(spec, eval_every=EVAL_EVERY)
    devnet = Devnet.create(tmp_path / "net", 4, byzantine={1: "zero"})
    with running_devnet(devnet):
        node, cheat = devnet.nodes[0], devnet.nodes[1]
        client = node.client()
        driver = _browser()
        try:
            driver.get(node.rpc_url + "/")
            _wait(driver, "the live badge", lambda d: _text(d, "live") == "live", timeout=60)
            _wait(driver, "three peers", lambda d: len(_rows(d, "peers-body")) == 3, timeout=60)
            assert len(_rows(driver, "validators-body")) == 4
            for other in devnet.nodes[1:]:
                other.client().put_blob(dataset)
            job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
            _wait(driver, "the finished job",
                  lambda d: f"step {BYZANTINE_STEPS} of {BYZANTINE_STEPS} (done)" in _text(d, "job-progress"), timeout=200)
            _wait(driver, f"{BYZANTINE_STEPS} points on the loss curve",
                  lambda d: _points(d, "loss-chart", "train") == BYZANTINE_STEPS)

            cheat_address = "0x" + cheat.keypair.address.hex()
            evidence = _wait(driver, "the work-fraud evidence",
                             lambda d: [r for r in _rows(d, "job-evidence-body") if r[1] == "work fraud (trainer)"])
            assert {r[2] for r in evidence} == {cheat_address}
            assert evidence == [r for r in _rows(driver, "evidence-body") if r[1] == "work fraud (trainer)"]
            record = client.call("tdml_getTrainer", cheat_address)
            assert record["slashed"] and record["unitsRejected"] > 0
            _wait(driver, "the cheat's record",
                  lambda d: any(r[0] == record["address"] and r[4] == str(record["unitsRejected"])
                                and r[8].startswith("yes") for r in _rows(d, "trainers-body")))
            job = client.call("tdml_getJob", job_id)
            assert job["status"] == "done"
            _assert_no_console_errors(driver)
            _save_screenshot(driver, tmp_path / "explorer.png")
        finally:
            driver.quit()
