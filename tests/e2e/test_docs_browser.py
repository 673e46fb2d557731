"""`/docs` in a real headless Chromium (Debian's): loads offline, lists the API, runs a request.

Drives the page as a user would: Authorize with the stack's Bearer key, open
`POST /v1/embeddings`, put a body in, Execute, read the answer off the page.
"""

# ruff: noqa: F811  (pytest fixtures imported from api_fixtures are redefined as test parameters)
from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.e2e.api_fixtures import API_KEY, DEMO, Api, api  # noqa: F401  (fixtures are used by name)

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")


@pytest.fixture(scope="module")
def browser() -> object:
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (scripts/install.sh installs it as root with EXTRAS=test)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


def test_docs_loads_offline_lists_the_api_and_runs_an_embedding_request(
    api: Api, browser: sync_api.Browser, tmp_path: Path
) -> None:
    page = browser.new_page()
    failed: list[str] = []
    foreign: list[str] = []
    embedding_requests: list[dict[str, str]] = []
    page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.url}: HTTP {r.status}"))

    def on_request(request: sync_api.Request) -> None:
        url = urlparse(request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname != "127.0.0.1":
            foreign.append(request.url)
        if url.path == "/v1/embeddings":
            embedding_requests.append(request.headers)

    page.on("request", on_request)
    page.goto(f"{api.base_url}/docs", wait_until="networkidle")
    operation = page.locator(".opblock-post", has=page.locator('[data-path="/v1/embeddings"]'))
    operation.wait_for(timeout=30_000)
    assert "Embedding appliance" in page.locator(".information-container .title").inner_text()
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/v1/embeddings", "/tokenize", "/v1/models"} <= {p.strip() for p in paths}, paths

    page.locator("button.authorize").first.click()
    page.locator(".modal-ux input").first.fill(API_KEY)
    page.locator(".modal-ux button.authorize").click()
    page.locator(".modal-ux button.btn-done").click()

    operation.locator(".opblock-summary").first.click()
    try_out = operation.locator("button.try-out__btn")
    if try_out.count() and "Try it out" in try_out.inner_text():
        try_out.click()
    operation.locator("textarea.body-param__text").fill(json.dumps({"model": DEMO, "input": "hello from the docs page"}))
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status").first
    status.wait_for(timeout=60_000)
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)  # for a human; never in the repository
    assert status.inner_text().strip() == "200", operation.locator(".live-responses-table").inner_text()
    body = json.loads(operation.locator(".live-responses-table .response-col_description pre").first.inner_text())
    assert body["model"] == DEMO and len(body["data"][0]["embedding"]) == 384
    assert embedding_requests and embedding_requests[-1].get("authorization") == f"Bearer {API_KEY}"
    assert not failed, failed
    assert not foreign, f"the page reached beyond the box: {foreign}"
    page.close()
