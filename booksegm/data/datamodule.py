"""LightningDataModule: annotation files + image folder -> train/val DataLoaders."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import MISSING
from torch.utils.data import DataLoader

from booksegm.config import ConfigError
from booksegm.data.check import format_report, summarize
from booksegm.data.dataset import BookDataset, SkipEmptyBatches, collate_detection
from booksegm.data.formats import load_annotations
from booksegm.data.formats.common import UNKNOWN_CLASS_POLICIES
from booksegm.data.formats.options import ReaderOptions
from booksegm.data.images import ImageChecks, ImageReadError
from booksegm.data.records import AnnotationError, AnnotationSet, ClassMap, ImageRecord, cap_instances
from booksegm.data.resize import ResizeConfig
from booksegm.data.sampler import ResumableLoader, SeededShuffleSampler
from booksegm.data.synthetic import ANNOTATION_FILE, IMAGE_FOLDER, STYLES, generate_dataset
from booksegm.data.synthetic.spine_photos import cut_spines
from booksegm.data.synthetic.writer import render_settings, rendered_otherwise
from booksegm.data.transforms import AugmentConfig, build_augmentation

log = logging.getLogger(__name__)

FORMATS = ("synthetic", "via", "coco", "yolo")


@dataclass
class SyntheticConfig:
    num_images: int = 300  # scenes rendered once into data.root and reused
    width: int = 320  # rendered image width, pixels
    height: int = 240  # rendered image height, pixels
    seed: int = 0  # the same seed renders the same images
    style: str = "photo"  # photo | plain: the same scenes without light, shadows, blur, noise or vases (ablation)
    spine_photos: str | None = None  # labelled real photos (VIA, COCO, YOLO) whose books paint rendered spines
    spine_share: float = 0.8  # share of rendered spines painted with a real one when spine_photos is set
    packed_share: float = 0.0  # share of bookcases seen close up, rows packed full of thin spines (real shelves)
    flat_share: float = 0.0  # share of places in every row, packed ones too, holding a stack of books lying flat


@dataclass
class DataConfig:
    format: str = "via"  # synthetic | via | coco | yolo
    root: str = MISSING  # dataset folder (required): annotation files and images are found relative to it
    annotations: str | None = None  # annotation file (via/coco) or split folder (yolo) under root; null = auto
    val_annotations: str | None = None  # separate validation set; null = split off val_fraction
    images: str | None = None  # image folder under root; null = the annotation file's folder
    classes: list[str] = field(default_factory=lambda: ["book"])  # class names, id 1 first (NUM_CLASSES - 1)
    class_aliases: dict[str, str] = field(default_factory=dict)  # other spellings -> a class, e.g. book-s-spine: book
    class_attribute: str | None = None  # region_attributes key holding the class; null = auto-detect
    on_unknown_class: str = "error"  # a class name not in classes/aliases: error | skip (counted, logged)
    polyline_as_outline: bool = False  # use open VIA polylines as closed outlines (else skipped, counted)
    val_fraction: float = 0.2  # share of images held out when there is no val_annotations
    split_seed: int = 0  # seeds the train/val split and the k-fold assignment
    folds: int = 0  # k-fold cross-validation: K > 1 holds out fold `fold` of K as validation
    fold: int = 0  # which fold is validation, 0..K-1
    max_gt_instances: int = 100  # MAX_GT_INSTANCES: instances kept per image (the rest dropped, logged)
    min_instance_area: int = 16  # instances with fewer mask pixels after augmentation are dropped
    resize: ResizeConfig = field(default_factory=ResizeConfig)  # IMAGE_RESIZE_MODE and dims for training
    val_resize: ResizeConfig | None = None  # resizing for validation; null = as `resize`
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # the seed's flips and rotation
    batch_size: int = 2  # IMAGES_PER_GPU
    val_batch_size: int = 2  # images per validation batch
    num_workers: int = 2  # DataLoader worker processes
    pin_memory: bool = False  # page-locked batches for faster copies to a GPU
    image_check_cache: str | None = None  # remembers images that decoded (path, size, mtime); null = decode all
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # used when format=synthetic or mix_synthetic
    synthetic_root: str | None = None  # where the synthetic scenes are rendered (once) and read back
    mix_synthetic: bool = False  # joint training: the synthetic scenes join a real set's training images (not its validation)

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"data.format={self.format!r} is unknown; choose one of {list(FORMATS)}")
        if self.synthetic.style not in STYLES:
            raise ConfigError(f"data.synthetic.style={self.synthetic.style!r} is unknown; choose one of {list(STYLES)}")
        for name in ("packed_share", "flat_share"):
            if not 0.0 <= getattr(self.synthetic, name) <= 1.0:
                raise ConfigError(f"data.synthetic.{name} must lie in [0, 1], got {getattr(self.synthetic, name)}")
        if not 0.0 < self.synthetic.spine_share <= 1.0:
            raise ConfigError(f"data.synthetic.spine_share must lie in (0, 1], got {self.synthetic.spine_share}")
        if self.on_unknown_class not in UNKNOWN_CLASS_POLICIES:
            raise ConfigError(f"data.on_unknown_class must be one of {list(UNKNOWN_CLASS_POLICIES)}, got {self.on_unknown_class!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(f"data.folds must be 0 (off) or >= 2, got {self.folds}")
        if self.folds and not 0 <= self.fold < self.folds:
            raise ConfigError(f"data.fold must be in 0..{self.folds - 1}, got {self.fold}")
        if self.mix_synthetic and (self.format == "synthetic" or not self.synthetic_root):
            raise ConfigError("data.mix_synthetic adds rendered scenes to a real set: it needs data.format "
                              "via|coco|yolo and data.synthetic_root")
        if self.max_gt_instances < 1 or self.batch_size < 1 or self.val_batch_size < 1 or self.num_workers < 0:
            raise ConfigError("data.max_gt_instances, batch_size and val_batch_size must be >= 1, num_workers >= 0")
        self.resize.validate(training=True)
        self.effective_val_resize.validate(training=False)
        self.augment.validate()

    @property
    def effective_val_resize(self) -> ResizeConfig:
        return self.val_resize if self.val_resize is not None else self.resize


class BookDataModule(pl.LightningDataModule):
    def __init__(self, cfg: DataConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.class_map = ClassMap(cfg.classes, cfg.class_aliases)
        self.train_records: list[ImageRecord] = []
        self.val_records: list[ImageRecord] = []
        # images that stopped loading after setup, skipped and counted by every loader's workers
        self.skipped_images = multiprocessing.Value("i", 0)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.class_map.classes

    @property
    def root(self) -> Path:
        return Path(self.cfg.root).expanduser()

    @property
    def synthetic_root(self) -> Path | None:
        """The folder of rendered scenes this data reads: its root (format=synthetic) or the mixed-in set."""
        if self.cfg.format == "synthetic":
            return self.root
        return Path(self.cfg.synthetic_root).expanduser() if self.cfg.mix_synthetic else None

    def prepare_data(self) -> None:
        root = self.synthetic_root
        if root is None:
            return
        s = self.cfg.synthetic
        wanted = render_settings(s.num_images, s.seed, s.width, s.height, s.style, s.packed_share, s.spine_photos,
                                 s.spine_share, s.flat_share)
        if (root / ANNOTATION_FILE).exists():
            changed = rendered_otherwise(root, wanted)
            if changed:
                raise ConfigError(f"data.synthetic_root={root} was rendered with other settings ({changed}): give "
                                  "another data.synthetic_root, or delete the folder to render it again")
            return
        spines = None
        if s.spine_photos:
            options = ReaderOptions(class_map=self.class_map, on_unknown_class=self.cfg.on_unknown_class)
            spines = cut_spines(load_annotations(s.spine_photos, "auto", options), s.spine_share, s.spine_photos)
        log.info("rendering %d synthetic images into %s (once; later runs reuse them)", s.num_images, root)
        generate_dataset(root, s.num_images, seed=s.seed, width=s.width, height=s.height, style=s.style, spines=spines,
                         packed_share=s.packed_share, flat_share=s.flat_share)

    def setup(self, stage: str | None = None) -> None:
        if self.train_records or self.val_records:
            return
        if not self.root.is_dir():  # a checkpoint from another machine, or a relative root from another folder
            looked = "" if self.root.is_absolute() else f" (looked for as {self.root.absolute()})"
            raise ConfigError(f"data.root={self.cfg.root}: no such folder{looked}; pass data.root=FOLDER, the folder "
                              "that holds the annotations and images")
        # every image is decoded once, as `data check` does, so a broken file is skipped now instead of
        # ending the run mid-epoch; files unchanged since a run decoded them are not decoded again
        checks = ImageChecks(self.cfg.image_check_cache)
        if stage == "validate" and self.cfg.val_annotations:  # evaluation: a set without training images will do
            self.val_records = self._load(self.cfg.val_annotations, checks)
            checks.save()
            log.info("data: %d validation images", len(self.val_records))
            return
        records = self._load(self.cfg.annotations, checks)
        if self.cfg.val_annotations:
            self.train_records, self.val_records = records, self._load(self.cfg.val_annotations, checks)
        else:
            self.train_records, self.val_records = split_records(records, self.cfg)
        if self.cfg.format != "synthetic" and self.cfg.mix_synthetic:
            scenes = self._read(self.synthetic_root / ANNOTATION_FILE, "via", self.synthetic_root / IMAGE_FOLDER, checks)
            log.info("mix_synthetic: %d rendered scenes join the %d training images", len(scenes), len(self.train_records))
            self.train_records = self.train_records + scenes
        checks.save()
        log.info("image check: %d images decoded in %.2f s; unchanged ones are remembered in %s",
                 checks.decoded, checks.seconds, checks.cache_file or "no file (data.image_check_cache is null)")
        if not self.train_records:
            raise AnnotationError(f"no usable training images in {self.root}: see the skips logged above")
        log.info("data: %d training, %d validation images", len(self.train_records), len(self.val_records))

    def _load(self, relative: str | None, checks: ImageChecks) -> list[ImageRecord]:
        fmt = "via" if self.cfg.format == "synthetic" else self.cfg.format
        path = self.root / relative if relative else default_annotations(self.root, fmt)
        return self._read(path, fmt, self.root / self.cfg.images if self.cfg.images else None, checks)

    def _read(self, path: Path, fmt: str, image_root: Path | None, checks: ImageChecks) -> list[ImageRecord]:
        options = ReaderOptions(
            image_root=image_root, class_map=self.class_map, class_attribute=self.cfg.class_attribute,
            polyline_as_outline=self.cfg.polyline_as_outline, on_unknown_class=self.cfg.on_unknown_class,
        )
        annotations = load_annotations(path, fmt, options)
        # the same summary as `python -m booksegm.data check`
        log.info("annotations:\n%s", format_report(summarize(annotations, verify=checks.verify)))
        return [cap_instances(r, self.cfg.max_gt_instances) for r in readable_records(annotations, checks.verify)]

    def teardown(self, stage: str) -> None:
        with self.skipped_images.get_lock():
            skipped, self.skipped_images.value = self.skipped_images.value, 0
        if not skipped:
            return
        log.warning("images skipped during the run as they no longer loaded: %d (each is named above)", skipped)
        if self.trainer is not None:
            for logger in self.trainer.loggers:
                logger.log_metrics({"data/skipped_images": skipped}, step=self.trainer.global_step)

    def train_dataloader(self) -> DataLoader:
        dataset = BookDataset(
            self.train_records, self.cfg.resize, build_augmentation(self.cfg.augment), self.cfg.min_instance_area,
            skipped=self.skipped_images, copy_paste_p=self.cfg.augment.copy_paste_p,
            max_instances=self.cfg.max_gt_instances,
        )
        # shuffled by the run's seed (seed_everything) and the epoch: resumable mid-epoch; under DDP, one share
        processes, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        sampler = SeededShuffleSampler(len(dataset), seed=torch.initial_seed(), num_replicas=processes, rank=rank)
        return ResumableLoader(dataset, sampler=sampler, progress=self._train_progress, **self._loader_args(self.cfg.batch_size))

    def val_dataloader(self) -> DataLoader:
        dataset = BookDataset(
            self.val_records, self.cfg.effective_val_resize, None, self.cfg.min_instance_area,
            skipped=self.skipped_images,
        )
        return SkipEmptyBatches(dataset, shuffle=False, **self._loader_args(self.cfg.val_batch_size))

    def _loader_args(self, batch_size: int) -> dict:
        workers = self.cfg.num_workers
        return dict(batch_size=batch_size, num_workers=workers, collate_fn=collate_detection, persistent_workers=workers > 0,
                    pin_memory=self.cfg.pin_memory)

    def _train_progress(self) -> tuple[int, bool]:
        """Batches of the current epoch the trainer has run, and whether the epoch is over."""
        if self.trainer is None:
            return 0, False
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return done, done >= self.trainer.num_training_batches


def default_annotations(root: Path, fmt: str) -> Path:
    """The annotation file when data.annotations is unset: the one JSON in root (via/coco) or root (yolo)."""
    if fmt == "yolo":
        return root
    candidates = sorted(root.glob("*.json"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise ConfigError(f"set data.annotations: expected exactly one .json file in {root}, found {found}")
    return candidates[0]


def readable_records(annotations: AnnotationSet, verify: Callable[[Path], None]) -> list[ImageRecord]:
    """Drop images whose file is missing or unreadable (``verify`` raises), logging each (never silently)."""
    usable = []
    for record in annotations.records:
        try:
            verify(record.path)
        except ImageReadError as err:
            log.warning("skipping image: %s", err)
            continue
        usable.append(record)
    if len(usable) < len(annotations.records):
        log.warning(
            "%s: %d of %d images skipped (missing or unreadable files)",
            annotations.source, len(annotations.records) - len(usable), len(annotations.records),
        )
    return usable


def split_records(records: list[ImageRecord], cfg: DataConfig) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Seeded split: fold ``cfg.fold`` of ``cfg.folds`` as validation, else ``val_fraction`` of the images."""
    order = np.random.default_rng(cfg.split_seed).permutation(len(records))
    if cfg.folds:
        val_ids = set(np.array_split(order, cfg.folds)[cfg.fold].tolist())
    else:
        val_ids = set(order[: round(len(records) * cfg.val_fraction)].tolist())
    train = [r for i, r in enumerate(records) if i not in val_ids]
    val = [r for i, r in enumerate(records) if i in val_ids]
    return train, val
