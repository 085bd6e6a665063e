"""The playground page (issue 43): `GET /`, `GET /v1/examples`, `serve --examples`, and the page
itself driven in a real browser: Debian's chromium through its own chromedriver, with Selenium.

The browser test serves a saved tiny LambdaMART (behind a bearer token, typed into the page) and a
saved tiny LLM4PR checkpoint (no token) with uvicorn on a free loopback port, and asserts what a
person sees: the sample loads, both orders list every candidate exactly once, the post-ranked order
is the API's, every candidate has attribution bars, and a malformed request shows the API's 4xx
message. No browser is downloaded at run time: without /usr/bin/chromium and /usr/bin/chromedriver
the browser test skips and names the apt-get command.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from llm4pr.baselines import LambdaMARTRanker
from llm4pr.cli import main
from llm4pr.data.jsonl import write_jsonl
from llm4pr.features.encoders import FeatureStats
from llm4pr.loading import load_ranker
from llm4pr.model.checkpoint import save_checkpoint
from llm4pr.model.config import ModelConfig
from llm4pr.model.factory import build_model
from llm4pr.rankers.base import Ranker
from llm4pr.serving import ServingSettings, create_app
from llm4pr.serving.playground import CONTENT_SECURITY_POLICY, MAX_EXAMPLES
from tests.toy import TOY_SCHEMA, toy_requests

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_BROWSER = "apt-get update && apt-get install -y chromium chromium-driver"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
TOKEN_ENV = "LLM4PR_TEST_TOKEN"  # not the default name, so that a developer's own token cannot leak in
TOKEN = "play-s3cret"
WAIT_S = 60.0  # generous: the test machine may be busy


def toy_examples(n: int, seed: int = 20) -> list[dict[str, Any]]:
    """`n` toy requests as JSON objects (labels kept: the server ignores them)."""
    return [request.model_dump(mode="json", exclude_none=True) for request in toy_requests(n, seed=seed)]


def saved_lambdamart(folder: Path) -> Path:
    LambdaMARTRanker(n_estimators=20, min_data_in_leaf=1, n_jobs=1, text_encoder="hashing", text_dim=8).fit(
        toy_requests(40, seed=1), TOY_SCHEMA
    ).save(folder)
    return folder


def saved_checkpoint(folder: Path, backbone_dir: Path) -> Path:
    config = ModelConfig(backbone=str(backbone_dir), dtype="float32", text_encoder="hashing", qia_hidden_dim=32, categorical_dim=8)
    model, _ = build_model(config, TOY_SCHEMA, FeatureStats.fit(TOY_SCHEMA, toy_requests(10)))
    save_checkpoint(model, folder / "model")
    return folder


def settings(**overrides: Any) -> ServingSettings:
    return ServingSettings(**{"token_env": TOKEN_ENV, "deadline_ms": 30_000, "mode": "first_token", **overrides})


@dataclass
class Served:
    name: str
    url: str
    token: str | None
    examples: list[dict[str, Any]]



@contextmanager
def running_server(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        while not is_ready(url) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def is_ready(url: str) -> bool:
    """The server answered its warm-up request (/readyz is 503 until then)."""
    try:
        with urllib.request.urlopen(f"{url}/readyz") as response:  # noqa: S310 (loopback)
            return response.status == 200  # type: ignore[no-any-return]
    except urllib.error.HTTPError:
        return False


def api_answer(served: Served, body: dict[str, Any]) -> dict[str, Any]:
    """What /v1/post-rank?explain=true answers to `body` (to compare with what the page shows)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {served.token}"} if served.token else {})}
    call = urllib.request.Request(f"{served.url}/v1/post-rank?explain=true", data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(call) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())  # type: ignore[no-any-return]


# --- the routes, without a browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def lambdamart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_lambdamart(tmp_path_factory.mktemp("playground") / "lambdamart")


def test_page_static_files_and_examples_route(lambdamart_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ranker = load_ranker(lambdamart_dir)
    examples_file = tmp_path / "examples.jsonl"
    write_jsonl(examples_file, toy_requests(MAX_EXAMPLES + 5, seed=3))
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with TestClient(create_app(ranker, settings(), examples=examples_file), raise_server_exceptions=True) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert 'src="static/app.js"' in page.text and "http" not in page.text.replace("http-equiv", "")  # nothing from elsewhere
        for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
            static = client.get(f"/static/{name}")
            assert static.status_code == 200 and kind in static.headers["content-type"]
            assert "http://" not in static.text and "https://" not in static.text
        assert client.get("/v1/examples").status_code == 401  # the samples are behind the token, like the API
        listed = client.get("/v1/examples", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert listed["limit"] == MAX_EXAMPLES and len(listed["examples"]) == MAX_EXAMPLES
        assert [e["request_id"] for e in listed["examples"]] == [f"q{i}" for i in range(MAX_EXAMPLES)]
        assert "/" not in client.get("/openapi.json").json()["paths"] and "/v1/examples" in client.get("/openapi.json").json()["paths"]
    monkeypatch.delenv(TOKEN_ENV)
    with TestClient(create_app(ranker, settings())) as client:  # no --examples: an empty list, not an error
        assert client.get("/v1/examples").json() == {"examples": [], "limit": MAX_EXAMPLES}


def test_a_bad_examples_file_stops_serve_with_the_line(lambdamart_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    good, bad = toy_examples(2)
    bad["candidates"][0]["features"]["quality"] = "high"
    examples_file = tmp_path / "examples.jsonl"
    examples_file.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n{not json\n")
    captured: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: captured.update(app=app, **kwargs))
    assert main(["serve", "--checkpoint", str(lambdamart_dir), "--examples", str(examples_file)]) == 2
    error = capsys.readouterr().err
    assert f"{examples_file}:2" in error and "quality" in error and f"{examples_file}:3: invalid JSON" in error
    assert not captured, "the server must not start on a bad examples file"
    examples_file.write_text(json.dumps(good) + "\n")
    assert main(["serve", "--checkpoint", str(lambdamart_dir), "--examples", str(examples_file), "--port", "8124"]) == 0
    assert captured["port"] == 8124 and captured["app"].state.service.examples == [good]
    assert main(["serve", "--checkpoint", str(lambdamart_dir), "--examples", str(tmp_path / "missing.jsonl")]) == 2
    assert "file not found" in capsys.readouterr().err


# --- the page in a real browser ------------------------------------------------------------------


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """Headless chromium driven through Debian's chromedriver: nothing is downloaded (the driver
    path is given, so Selenium Manager does not run), a fresh profile per run."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.skip(f"needs Debian's chromium and chromedriver ({', '.join(missing)} missing): {INSTALL_BROWSER}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="llm4pr-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module", params=["lambdamart", "llm4pr"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A saved ranker served by uvicorn with an examples file: the LambdaMART behind a bearer
    token (the page must send it), the LLM4PR checkpoint without one."""
    folder = tmp_path_factory.mktemp(f"served-{request.param}")
    if request.param == "lambdamart":
        saved, token = saved_lambdamart(folder / "lambdamart"), TOKEN
    else:
        saved, token = saved_checkpoint(folder / "run", request.getfixturevalue("tiny_backbone_dir")), None
    examples = toy_examples(3)
    examples_file = folder / "examples.jsonl"
    examples_file.write_text("".join(json.dumps(e) + "\n" for e in examples))
    ranker: Ranker = load_ranker(saved)
    with pytest.MonkeyPatch.context() as patch:  # the token is read when the app is made
        if token:
            patch.setenv(TOKEN_ENV, token)
        else:
            patch.delenv(TOKEN_ENV, raising=False)
        app = create_app(ranker, settings(), examples=examples_file)
    with running_server(app) as url:
        yield Served(request.param, url, token, examples)


def open_playground(driver: Any, served: Served) -> None:
    """Load the page, type the token when the server wants one, wait for the samples."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{served.url}/")
    wait = WebDriverWait(driver, WAIT_S)
    status = driver.find_element(By.ID, "examples-status")
    if served.token:
        wait.until(lambda d: "bearer token" in status.text)
        token = driver.find_element(By.ID, "token")
        token.send_keys(served.token)
        token.send_keys("\t")  # leaving the field loads the samples with it
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#example-select option")) == len(served.examples) + 1)
    assert status.text == f"{len(served.examples)} samples"


def click_rank(driver: Any) -> float:
    """Click Rank; seconds until the page shows a result or an error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    results = driver.find_element(By.ID, "results")
    started = time.perf_counter()
    driver.find_element(By.ID, "rank-button").click()
    WebDriverWait(driver, WAIT_S, poll_frequency=0.01).until(lambda d: results.get_attribute("data-state") in ("done", "error"))
    return time.perf_counter() - started


def shown_ids(driver: Any, list_class: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [node.text for node in driver.find_elements(By.CSS_SELECTOR, f"#results ol.{list_class} li .cand-id")]


def test_the_page_ranks_a_sample_and_shows_errors(driver: Any, served: Served) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_playground(driver, served)
    sample = served.examples[1]
    Select(driver.find_element(By.ID, "example-select")).select_by_index(2)  # option 0 is "(pick one)"
    textarea = driver.find_element(By.ID, "request-text")
    assert json.loads(textarea.get_attribute("value")) == sample

    elapsed = click_rank(driver)
    print(f"\nplayground ({served.name}): click to rendered result {elapsed * 1000:.0f} ms")
    assert not driver.find_element(By.ID, "error").is_displayed()
    ids = [c["id"] for c in sample["candidates"]]
    given, ranked = shown_ids(driver, "given-order"), shown_ids(driver, "ranked-order")
    assert given == ids
    assert Counter(ranked) == Counter(ids) and len(ranked) == len(set(ranked))
    answer = api_answer(served, sample)
    assert ranked == answer["ranking"], "the page must show the API's order"
    header = driver.find_element(By.CSS_SELECTOR, "#results .answer h2").text
    meta = driver.find_element(By.CSS_SELECTOR, "#results .answer .meta").text
    assert header == sample["request_id"] and f"ranked by {answer['explanations']['ranker']}" in meta

    for position, item in enumerate(driver.find_elements(By.CSS_SELECTOR, "#results ol.ranked-order li"), start=1):
        moved = ids.index(item.get_attribute("data-id")) + 1 - position
        badge = item.find_element(By.CSS_SELECTOR, ".move").text
        assert badge == (f"▲ +{moved}" if moved > 0 else f"▼ {moved}" if moved < 0 else "= 0")
        assert item.find_element(By.CSS_SELECTOR, ".score").text.startswith("score ")
        bars = item.find_elements(By.CSS_SELECTOR, ".attribution .attr-bar")
        assert bars, f"candidate {item.get_attribute('data-id')}: no attribution bars"
        assert any(bar.is_displayed() and bar.size["width"] > 1 for bar in bars)
    methods = {box.get_attribute("data-method") for box in driver.find_elements(By.CSS_SELECTOR, "#results ol.ranked-order .attribution")}
    assert methods == {"lightgbm_contributions" if served.name == "lambdamart" else "qia_attention"}
    if served.name == "llm4pr":  # the user soft token's attention over the user fields
        assert driver.find_elements(By.CSS_SELECTOR, "#results .user-attribution .attr-bar")

    textarea.clear()
    textarea.send_keys('{"request_id": "pasted", "candidates": [')
    click_rank(driver)
    error = driver.find_element(By.ID, "error")
    assert error.is_displayed() and error.text.startswith("HTTP 400") and "body: malformed JSON" in error.text
    assert not driver.find_elements(By.CSS_SELECTOR, "#results .answer")

    bad = {**sample, "request_id": "pasted"}
    bad["candidates"] = [{**sample["candidates"][0], "features": {"quality": "high"}}, *sample["candidates"][1:]]
    driver.execute_script("arguments[0].value = arguments[1];", textarea, json.dumps(bad))  # as a paste would
    click_rank(driver)
    assert error.is_displayed() and error.text.startswith("HTTP 422")
    assert "request 'pasted'" in error.text and "quality" in error.text
