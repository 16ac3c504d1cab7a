"""Prediction entry point: ``python -m booksegm.predict ckpt_path=PATH input=FILE_OR_DIR output_dir=DIR``.

Photos (jpg, png, webp, ... upright per EXIF), folders (searched recursively) and videos
(frame by frame). Each photo is resized as validation resized it; boxes and masks are mapped
back onto the photo. Outputs (``formats=[...]``), under ``output_dir``, named after each
input's path relative to the input folder:

- ``overlay/<name>.png``: instance colours, outlines, boxes, class and score;
- ``splash/<name>.png``: matterport's colour splash (books in colour, the rest grey);
- ``masks/<name>/<k>_<class>_<score>.png``: one 0/255 PNG per detection, best score first;
- ``predictions_coco.json``: COCO images, categories and scored annotations (RLE masks); its
  ``annotations`` list is a COCO results file;
- ``predictions_via.json``: a VIA 2 project (polygons from the mask outlines, simplified) to
  open in VIA and correct: model-assisted labelling for the next round.

Videos are written back as ``overlay/<name>.mp4`` and ``splash/<name>.mp4``. A photo without
detections gets empty outputs; unreadable files are reported, counted and skipped.

An ``output_dir`` that is not empty is refused (outputs of an earlier run would mix with this
one's), except the new run folder Hydra makes by default. ``overwrite=true`` deletes the five
outputs above from it first (every format, not only those asked for, so nothing stale is left),
and only those: other files there may be the user's, so they stay.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import hydra
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from booksegm.config import ConfigError, check_command_line
from booksegm.data.formats.coco import write_coco
from booksegm.data.formats.via import write_via
from booksegm.data.records import AnnotationSet, ImageRecord, Instance
from booksegm.data.resize import ResizeConfig
from booksegm.errors import cli_errors
from booksegm.evaluation.coco_eval import encode_masks
from booksegm.inference import Detections, LoadedModel, predict_images, read_settings
from booksegm.photos import (
    PhotoSettings,
    closing_lines,
    detect_photos,
    save_png,
    start_run,
    via_record,
    with_input_override,
)
from booksegm.viz.overlays import color_splash, draw_instances

log = logging.getLogger(__name__)

# what each format writes under output_dir
OUTPUTS = {"overlay": "overlay", "splash": "splash", "masks": "masks", "coco": "predictions_coco.json",
           "via": "predictions_via.json"}
FORMATS = tuple(OUTPUTS)
VIDEO_FORMATS = ("overlay", "splash")  # what a video is written back as


@dataclass
class PredictConfig(PhotoSettings):
    formats: list[str] = field(default_factory=lambda: list(FORMATS))

    def validate(self) -> None:
        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown or not self.formats:
            raise ConfigError(f"formats={self.formats}: choose from {list(FORMATS)}")
        super().validate()


@dataclass
class PredictSummary:
    images: int = 0
    detections: int = 0  # on photos and video frames
    videos: int = 0
    frames: int = 0
    skipped: list[str] = field(default_factory=list)  # one message per unreadable file
    ignored: list[str] = field(default_factory=list)  # files of the input folder neither photo nor video, by suffix


def render(kind: str, image: np.ndarray, detections: Detections, class_names: list[str]) -> np.ndarray:
    if kind == "splash":
        return color_splash(image, detections.masks)
    return draw_instances(image, detections.masks, detections.boxes, detections.scores, detections.labels, class_names)


class PhotoOutputs:
    """Writes each photo's outputs as it comes; the COCO and VIA files at :meth:`close`."""

    def __init__(self, out: Path, root: Path, formats: list[str], class_names: list[str], polygon_tolerance: float):
        self.out, self.root, self.formats = out, root, formats
        self.class_names, self.polygon_tolerance = class_names, polygon_tolerance
        self.coco = AnnotationSet(source=out / OUTPUTS["coco"], flavour="coco", records=[],
                                  class_names=tuple(class_names))
        self.via = AnnotationSet(source=out / OUTPUTS["via"], flavour="via2_project", records=[],
                                 class_names=tuple(class_names))

    def add(self, path: Path, image: np.ndarray, detections: Detections) -> None:
        name = path.relative_to(self.root)
        for kind in ("overlay", "splash"):
            if kind in self.formats:
                save_png(render(kind, image, detections, self.class_names),
                         self.out / OUTPUTS[kind] / name.with_suffix(".png"))
        if "masks" in self.formats:
            folder = self.out / OUTPUTS["masks"] / name.with_suffix("")
            folder.mkdir(parents=True, exist_ok=True)  # empty for a photo without detections
            for k, (mask, label, score) in enumerate(zip(detections.masks, detections.labels, detections.scores)):
                save_png(mask.astype(np.uint8) * 255, folder / f"{k:03d}_{self.class_names[label - 1]}_{score:.2f}.png")
        if "coco" in self.formats:
            self._add_coco(path, name, image, detections)
        if "via" in self.formats:
            self.via.records.append(via_record(path, name, detections, self.polygon_tolerance))

    def _add_coco(self, path: Path, name: Path, image: np.ndarray, detections: Detections) -> None:
        """Exact masks (holes and all parts kept, empty ones too) and the detector's boxes."""
        instances = []
        for box, label, score, rle in zip(detections.boxes, detections.labels, detections.scores,
                                          encode_masks(detections.masks)):
            rle["counts"] = rle["counts"].decode("ascii")  # JSON text, as COCO files hold it
            instances.append(Instance((), int(label), score=float(score), rle=rle, box=tuple(float(v) for v in box)))
        height, width = image.shape[:2]
        self.coco.records.append(ImageRecord(name.as_posix(), path, instances, width=width, height=height))

    def close(self) -> None:
        if "coco" in self.formats:
            write_coco(self.coco, self.out / OUTPUTS["coco"], image_root=self.root)
        if "via" in self.formats:
            write_via(self.via, self.out / OUTPUTS["via"], image_root=self.root, project=True)


def predict_photos(loaded: LoadedModel, photos: list[Path], resize: ResizeConfig, settings: PredictConfig,
                   outputs: PhotoOutputs, summary: PredictSummary) -> None:
    for path, image, detections in detect_photos(loaded, photos, resize, settings, summary.skipped, "predict"):
        outputs.add(path, image, detections)
        summary.images += 1
        summary.detections += len(detections)


def predict_video(loaded: LoadedModel, path: Path, name: Path, settings: PredictConfig, resize: ResizeConfig,
                  summary: PredictSummary) -> None:
    """Frame by frame into ``<kind>/<name>.mp4`` for each video format asked for."""
    kinds = [kind for kind in VIDEO_FORMATS if kind in settings.formats]
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    writers: dict[str, cv2.VideoWriter] = {}  # opened at the first frame, which gives the size
    frames = 0
    progress = tqdm(total=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None, desc=path.name, unit="frame")
    try:
        while batch := [f for f in (read_frame(capture) for _ in range(settings.batch_size)) if f is not None]:
            for image, detections in zip(batch, predict_images(loaded, batch, resize, settings.max_side)):
                for kind in kinds:
                    if kind not in writers:
                        video = Path(settings.output_dir) / OUTPUTS[kind] / name.with_suffix(".mp4")
                        writers[kind] = open_video(video, fps, image.shape)
                    picture = render(kind, image, detections, loaded.class_names)
                    writers[kind].write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                summary.detections += len(detections)
            frames += len(batch)
            progress.update(len(batch))
    finally:
        progress.close()
        capture.release()
        for writer in writers.values():
            writer.release()
    if frames == 0:
        message = f"{path}: cannot decode: no video frames read"
        log.warning("skipping %s", message)
        summary.skipped.append(message)
    else:
        summary.videos += 1
        summary.frames += frames


def read_frame(capture: cv2.VideoCapture) -> np.ndarray | None:
    ok, frame = capture.read()
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok else None


def open_video(path: Path, fps: float, shape: tuple[int, ...]) -> cv2.VideoWriter:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps if fps > 0 else 25.0, (shape[1], shape[0]))
    if not writer.isOpened():
        raise ConfigError(f"{path}: OpenCV cannot write an mp4v video here")
    return writer


def predict(settings: PredictConfig) -> PredictSummary:
    start = time.perf_counter()
    run = start_run(settings, "predict", list(OUTPUTS.values()))
    out = Path(settings.output_dir)
    summary = PredictSummary(ignored=run.ignored)
    outputs = PhotoOutputs(out, run.root, settings.formats, run.loaded.class_names, settings.polygon_tolerance)
    predict_photos(run.loaded, run.photos, run.resize, settings, outputs, summary)
    if run.videos and not set(VIDEO_FORMATS) & set(settings.formats):
        log.warning("%d video(s) not processed: videos are written as %s only", len(run.videos), list(VIDEO_FORMATS))
    elif run.videos:
        for path in run.videos:
            predict_video(run.loaded, path, path.relative_to(run.root), settings, run.resize, summary)
    if run.photos:
        outputs.close()
    print(report(summary, out, time.perf_counter() - start))
    return summary


def report(summary: PredictSummary, out: Path, seconds: float) -> str:
    lines = [(f"predicted {summary.images} images and {summary.videos} videos ({summary.frames} frames): "
              f"{summary.detections} detections in {seconds:.1f} s")]
    return "\n".join(lines + closing_lines(summary.skipped, summary.ignored, out))


@hydra.main(version_base="1.3", config_path="pkg://booksegm.conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with cli_errors():
        predict(read_settings(PredictConfig, cfg))


if __name__ == "__main__":
    sys.argv = with_input_override(sys.argv)
    with cli_errors():
        check_command_line("predict", sys.argv)
    main()
