"""Images load the way VIA showed them: EXIF orientation applied, any mode as 8-bit RGB."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from booksegm.data.images import ImageReadError, image_size, load_rgb, to_rgb, verify_image


def with_orientation(image: Image.Image, path, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, quality=95)
    return path


def test_exif_orientation_6_is_shown_rotated_clockwise(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    path = with_orientation(Image.fromarray(stored), tmp_path / "phone.jpg", 6)
    image = load_rgb(path)
    assert image.shape == (40, 20, 3) and image_size(path) == (20, 40)
    assert image[5, 10, 0] > 200 and image[35, 10, 0] < 50  # the stored left is shown on top


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_every_orientation_matches_pil_exif_transpose(tmp_path, orientation, suffix):
    stored = np.random.default_rng(orientation).integers(0, 255, (12, 30, 3), dtype=np.uint8)
    path = with_orientation(Image.fromarray(stored), tmp_path / f"o{orientation}{suffix}", orientation)
    with Image.open(path) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    assert np.array_equal(load_rgb(path), expected)
    assert image_size(path) == (expected.shape[1], expected.shape[0])


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGBA", "LA", "CMYK", "YCbCr"])
def test_modes_become_8_bit_rgb(mode):
    image = Image.fromarray(np.full((6, 8, 3), (200, 100, 50), np.uint8)).convert(mode)
    array = to_rgb(image)
    assert array.shape == (6, 8, 3) and array.dtype == np.uint8 and array.flags.writeable


def test_palette_transparency_and_alpha_are_dropped_not_composited():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 200, 30), 0  # fully transparent green
    assert to_rgb(Image.fromarray(rgba, "RGBA"))[0, 0].tolist() == [10, 200, 30]
    palette = Image.fromarray(np.full((4, 4, 3), (10, 200, 30), np.uint8)).quantize(2)
    palette.info["transparency"] = 0
    assert to_rgb(palette)[0, 0].tolist() == [10, 200, 30]


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 64, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "scan16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")
    assert load_rgb(path)[0, :, 0].tolist() == [0, 64, 128, 255]
    as_int32 = Image.fromarray(values.astype(np.int32))  # mode "I", how older Pillow opened them
    assert to_rgb(as_int32)[0, :, 1].tolist() == [0, 64, 128, 255]


def test_missing_and_corrupt_files_say_which_and_why(tmp_path):
    with pytest.raises(ImageReadError, match=r"nothere\.jpg: not found"):
        load_rgb(tmp_path / "nothere.jpg")
    with pytest.raises(ImageReadError, match=r"nothere\.jpg: not found"):
        image_size(tmp_path / "nothere.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    for read in (load_rgb, image_size, verify_image):
        with pytest.raises(ImageReadError, match=r"text\.jpg: cannot decode: "):
            read(tmp_path / "text.jpg")


def test_a_truncated_jpeg_passes_the_header_read_but_not_decoding(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert image_size(tmp_path / "cut.jpg") == (300, 200)
    verify_image(tmp_path / "full.jpg")
    for read in (load_rgb, verify_image):
        with pytest.raises(ImageReadError, match=r"cut\.jpg: cannot decode: image file is truncated"):
            read(tmp_path / "cut.jpg")
