"""Resizing, augmentation and rasterisation keep image and masks in register."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from booksegm.config import ConfigError
from booksegm.data.resize import ResizeConfig, resize_image_and_polygons
from booksegm.data.transforms import augment_image_and_polygons, rasterize

RECT = np.array([[10, 20], [40, 20], [40, 80], [10, 80]], dtype=np.float32)  # 30 x 60 px


def test_rasterize_gives_the_polygon_area_and_clips_to_the_image():
    assert rasterize([RECT], 100, 100).sum() == 30 * 60
    outside = RECT + np.float32([-20, 0])  # x from -10 to 20: 20 px inside
    assert rasterize([outside], 100, 100).sum() == 20 * 60
    assert rasterize([], 10, 10).sum() == 0


@pytest.mark.parametrize(
    "cfg, shape, scale",
    [
        (ResizeConfig("none", 64, 128), (100, 200), 1.0),
        (ResizeConfig("square", 64, 128), (128, 128), 0.64),  # long side 200 -> 128, padded square
        (ResizeConfig("square", 160, 400), (400, 400), 1.6),  # short side 100 -> 160, never above max
        (ResizeConfig("pad64", 128, 0), (128, 256), 1.28),  # 128 x 256 already multiples of 64
        (ResizeConfig("pad64", 64, 0), (128, 256), 1.0),  # 100 x 200 padded up to 128 x 256
        (ResizeConfig("crop", 64, 0), (64, 64), 1.0),
    ],
)
def test_resize_modes_give_matterport_shapes_and_scales(cfg, shape, scale):
    cfg.validate()
    image = np.zeros((100, 200, 3), np.uint8)
    out, _, applied = resize_image_and_polygons(image, [RECT], cfg, np.random.default_rng(0))
    assert out.shape[:2] == shape
    assert applied == pytest.approx(scale)


@pytest.mark.parametrize("mode", ["square", "pad64", "crop"])
def test_polygons_move_with_the_resized_image(mode):
    cfg = ResizeConfig(mode, 128, 160)
    image = np.zeros((90, 120, 3), np.uint8)
    image[rasterize([RECT], 90, 120) > 0] = 255
    out, (polygon,), _ = resize_image_and_polygons(image, [RECT], cfg, np.random.default_rng(3))
    drawn = out[..., 0] > 127
    mask = rasterize([polygon], *out.shape[:2]) > 0
    iou = (drawn & mask).sum() / max(1, (drawn | mask).sum())
    assert iou > 0.95


def test_crop_is_refused_for_validation():
    with pytest.raises(ConfigError, match="training-only"):
        ResizeConfig("crop", 256, 0).validate(training=False)


@pytest.mark.parametrize(
    "cfg, message",
    [(ResizeConfig("tiles", 64, 64), "unknown"), (ResizeConfig("pad64", 100, 0), "divisible by 64"),
     (ResizeConfig("square", -1, 64), ">= 0")],
)
def test_bad_resize_values_fail_early(cfg, message):
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


@pytest.mark.parametrize(
    "transform",
    [
        A.HorizontalFlip(p=1.0),
        A.VerticalFlip(p=1.0),
        A.Rotate(limit=(30, 30), border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
        A.Rotate(limit=(-75, -75), border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
    ],
)
def test_augmented_masks_agree_with_the_augmented_image(transform):
    """Paint a known polygon into the image, augment, and compare to the moved polygon's mask."""
    height, width = 100, 120
    polygon = np.array([[15, 10], [50, 12], [45, 70], [20, 60]], dtype=np.float32)
    image = np.zeros((height, width, 3), np.uint8)
    image[rasterize([polygon], height, width) > 0] = 255
    augment = A.Compose([transform], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    out, (moved,) = augment_image_and_polygons(augment, image, [polygon], seed=0)
    painted = out[..., 0] > 127
    mask = rasterize([moved], height, width) > 0
    iou = (painted & mask).sum() / (painted | mask).sum()
    if isinstance(transform, (A.HorizontalFlip, A.VerticalFlip)):
        assert (painted ^ mask).sum() <= 2  # exact up to the rasteriser's tie-breaking on slanted edges
    else:
        assert iou > 0.93  # interpolation blurs the painted edge


def test_flip_moves_an_edge_aligned_rectangle_exactly():
    augment = A.Compose([A.HorizontalFlip(p=1.0)], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    _, (moved,) = augment_image_and_polygons(augment, np.zeros((100, 100, 3), np.uint8), [RECT], seed=0)
    assert sorted(set(moved[:, 0].round(3).tolist())) == [60.0, 90.0]  # x' = W - x


def test_flips_are_drawn_independently_per_sample():
    """Each transform has its own random draw: all four flip combinations occur."""
    from booksegm.data.transforms import AugmentConfig, build_augmentation

    augment = build_augmentation(AugmentConfig(hflip=0.5, vflip=0.5, rotate_p=0, photometric_p=0))
    image = np.zeros((10, 12, 3), np.uint8)
    image[0, 0] = 255
    seen = set()
    for seed in range(60):
        out, _ = augment_image_and_polygons(augment, image, [], seed)
        y, x = np.argwhere(out[..., 0] == 255)[0]
        seen.add((bool(y), bool(x)))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


def test_stretch_scales_the_width_alone_and_the_masks_follow_the_image():
    from booksegm.data.transforms import AugmentConfig, build_augmentation

    augment = build_augmentation(AugmentConfig(hflip=0, vflip=0, rotate_p=0, photometric_p=0, stretch_p=1.0,
                                               stretch_limit=0.3))
    height, width = 100, 120
    polygon = np.array([[45, 10], [75, 12], [70, 80], [50, 75]], dtype=np.float32)
    image = np.zeros((height, width, 3), np.uint8)
    image[rasterize([polygon], height, width) > 0] = 255
    widths = []
    for seed in range(12):
        out, (moved,) = augment_image_and_polygons(augment, image, [polygon], seed)
        np.testing.assert_allclose(moved[:, 1], polygon[:, 1], atol=1e-3)  # heights kept
        painted, mask = out[..., 0] > 127, rasterize([moved], height, width) > 0
        assert (painted & mask).sum() / (painted | mask).sum() > 0.93
        widths.append(np.ptp(moved[:, 0]) / np.ptp(polygon[:, 0]))
    assert min(widths) >= 0.7 - 1e-3 and max(widths) <= 1.3 + 1e-3
    assert min(widths) < 0.9 and max(widths) > 1.1  # both ways


def test_stretch_off_leaves_the_other_transforms_draws_as_they_were():
    from booksegm.data.transforms import AugmentConfig, build_augmentation

    augment = build_augmentation(AugmentConfig(scale_p=0.5, scale_limit=0.25, photometric_p=0.5))
    without = A.Compose(augment.transforms[:-1], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    assert isinstance(augment.transforms[-1], A.Affine) and augment.transforms[-1].p == 0.0
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    for seed in range(8):
        out, (moved,) = augment_image_and_polygons(augment, image, [RECT], seed)
        expected, (expected_moved,) = augment_image_and_polygons(without, image, [RECT], seed)
        assert np.array_equal(out, expected) and np.array_equal(moved, expected_moved)


@pytest.mark.parametrize("name", ["stretch_p", "stretch_limit"])
def test_bad_stretch_values_fail_early(name):
    from booksegm.data.transforms import AugmentConfig

    with pytest.raises(ConfigError, match=rf"data.augment.{name} "):
        AugmentConfig(**{name: 1.5}).validate()
