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
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from booksegm.config import ConfigError, check_command_line
from booksegm.data.formats.coco import write_coco
from booksegm.data.formats.geometry import mask_outlines
from booksegm.data.formats.via import write_via
from booksegm.data.images import ImageReadError, load_rgb
from booksegm.data.records import AnnotationSet, ImageRecord, Instance
from booksegm.data.resize import ResizeConfig
from booksegm.errors import cli_errors
from booksegm.evaluation.coco_eval import encode_masks
from booksegm.evaluation.visualize import color_splash, draw_instances
from booksegm.inference import (
    DEFAULT_MAX_SIDE,
    Detections,
    LoadedModel,
    load_model,
    predict_images,
    read_settings,
    select_device,
    set_detection_limits,
)

log = logging.getLogger(__name__)

# what each format writes under output_dir
OUTPUTS = {"overlay": "overlay", "splash": "splash", "masks": "masks", "coco": "predictions_coco.json",
           "via": "predictions_via.json"}
FORMATS = tuple(OUTPUTS)
VIDEO_FORMATS = ("overlay", "splash")  # what a video is written back as
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


@dataclass
class PredictConfig:
    input: str
    output_dir: str
    ckpt_path: str | None = None  # null: the bundled books model
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    score_threshold: float | None = None  # DETECTION_MIN_CONFIDENCE; null: the checkpoint's calibrated one, else 0.7
    max_detections: int = 100  # DETECTION_MAX_INSTANCES
    batch_size: int = 1  # IMAGES_PER_GPU
    device: str = "auto"
    resize: ResizeConfig | None = None  # null: as the checkpoint's validation
    max_side: int = DEFAULT_MAX_SIDE  # px: the longest model input; a longer photo is scaled down first
    polygon_tolerance: float = 1.0  # px, cv2.approxPolyDP epsilon for VIA polygons
    overwrite: bool = False  # a non-empty output_dir: refused, or (true) predict's earlier outputs in it deleted

    def validate(self) -> None:
        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown or not self.formats:
            raise ConfigError(f"formats={self.formats}: choose from {list(FORMATS)}")
        if self.score_threshold is not None and not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must lie in [0, 1], got {self.score_threshold}")
        if self.max_detections < 1 or self.batch_size < 1 or self.max_side < 1 or self.polygon_tolerance < 0:
            raise ConfigError("max_detections, batch_size and max_side must be >= 1, polygon_tolerance >= 0")
        if self.resize is not None:
            self.resize.validate(training=False)


@dataclass
class PredictSummary:
    images: int = 0
    detections: int = 0  # on photos and video frames
    videos: int = 0
    frames: int = 0
    skipped: list[str] = field(default_factory=list)  # one message per unreadable file
    ignored: list[str] = field(default_factory=list)  # files of the input folder neither photo nor video, by suffix


def find_inputs(path: Path) -> tuple[Path, list[Path], list[Path], list[Path]]:
    """(the folder names are relative to, photos, videos, the other files) for a file or a folder tree."""
    if not path.exists():
        raise ConfigError(f"input={path}: no such file or folder")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            raise ConfigError(f"input={path}: not an image or video ({sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES)})")
        return path.parent, [path] * (suffix in IMAGE_SUFFIXES), [path] * (suffix in VIDEO_SUFFIXES), []
    files = sorted(p for p in path.rglob("*") if p.is_file())
    photos = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    if not photos and not videos:
        raise ConfigError(f"input={path}: no images or videos in this folder or below it")
    others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
    return path, photos, videos, others


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
            self._add_via(path, name, detections)

    def _add_coco(self, path: Path, name: Path, image: np.ndarray, detections: Detections) -> None:
        """Exact masks (holes and all parts kept, empty ones too) and the detector's boxes."""
        instances = []
        for box, label, score, rle in zip(detections.boxes, detections.labels, detections.scores,
                                          encode_masks(detections.masks)):
            rle["counts"] = rle["counts"].decode("ascii")  # JSON text, as COCO files hold it
            instances.append(Instance((), int(label), score=float(score), rle=rle, box=tuple(float(v) for v in box)))
        height, width = image.shape[:2]
        self.coco.records.append(ImageRecord(name.as_posix(), path, instances, width=width, height=height))

    def _add_via(self, path: Path, name: Path, detections: Detections) -> None:
        instances = []
        for label, score, mask in zip(detections.labels, detections.scores, detections.masks):
            outline = via_outline(mask, self.polygon_tolerance)
            if outline is not None:
                instances.append(Instance((outline,), int(label), score=float(score)))
        self.via.records.append(ImageRecord(name.as_posix(), path, instances))

    def close(self) -> None:
        if "coco" in self.formats:
            write_coco(self.coco, self.out / OUTPUTS["coco"], image_root=self.root)
        if "via" in self.formats:
            write_via(self.via, self.out / OUTPUTS["via"], image_root=self.root, project=True)


def via_outline(mask: np.ndarray, tolerance: float) -> np.ndarray | None:
    """The outline of a mask's largest part, on pixel edges, simplified; None for an empty mask.

    VIA holds one polygon per region, so a detection split in parts keeps its largest one.
    """
    outlines = mask_outlines(mask)
    if not outlines:
        return None
    largest = max(outlines, key=lambda p: abs(cv2.contourArea(p)))
    simplified = cv2.approxPolyDP(largest.reshape(-1, 1, 2), tolerance, closed=True).reshape(-1, 2)
    return simplified if len(simplified) >= 3 else largest


def save_png(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)  # PIL: non-ASCII paths work everywhere (cv2.imwrite's do not on Windows)


def predict_photos(loaded: LoadedModel, photos: list[Path], resize: ResizeConfig, settings: PredictConfig,
                   outputs: PhotoOutputs, summary: PredictSummary) -> None:
    batch: list[tuple[Path, np.ndarray]] = []

    def flush() -> None:
        images = [image for _, image in batch]
        for (path, image), detections in zip(batch, predict_images(loaded, images, resize, settings.max_side)):
            outputs.add(path, image, detections)
            summary.images += 1
            summary.detections += len(detections)
        batch.clear()

    for path in tqdm(photos, desc="predict", unit="img"):
        try:
            batch.append((path, load_rgb(path)))
        except ImageReadError as err:
            log.warning("skipping %s", err)
            summary.skipped.append(str(err))
        if len(batch) == settings.batch_size:
            flush()
    if batch:
        flush()


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


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse a folder that holds anything (before any work), unless told to overwrite."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir={out}: a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_this_run_folder(out) and not overwrite:
        raise ConfigError(f"output_dir={out} is not empty: give a new folder, or overwrite=true to replace "
                          f"predict's outputs there ({', '.join(OUTPUTS.values())})")


def is_this_run_folder(out: Path) -> bool:
    """The folder Hydra made for this run (the default output_dir): new, it holds only Hydra's own files."""
    return HydraConfig.initialized() and out.resolve() == Path(HydraConfig.get().runtime.output_dir).resolve()


def remove_earlier_outputs(out: Path) -> None:
    """Every output predict writes, whatever formats this run asks for: none may be left from an earlier run."""
    for path in (out / name for name in OUTPUTS.values()):
        if path.exists():
            log.warning("overwrite=true: deleting %s", path)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def predict(settings: PredictConfig) -> PredictSummary:
    settings.validate()
    out = Path(settings.output_dir)
    check_output_dir(out, settings.overwrite)
    start = time.perf_counter()
    root, photos, videos, others = find_inputs(Path(settings.input).expanduser())
    ignored = [p.relative_to(root).as_posix() for p in others]
    if ignored:
        log.warning("ignoring %s", describe_ignored(ignored))
    loaded = load_model(settings.ckpt_path, select_device(settings.device))
    resize = settings.resize or loaded.resize
    if resize is None:
        raise ConfigError(
            f"{settings.ckpt_path}: the checkpoint does not say how images were resized (no run config beside it): "
            "set resize={mode:square,min_dim:800,max_dim:1024} as in training"
        )
    threshold = loaded.display_threshold(settings.score_threshold)
    log.info("score threshold %.3f (%s)", threshold, "asked for" if settings.score_threshold is not None else
             "calibrated on the run's validation" if loaded.score_threshold is not None else "matterport's default")
    set_detection_limits(loaded.model, threshold, settings.max_detections)
    if settings.overwrite:
        remove_earlier_outputs(out)  # now that the model loaded: a failed start leaves them
    summary = PredictSummary(ignored=ignored)
    outputs = PhotoOutputs(out, root, settings.formats, loaded.class_names, settings.polygon_tolerance)
    predict_photos(loaded, photos, resize, settings, outputs, summary)
    if videos and not set(VIDEO_FORMATS) & set(settings.formats):
        log.warning("%d video(s) not processed: videos are written as %s only", len(videos), list(VIDEO_FORMATS))
    elif videos:
        for path in videos:
            predict_video(loaded, path, path.relative_to(root), settings, resize, summary)
    if photos:
        outputs.close()
    print(report(summary, out, time.perf_counter() - start))
    return summary


def report(summary: PredictSummary, out: Path, seconds: float) -> str:
    lines = [(f"predicted {summary.images} images and {summary.videos} videos ({summary.frames} frames): "
              f"{summary.detections} detections in {seconds:.1f} s")]
    if summary.skipped:
        lines.append(f"skipped {len(summary.skipped)} unreadable file(s):")
        lines += [f"  {message}" for message in summary.skipped]
    if summary.ignored:
        lines.append(f"ignored {describe_ignored(summary.ignored)}")
    lines.append(f"outputs in {out}")
    return "\n".join(lines)


def describe_ignored(names: list[str], shown: int = 5) -> str:
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} file(s) that are neither images nor videos ({suffixes}): {', '.join(names[:shown])}{more}"


@hydra.main(version_base="1.3", config_path="pkg://booksegm.conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with cli_errors():
        predict(read_settings(PredictConfig, cfg))


def with_input_override(argv: list[str]) -> list[str]:
    """``booksegm predict shelf.jpg ...``: a first argument that is neither a flag nor an override is
    the ``input``."""
    if len(argv) > 1 and not argv[1].startswith("-") and "=" not in argv[1]:
        return [argv[0], f"input={argv[1]}", *argv[2:]]
    return argv


if __name__ == "__main__":
    sys.argv = with_input_override(sys.argv)
    with cli_errors():
        check_command_line("predict", sys.argv)
    main()
