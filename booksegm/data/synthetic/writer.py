"""A rendered set on disk: its JPEG images and their labels as a VIA 2.x export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

from booksegm.config import ConfigError
from booksegm.data.formats.via import write_via
from booksegm.data.records import AnnotationSet, ImageRecord, Instance
from booksegm.data.synthetic.camera import render_scene

if TYPE_CHECKING:
    from booksegm.data.synthetic.spine_photos import SpineCutouts

JPEG_QUALITY = 92
ANNOTATION_FILE, IMAGE_FOLDER = "via_region_data.json", "images"  # a rendered set's layout under its folder
SETTINGS_FILE = "render.json"  # what the set was rendered with, so that a reused folder can be checked


def generate_dataset(
    out_dir: str | Path, num_images: int, seed: int = 0, width: int = 320, height: int = 240, progress: bool = True,
    style: str = "photo", spines: SpineCutouts | None = None, packed_share: float = 0.0, flat_share: float = 0.0,
) -> Path:
    """Write out_dir/images/synth_00000.jpg ... (JPEG quality 92), out_dir/via_region_data.json and
    the settings in out_dir/render.json (:func:`render_settings`); return the JSON path.
    Deterministic for a seed (same bytes for same args). Shows a tqdm bar when progress."""
    if num_images < 0 or width < 32 or height < 32:
        raise ConfigError(f"need num_images >= 0 and at least 32x32 pixels, got {num_images} images of {width}x{height}")
    out_dir = Path(out_dir)
    image_dir = out_dir / IMAGE_FOLDER
    image_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / ANNOTATION_FILE
    annotations = AnnotationSet(source=json_path, flavour="synthetic", records=[], class_names=("book",))
    for index in tqdm(range(num_images), desc="synthetic books", unit="img", disable=not progress):
        image, polygons = render_scene(np.random.default_rng([seed, index]), width, height, style=style, spines=spines,
                                       packed_share=packed_share, flat_share=flat_share)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
        name = f"synth_{index:05d}.jpg"
        (image_dir / name).write_bytes(data)
        instances = [Instance((polygon,), 1) for polygon in polygons]
        annotations.records.append(ImageRecord(name, image_dir / name, instances))
    write_via(annotations, json_path, image_root=image_dir)  # bare file names: the image root is images/
    settings = render_settings(num_images, seed, width, height, style, packed_share,
                               spines.source if spines else None, spines.share if spines else None, flat_share)
    (out_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=1), encoding="utf-8")
    return json_path


def render_settings(num_images: int, seed: int, width: int, height: int, style: str, packed_share: float,
                    spines: str | None, spine_share: float | None, flat_share: float = 0.0) -> dict:
    """What a rendered set depends on; ``spines``: the annotations the cut-out spines come from."""
    return {"num_images": num_images, "seed": seed, "width": width, "height": height, "style": style,
            "packed_share": packed_share, "spines": spines, "spine_share": spine_share if spines is not None else None,
            "flat_share": flat_share}


def rendered_otherwise(out_dir: str | Path, wanted: dict) -> str:
    """How the set in ``out_dir`` was rendered otherwise than ``wanted`` (:func:`render_settings`), as
    "key X there, Y asked, ..."; "" when alike."""
    recorded = Path(out_dir) / SETTINGS_FILE
    # a setting a folder does not record was not there when it was rendered: no packed shelves or
    # extra stacks, drawn spines only; what older folders do not record at all is trusted
    legacy = {**wanted, "packed_share": 0.0, "spines": None, "spine_share": None, "flat_share": 0.0}
    found = {**legacy, **(json.loads(recorded.read_text(encoding="utf-8")) if recorded.exists() else {})}
    return ", ".join(f"{key} {found.get(key)!r} there, {value!r} asked" for key, value in wanted.items()
                     if found.get(key) != value)
