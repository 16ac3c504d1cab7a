"""A rendered set on disk: its JPEG images and their labels as a VIA 2.x export."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from booksegm.config import ConfigError
from booksegm.data.formats.via import write_via
from booksegm.data.records import AnnotationSet, ImageRecord, Instance
from booksegm.data.synthetic.camera import render_scene

JPEG_QUALITY = 92
ANNOTATION_FILE, IMAGE_FOLDER = "via_region_data.json", "images"  # a rendered set's layout under its folder


def generate_dataset(
    out_dir: str | Path, num_images: int, seed: int = 0, width: int = 320, height: int = 240, progress: bool = True,
    style: str = "photo",
) -> Path:
    """Write out_dir/images/synth_00000.jpg ... (JPEG quality 92) and out_dir/via_region_data.json;
    return the JSON path. Deterministic for a seed (same bytes for same args). Shows a tqdm bar when progress."""
    if num_images < 0 or width < 32 or height < 32:
        raise ConfigError(f"need num_images >= 0 and at least 32x32 pixels, got {num_images} images of {width}x{height}")
    out_dir = Path(out_dir)
    image_dir = out_dir / IMAGE_FOLDER
    image_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / ANNOTATION_FILE
    annotations = AnnotationSet(source=json_path, flavour="synthetic", records=[], class_names=("book",))
    for index in tqdm(range(num_images), desc="synthetic books", unit="img", disable=not progress):
        image, polygons = render_scene(np.random.default_rng([seed, index]), width, height, style=style)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
        name = f"synth_{index:05d}.jpg"
        (image_dir / name).write_bytes(data)
        instances = [Instance((polygon,), 1) for polygon in polygons]
        annotations.records.append(ImageRecord(name, image_dir / name, instances))
    write_via(annotations, json_path, image_root=image_dir)  # bare file names: the image root is images/
    return json_path
