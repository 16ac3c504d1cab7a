"""Export entry point: ``python -m booksegm.export ckpt_path=PATH format=state_dict|torchscript|onnx [output=FILE]``.

Formats:

- ``state_dict``: torchvision's weights (``.pth``) and a small JSON of the model config beside it
  (``.json``), loadable with torchvision alone, no booksegm installed: ``TORCHVISION_RECIPE``
  below, which the command prints with the file names filled in. torchvision's own transform
  then resizes each photo by ``min_size``/``max_size`` (set from the run's ``data.val_resize``)
  and returns boxes and masks on the photo. The recipe covers the v1 layout (every backbone but
  ``resnet50_v2``) with ``pool_size`` 7 and ``mask_pool_size`` 14.
- ``torchscript``: the scripted model; ``model([image])`` returns ``(losses, detections)``.
- ``onnx``: opset 17, input ``image`` (3, H, W) float in [0, 1] with dynamic H and W; outputs
  ``boxes``, ``labels``, ``scores``, ``masks``.

TorchScript and ONNX models take the image as booksegm's model does: already sized as in
validation (``booksegm.inference.prepare_image``), and they return the model-input frame.

Every export is loaded back and run on a fixed image (``image=``, default a synthetic book
scene), compared with the eager model (boxes, scores, masks) and timed; a mismatch fails.
A file already at the output (or, for a state dict, its JSON) is refused unless ``overwrite=true``.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from booksegm.config import ConfigError, check_command_line
from booksegm.data.images import load_rgb
from booksegm.data.resize import ResizeConfig
from booksegm.data.synthetic import render_scene
from booksegm.errors import cli_errors
from booksegm.inference import (
    SPEC_SECTION,
    LoadedModel,
    load_model,
    prepare_image,
    read_settings,
    set_detection_limits,
    spec_path,
)
from booksegm.model.build import is_torchvision_v1_layout
from booksegm.model.bundled import bundled_folder, model_file

log = logging.getLogger(__name__)

FORMATS = {"state_dict": ".pth", "torchscript": ".torchscript.pt", "onnx": ".onnx"}
ONNX_OPSET = 17
OUTPUT_NAMES = ("boxes", "labels", "scores", "masks")
# Exported and eager outputs agree to float rounding; these bounds leave room for other kernels.
TOLERANCE = {"box": 0.05, "score": 1e-3, "mask": 1e-2}  # pixels, score, mask probability

# Three lines after the imports; tests run it in a process that never imports booksegm.
TORCHVISION_RECIPE = """\
import json, torch
from torchvision.models.detection import MaskRCNN, anchor_utils, backbone_utils
spec = json.load(open({spec!r}))
model = MaskRCNN(backbone_utils.resnet_fpn_backbone(backbone_name=spec["backbone"], weights=None), rpn_anchor_generator=anchor_utils.AnchorGenerator(**spec["anchor_generator"]), **spec["maskrcnn"])
model.load_state_dict(torch.load({weights!r})); model.eval()
"""

Detector = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # (3, H, W) image -> one image's outputs


@dataclass
class ExportConfig:
    ckpt_path: str | None = None  # null: the bundled books model
    format: str = "onnx"
    output: str | None = None  # null: next to the checkpoint
    overwrite: bool = False  # an existing output: refused, or (true) replaced
    score_threshold: float | None = None  # null: the checkpoint's model.box_score_thresh
    max_detections: int | None = None  # null: the checkpoint's model.box_detections_per_img
    image: str | None = None  # the photo to check and time on; null: a synthetic scene
    timing_runs: int = 3

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"format={self.format!r} is unknown; choose one of {list(FORMATS)}")
        if self.score_threshold is not None and not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must lie in [0, 1], got {self.score_threshold}")
        if self.max_detections is not None and self.max_detections < 1:
            raise ConfigError(f"max_detections must be >= 1, got {self.max_detections}")
        if self.timing_runs < 1:
            raise ConfigError(f"timing_runs must be >= 1, got {self.timing_runs}")

    def output_path(self) -> Path:
        if self.output:
            return Path(self.output).expanduser()
        ckpt = model_file(self.ckpt_path)
        if ckpt.parent == bundled_folder():  # never into the installed package: the current folder
            return Path(ckpt.stem + FORMATS[self.format])
        return ckpt.with_name(ckpt.stem + FORMATS[self.format])

    def check_output(self) -> None:
        """Refuse to replace a file (before any work), unless told to overwrite; never the model being
        exported, overwrite or not (a checkpoint replaced by its state dict no longer resumes)."""
        output = self.output_path()
        written = [output, spec_path(output)] if self.format == "state_dict" else [output]
        source = Path(self.ckpt_path).expanduser() if self.ckpt_path else None
        for path in written:
            if source is not None and same_file(path, source):
                raise ConfigError(f"output={path} is the model being exported (ckpt_path={self.ckpt_path}): "
                                  "give another output=; overwrite=true never replaces the input")
            if path.exists() and not self.overwrite:
                raise ConfigError(f"{path} exists: give another output=, or overwrite=true to replace it")


def same_file(path: Path, other: Path) -> bool:
    """The same file, whether named through a link, a relative path or not yet written."""
    if path.exists() and other.exists():
        return path.samefile(other)
    return path.resolve() == other.resolve()


# -- writing ----------------------------------------------------------------------------------


def torchvision_spec(loaded: LoadedModel) -> dict:
    """The JSON beside an exported state dict: torchvision's constructor arguments (the recipe in
    this module's docstring) and, under ``booksegm``, what booksegm itself rebuilds from."""
    cfg = loaded.model_cfg
    spec = loaded.spec()
    anchors = cfg.anchors.generator()
    resize = loaded.resize or ResizeConfig()
    return {
        "backbone": cfg.backbone,
        "class_names": loaded.class_names,
        "anchor_generator": {
            "sizes": [list(s) for s in anchors.sizes], "aspect_ratios": [list(a) for a in anchors.aspect_ratios],
        },
        "maskrcnn": {
            "num_classes": 1 + len(loaded.class_names),
            "min_size": resize.min_dim or resize.max_dim,
            "max_size": resize.max_dim,
            "image_mean": list(cfg.image_mean),
            "image_std": list(cfg.image_std),
            "rpn_pre_nms_top_n_train": cfg.rpn_pre_nms_top_n_train,
            "rpn_pre_nms_top_n_test": cfg.rpn_pre_nms_top_n_test,
            "rpn_post_nms_top_n_train": cfg.rpn_post_nms_top_n_train,
            "rpn_post_nms_top_n_test": cfg.rpn_post_nms_top_n_test,
            "rpn_nms_thresh": cfg.rpn_nms_thresh,
            "rpn_batch_size_per_image": cfg.rpn_batch_size_per_image,
            "box_score_thresh": spec["model"]["box_score_thresh"],
            "box_nms_thresh": cfg.box_nms_thresh,
            "box_detections_per_img": spec["model"]["box_detections_per_img"],
            "box_batch_size_per_image": cfg.box_batch_size_per_image,
            "box_positive_fraction": cfg.box_positive_fraction,
        },
        SPEC_SECTION: spec,
    }


def write_state_dict(loaded: LoadedModel, path: Path) -> None:
    if not is_torchvision_v1_layout(loaded.model_cfg):
        log.warning("%s: the torchvision-only recipe covers the v1 layout (BatchNorm, FPN 256, pool sizes 7/14, "
                    "standard heads, class scores, one view); load this model with booksegm.inference.load_model", path)
    torch.save(loaded.model.state_dict(), path)
    spec_path(path).write_text(json.dumps(torchvision_spec(loaded), indent=2))


def write_torchscript(loaded: LoadedModel, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice, once per scripted function
        torch.jit.save(torch.jit.script(loaded.model), str(path))


def write_onnx(loaded: LoadedModel, path: Path, image: torch.Tensor) -> None:
    import onnx

    detections = {"boxes": {0: "detections"}, "labels": {0: "detections"}, "scores": {0: "detections"},
                  "masks": {0: "detections", 2: "height", 3: "width"}}
    with warnings.catch_warnings():
        # The TorchScript-based exporter (torch.export cannot trace torchvision's detection code)
        # warns at every data-dependent step it records; parity is checked on the result instead.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            loaded.model, ([image],), str(path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=["image"], output_names=list(OUTPUT_NAMES),
            dynamic_axes={"image": {1: "height", 2: "width"}, **detections},
        )
    onnx.checker.check_model(str(path))


# -- loading back -----------------------------------------------------------------------------


def eager_detector(loaded: LoadedModel) -> Detector:
    return lambda image: loaded.model([image])[0]


def load_exported(format: str, path: Path) -> Detector:
    """The exported file, loaded as its users will load it, as a detector on one image."""
    if format == "state_dict":
        return eager_detector(load_model(path))
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            scripted = torch.jit.load(str(path))

        def detect(image: torch.Tensor) -> dict[str, torch.Tensor]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "RCNN always returns a (Losses, Detections) tuple in scripting"
                return scripted([image])[1][0]

        return detect
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda image: dict(
        zip(OUTPUT_NAMES, map(torch.from_numpy, session.run(None, {"image": image.numpy()})), strict=True)
    )


# -- checking ---------------------------------------------------------------------------------


@dataclass
class Parity:
    """How far an exported model's outputs are from the eager model's on one image."""

    detections: int  # the eager model's
    other_detections: int  # the exported model's
    same_labels: bool = True
    box: float = 0.0  # max |difference|, pixels
    score: float = 0.0
    mask: float = 0.0  # max |difference| of mask probabilities

    @property
    def ok(self) -> bool:
        return self.detections == self.other_detections and self.same_labels and all(
            getattr(self, name) <= limit for name, limit in TOLERANCE.items()
        )

    def __str__(self) -> str:
        if self.detections != self.other_detections:
            return f"{self.other_detections} detections where the eager model has {self.detections}"
        if not self.same_labels:
            return f"{self.detections} detections, but with other classes than the eager model's"
        return (f"{self.detections} detections, max |difference| box {self.box:.1e} px, "
                f"score {self.score:.1e}, mask {self.mask:.1e}")


def compare(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> Parity:
    parity = Parity(len(reference["scores"]), len(other["scores"]))
    if parity.detections != parity.other_detections or parity.detections == 0:
        return parity
    parity.same_labels = torch.equal(reference["labels"], other["labels"].to(reference["labels"].dtype))
    for name, key in (("box", "boxes"), ("score", "scores"), ("mask", "masks")):
        setattr(parity, name, (reference[key].float() - other[key].float()).abs().max().item())
    return parity


def median_ms(detector: Detector, image: torch.Tensor, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        detector(image)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def sample_image(path: str | None, resize: ResizeConfig | None) -> torch.Tensor:
    """The model input for ``path`` (or a synthetic scene), sized as in validation."""
    photo = load_rgb(path) if path else render_scene(np.random.default_rng(0), 320, 240)[0]
    return prepare_image(photo, resize or ResizeConfig(mode="none"))[0]


# -- the command ------------------------------------------------------------------------------


@torch.no_grad()
def export(settings: ExportConfig) -> Parity:
    settings.validate()
    settings.check_output()
    # exported files run anywhere; CPU is where they check. A graph holds one view: TTA's merge is
    # booksegm's (booksegm.model.tta), which a state dict keeps in its spec.
    graph = settings.format != "state_dict"
    loaded = load_model(settings.ckpt_path, "cpu", test_time_augmentation=not graph)
    if graph and loaded.model_cfg.augments_at_test_time():
        log.warning("%s: the %s graph runs the image as given, without model.tta_scales=%s / tta_hflip=%s; "
                    "its scores are one view's, below the threshold calibrated on the views' merge",
                    settings.ckpt_path, settings.format, loaded.model_cfg.tta_scales, loaded.model_cfg.tta_hflip)
    set_detection_limits(loaded.model, settings.score_threshold, settings.max_detections)
    image = sample_image(settings.image, loaded.resize)
    output = settings.output_path()
    output.parent.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    if settings.format == "state_dict":
        write_state_dict(loaded, output)
    elif settings.format == "torchscript":
        write_torchscript(loaded, output)
    else:
        write_onnx(loaded, output, image)
    seconds = time.perf_counter() - start
    print(f"{settings.format}: wrote {output} ({output.stat().st_size / 1e6:.1f} MB) in {seconds:.1f} s")
    if settings.format == "state_dict":
        recipe = TORCHVISION_RECIPE.format(spec=str(spec_path(output)), weights=str(output))
        print(f"  and {spec_path(output)}; to load them with torchvision alone:\n{recipe}")

    eager, exported = eager_detector(loaded), load_exported(settings.format, output)
    parity = compare(eager(image), exported(image))
    print(f"  parity with the eager model on a {'x'.join(map(str, image.shape))} image: {parity}")
    if not parity.ok:
        raise ConfigError(f"{output}: the exported model differs from the eager model: {parity}")
    eager_ms, exported_ms = (median_ms(d, image, settings.timing_runs) for d in (eager, exported))
    print(f"  inference on CPU: eager {eager_ms:.1f} ms, {settings.format} {exported_ms:.1f} ms "
          f"(median of {settings.timing_runs})")
    return parity


@hydra.main(version_base="1.3", config_path="pkg://booksegm.conf", config_name="export")
def main(cfg: DictConfig) -> None:
    with cli_errors():
        export(read_settings(ExportConfig, cfg))


if __name__ == "__main__":
    with cli_errors():
        check_command_line("export", sys.argv)
    main()
