"""The Space's app in a real browser: the app served on the loopback address, headless Chromium (Debian's package,
driven through Playwright) uploads a synthetic study, waits for the table, and its 25 rows must be the pipeline's
answer for the same study; a file that is not a study gets one sentence. The screenshots go to the test artefacts
(HUBKIT_TEST_ARTIFACTS, default test-artifacts/): the README's picture is the first."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("gradio", reason="the Space's app needs gradio: pip install 'hubkit-lumbar[space]'")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser test drives Chromium with playwright")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("HUBKIT_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
# Headless, and nothing but the loopback address: this machine (and CI) has no network, and Chromium would try
# Google's update and account hosts at every start.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium; "
                                                         ".ci/run installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    """(URL of the app for the localised crops model, a study folder, the pipeline), served for the module."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from hubkit.space.app import build_app
    from tests.fixtures.localizer import located_model, located_pipeline

    data, _, run = located_model()
    pipe = located_pipeline()
    app = build_app(str(run), classify=pipe)
    port = _free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       share=False, ssr_mode=False, show_error=False)
    try:
        yield f"http://127.0.0.1:{port}/", sorted((data / "test_images").iterdir())[0], pipe
    finally:
        app.close()


def _table(page) -> list[list[str]]:
    """Every body row of the grades table, as the page shows them (its rows render as they scroll into view)."""
    root = page.locator("#grades")
    total = int(root.locator("[role=grid]").get_attribute("aria-rowcount")) - 1
    width = root.locator("thead th[data-testid^='header-']").count()
    cells: dict[tuple[int, int], str] = {}
    for _ in range(50):
        for r, c, text in root.locator("[role=gridcell][data-row][data-col]").evaluate_all(
                "els => els.map(e => [+e.dataset.row, +e.dataset.col, e.innerText.trim()])"):
            cells[(r, c)] = text
        if len({r for r, _ in cells}) >= total:
            break
        root.locator(".virtual-table-viewport").evaluate("v => v.scrollBy(0, v.clientHeight * 0.8)")
        page.wait_for_timeout(50)
    return [[cells.get((r, c), "") for c in range(width)] for r in range(total)]


def _upload(page, path: Path) -> None:
    page.locator("#study-zip input[type=file]").set_input_files(str(path))
    page.locator(f"#study-zip td.filename[aria-label='{path.name}']").wait_for()


def test_a_radiologist_uploads_a_study_and_sees_the_pipelines_25_grades(served, tmp_path):
    from playwright.sync_api import sync_playwright

    from hubkit.space.app import HEADERS, table_rows

    url, study, pipe = served
    want = pipe(str(study))  # the pipeline's own answer for the same study
    upload = Path(shutil.make_archive(str(tmp_path / study.name), "zip", study.parent, study.name))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            outside = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
                ("http://127.0.0.1", "data:", "blob:")) else None)
            page.goto(url, wait_until="load")
            _upload(page, upload)
            page.locator("#grade").click()
            page.locator("#grades [data-testid='cell-24-0']").wait_for(timeout=180_000)
            page.locator("#notes").get_by_text(f"Study {study.name}").wait_for()
            shown = _table(page)
            assert page.locator("#grades thead th[data-testid^='header-'] span.text").all_inner_texts() == \
                list(HEADERS)
            assert page.locator("#images img").count() == len(want["views"])
            assert page.locator("#points img").count() >= 1  # the localiser's points, drawn
            page.wait_for_function("() => [...document.querySelectorAll('#images img, #points img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(ARTIFACTS / "space.png"), full_page=True)

            page.locator("#study-zip button[aria-label='Clear']").click()
            broken = tmp_path / "broken.zip"
            broken.write_bytes(b"not a zip")
            _upload(page, broken)
            page.locator("#grades [data-testid='cell-0-0']").wait_for(state="detached")  # the last answer went
            page.locator("#grade").click()
            toast = page.locator("[data-testid='toast-text']").first
            toast.wait_for(timeout=30_000)
            message = toast.inner_text().strip()
            page.screenshot(path=str(ARTIFACTS / "space-error.png"))
        finally:
            browser.close()
    assert len(shown) == 25
    for got, row in zip(shown, table_rows(want)):
        assert got[:3] == row[:3] and [float(x) for x in got[3:]] == pytest.approx(row[3:], abs=1e-9), got
    assert message == "broken.zip is not a zip file: zip the study's folder (one sub-folder per series)."
    assert not outside, outside
