"""retrieval-search serve, driven in a real headless browser (Debian's chromium + chromedriver)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.search import Searcher, update_index
from retrieval.search.server import SearchServer, make_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no chromium/chromedriver (Debian: apt-get install chromium chromium-driver; "
    ".ci/run installs them)",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TIMEOUT = 60


def photo(path: Path, seed: int) -> Path:
    """A smooth random 64 x 48 photo-like image saved at `path`."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
    img = np.asarray(coarse.resize((64, 48), Image.Resampling.BILINEAR), dtype=np.int16)
    img = img + rng.integers(-10, 11, img.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("photos")
    return [photo(root / f"photo{i}.jpg", i) for i in range(6)]


@pytest.fixture(scope="module")
def server(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchServer]:
    index = tmp_path_factory.mktemp("index")
    update_index(photos[0].parent, index, image_size=64, scales=(1.0,), progress=False)
    server = make_server(Searcher(index, device="cpu"), port=0, k=4)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Root in a container: no sandbox; a small /dev/shm: use /tmp.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


def shown_results(driver) -> list[tuple[str, float]]:
    """(path, score) of every result on the page, in rank order."""
    items = driver.find_elements(By.CSS_SELECTOR, "li.result")
    return [
        (
            item.find_element(By.CSS_SELECTOR, ".path").text,
            float(item.find_element(By.CSS_SELECTOR, ".score").text),
        )
        for item in items
    ]


def test_upload_shows_the_uploaded_photo_first(server, browser, photos):
    browser.get(server.url)
    assert "6 indexed images" in browser.page_source
    browser.find_element(By.ID, "image").send_keys(str(photos[3]))
    browser.find_element(By.ID, "search").click()
    WebDriverWait(browser, TIMEOUT).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "li.result"))
    )
    results = shown_results(browser)
    assert len(results) == 4  # the server's default k
    assert results[0][0] == str(photos[3]) and results[0][1] == pytest.approx(1.0, abs=1e-3)
    assert [s for _, s in results] == sorted((s for _, s in results), reverse=True)
    assert {path for path, _ in results} <= {str(p) for p in photos}
    assert browser.find_element(By.ID, "query-path").text == photos[3].name
    # Every thumbnail was decoded by the browser.
    for img in browser.find_elements(By.CSS_SELECTOR, "li.result img, .query img"):
        assert browser.execute_script("return arguments[0].naturalWidth", img) > 0


def test_clicking_a_result_searches_with_it(server, browser, photos):
    browser.get(server.url)
    browser.find_element(By.ID, "image").send_keys(str(photos[0]))
    browser.find_element(By.ID, "k").clear()
    browser.find_element(By.ID, "k").send_keys("3")
    browser.find_element(By.ID, "search").click()
    WebDriverWait(browser, TIMEOUT).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "li.result"))
    )
    first_page = browser.find_elements(By.CSS_SELECTOR, "li.result")
    assert len(first_page) == 3
    second_path = shown_results(browser)[1][0]
    first_page[1].find_element(By.TAG_NAME, "a").click()
    WebDriverWait(browser, TIMEOUT).until(EC.staleness_of(first_page[0]))
    results = shown_results(browser)
    assert len(results) == 3 and results[0][0] == second_path
    assert browser.find_element(By.ID, "query-path").text == second_path


def test_a_broken_upload_shows_an_error(server, browser, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    browser.get(server.url)
    browser.find_element(By.ID, "image").send_keys(str(broken))
    browser.find_element(By.ID, "search").click()
    error = WebDriverWait(browser, TIMEOUT).until(EC.presence_of_element_located((By.ID, "error")))
    assert "broken.jpg" in error.text and not browser.find_elements(By.CSS_SELECTOR, "li.result")
    # The page's one inline style passes its Content-Security-Policy (allowed by its hash).
    assert error.value_of_css_property("color") in ("rgb(187, 0, 0)", "rgba(187, 0, 0, 1)")
