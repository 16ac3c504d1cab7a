"""``booksegm serve``: the page's processing function on a shelf photo and on each kind of bad upload
(the bundled model, seconds), the command without Gradio, the page's theme without web fonts, and
(slow) headless Chromium dropping a rendered shelf photo on the running page, offline, and reading
the book count ``booksegm inventory`` prints for that photo.

docs/images/serve.png is the browser test's screenshot:
``pytest -m slow tests/test_serve.py -o tmp_path_retention_policy=all``, then copy ``serve.png`` from its folder."""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import train_env, truncate_jpeg

from booksegm.cli.serve import GRADIO_MISSING, TABLE, ServeSettings, ShelfPage, offline_theme
from booksegm.config import ConfigError
from booksegm.data.synthetic import render_books

WIDTH, HEIGHT = 384, 288  # the shelf photo: ~2 s for the bundled model on one CPU thread
MOST_BOOKS = 12  # of its 16 books: the page shows the model's books, and the model finds most of them


@pytest.fixture(scope="module")
def shelf_photo(tmp_path_factory) -> Path:
    """A rendered shelf with 16 books; the bundled model finds at least MOST_BOOKS of them."""
    path = tmp_path_factory.mktemp("photo") / "shelf.png"
    Image.fromarray(render_books(np.random.default_rng([2026, 1]), WIDTH, HEIGHT, kind="shelf")[0]).save(path)
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> ShelfPage:
    """The page's processing with the bundled model; its pixel limit lets the shelf photo through, no more."""
    out = tmp_path_factory.mktemp("batches")
    return ShelfPage(ServeSettings(output_dir=str(out), device="cpu", max_pixels=WIDTH * HEIGHT))


def write_png_bomb(path: Path, side: int = 20000) -> None:
    """A decompression bomb: a 1-bit side x side PNG of zeros, a few hundred kB on disk (1.2 GB as RGB)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row = zlib.compressobj(9), bytes(1 + side // 8)  # a row: its filter byte, then the packed bits
    pixels = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def write_bad_upload(kind: str, folder: Path) -> Path:
    """An upload of ``kind``, named as a user's file would be."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "text":
        path = folder / "notes.txt"
        path.write_text("not a photo\n")
    elif kind == "text named .jpg":
        path = folder / "shelf.jpg"
        path.write_text("not a photo either\n")
    elif kind == "truncated JPEG":
        path = folder / "cut.jpg"
        truncate_jpeg(path)
    elif kind == "empty file":
        path = folder / "empty.jpg"
        path.write_bytes(b"")
    elif kind == "20000 x 20000 PNG":
        path = folder / "bomb.png"
        write_png_bomb(path)
    else:  # one pixel column over the page's limit
        path = folder / "wide.png"
        Image.new("RGB", (WIDTH + 1, HEIGHT)).save(path)
    return path


BAD_UPLOADS = {  # kind: what the page says after the file's name
    "text": "not an image",
    "text named .jpg": "not an image",
    "truncated JPEG": "cannot decode: image file is truncated",
    "empty file": "an empty file",
    "20000 x 20000 PNG": "refused: over this page's limit of 0.111 MP (max_pixels): Image size (400000000 pixels)",
    "over max_pixels": "refused: 385 x 288 px (0.111 MP) is over this page's limit of 0.111 MP (max_pixels)",
}


@pytest.mark.parametrize("kind", BAD_UPLOADS)
def test_a_bad_upload_is_named_with_its_reason_and_nothing_else_comes_of_it(kind, page, tmp_path):
    upload = write_bad_upload(kind, tmp_path)
    result = page.inventory([str(upload)])
    assert f"{upload.name}: {BAD_UPLOADS[kind]}" in result.report, result.report
    assert "inventoried 0 photos: 0 books" in result.report
    assert result.overlays == [] and result.table == [] and set(result.downloads.values()) == {None}


def test_a_shelf_photo_gives_numbered_books_their_table_and_three_downloads(page, shelf_photo):
    result = page.inventory([str(shelf_photo)])
    books = json.loads((Path(result.downloads["csv"]).parent / "inventory.json").read_text())["books"]
    assert len(books) >= MOST_BOOKS and f"inventoried 1 photos: {len(books)} books" in result.report, result.report
    assert result.table == [[book[column] for column in TABLE] for book in books]
    ((overlay, caption),) = result.overlays
    assert Image.open(overlay).size == (WIDTH, HEIGHT) and caption == f"shelf.png: {len(books)} books"
    with zipfile.ZipFile(result.downloads["crops"]) as crops:
        assert sorted(n for n in crops.namelist() if n.endswith(".png")) == sorted(b["crop"] for b in books)
    via = json.loads(Path(result.downloads["via"]).read_text())
    (entry,) = via["_via_img_metadata"].values()
    assert (entry["filename"], entry["size"]) == ("shelf.png", shelf_photo.stat().st_size)  # VIA's key
    assert len(entry["regions"]) == len(books)


def test_bad_uploads_beside_a_photo_leave_its_inventory_whole(page, shelf_photo, tmp_path):
    """Every kind of bad file in one batch with the shelf photo: each is named, the photo is inventoried,
    and two uploads of one name both are (the second as shelf-2.png)."""
    uploads = [write_bad_upload(kind, tmp_path / f"{k}") for k, kind in enumerate(BAD_UPLOADS)]
    twin = tmp_path / "twin" / "shelf.png"
    twin.parent.mkdir()
    shutil.copyfile(shelf_photo, twin)
    result = page.inventory([str(p) for p in [*uploads, shelf_photo, twin]])
    found = len(page.inventory([str(shelf_photo)]).table)  # the same photo alone
    assert found >= MOST_BOOKS and f"inventoried 2 photos: {2 * found} books" in result.report, result.report
    assert [caption for _, caption in result.overlays] == [f"shelf.png: {found} books", f"shelf-2.png: {found} books"]
    for upload, reason in zip(uploads, BAD_UPLOADS.values()):
        assert f"{upload.name}: {reason}" in result.report


def test_no_upload_asks_for_photos(page):
    assert page.inventory([]).report == "Drop or pick shelf photos above."


@pytest.mark.parametrize("knob, message", [("port", "port must be in 1..65535, got 0"),
                                           ("max_pixels", "max_pixels and max_upload_mb must be >= 1")])
def test_a_bad_knob_is_refused_before_the_model_loads(knob, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ShelfPage(ServeSettings(output_dir=str(tmp_path), ckpt_path="/no/such.ckpt", **{knob: 0}))


def test_without_gradio_the_command_says_how_to_install_it_in_one_line(tmp_path):
    hide_gradio = ("import sys; sys.modules['gradio'] = None; sys.argv = ['booksegm', 'serve']; "
                   "from booksegm.cli.main import main; main()")
    result = subprocess.run([sys.executable, "-c", hide_gradio], cwd=tmp_path, env=train_env(tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.splitlines() == [f"booksegm: error: {GRADIO_MISSING}"], \
        result.stderr[-3000:]


def test_the_pages_theme_needs_no_web_fonts():
    gr = pytest.importorskip("gradio", reason='the page needs booksegm[serve] (pip install "booksegm[serve]")')
    theme = offline_theme(gr)
    assert theme._stylesheets == [] and theme._font_css == []  # Gradio's lists of font URLs and @font-face rules


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_page(server: subprocess.Popen, port: int, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"no page on port {port} after {timeout} s:\n{log.read_text()[-3000:]}")


def chromium():
    """Headless Chromium that resolves no host but 127.0.0.1 (no network) and logs every request."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the test extra)")
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("the browser test needs Chromium and its driver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500",
                     "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService(driver), options=options)


@pytest.mark.slow
def test_a_browser_drops_a_shelf_photo_and_sees_the_count_inventory_prints(shelf_photo, tmp_path):
    pytest.importorskip("gradio", reason='the page needs booksegm[serve] (pip install "booksegm[serve]")')
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port, log = free_port(), tmp_path / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen([sys.executable, "-m", "booksegm", "serve", f"port={port}", "device=cpu",
                                   f"output_dir={tmp_path / 'batches'}"], cwd=tmp_path, env=train_env(tmp_path),
                                  stdout=output, stderr=subprocess.STDOUT)
    try:
        inventory = subprocess.run([sys.executable, "-m", "booksegm", "inventory", str(shelf_photo), "device=cpu",
                                    f"output_dir={tmp_path / 'inventory'}"], cwd=tmp_path, env=train_env(tmp_path),
                                   capture_output=True, text=True, timeout=300)
        assert inventory.returncode == 0, inventory.stderr[-3000:]
        expected = int(re.search(r"inventoried 1 photos: (\d+) books", inventory.stdout).group(1))
        wait_for_page(server, port, log)
        browser = chromium()
        try:
            browser.get(f"http://127.0.0.1:{port}/")
            wait = WebDriverWait(browser, 120)
            wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "input[type=file]")).send_keys(str(shelf_photo))
            wait.until(lambda b: "inventoried" in b.find_element(By.ID, "report").text)
            report = browser.find_element(By.ID, "report").text
            wait.until(lambda b: b.find_element(By.ID, "download-csv").is_enabled())
            time.sleep(1)  # the gallery's image fades in
            browser.save_screenshot(str(tmp_path / "serve.png"))
            requests = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
        finally:
            browser.quit()
    finally:
        server.terminate()
        server.wait(60)
    shown = int(re.search(r"inventoried 1 photos: (\d+) books", report).group(1))
    print(f"the page shows {shown} books; booksegm inventory printed {expected}")
    assert shown == expected > 0, report
    urls = {r["params"]["request"]["url"] for r in requests if r["method"] == "Network.requestWillBeSent"}
    elsewhere = sorted(u for u in urls if not u.startswith((f"http://127.0.0.1:{port}/", "data:", "blob:")))
    assert not elsewhere, f"the page asked for more than its server: {elsewhere}"
