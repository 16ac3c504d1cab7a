"""Predict: every output format for a folder, zero-detection photos, corrupt files, videos, VIA round trip."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from support import compose_config

from booksegm.cli.export import write_state_dict
from booksegm.cli.predict import PhotoOutputs, PredictConfig, predict
from booksegm.config import ConfigError, to_dataclass
from booksegm.data.formats.coco import read_coco
from booksegm.data.formats.options import ReaderOptions
from booksegm.data.formats.via import read_via
from booksegm.data.resize import ResizeConfig
from booksegm.data.synthetic import render_scene
from booksegm.data.transforms import rasterize
from booksegm.evaluation.voc import mask_ious
from booksegm.inference import (
    Detections,
    LoadedModel,
    load_model,
    predict_images,
    predict_inputs,
    prepare_image,
    restore_detections,
    set_detection_limits,
)
from booksegm.model.build import ModelConfig, build_maskrcnn

TINY_MODEL = ModelConfig(backbone="resnet18", rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                         box_detections_per_img=10)
RESIZE = ResizeConfig(mode="square", min_dim=96, max_dim=96)
EXIF_ROTATE_270 = 6  # EXIF orientation: turn the stored pixels 270 degrees to show them upright


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """An untrained tiny model exported as a state dict (with its JSON: 96 px squares)."""
    torch.manual_seed(0)
    loaded = LoadedModel(build_maskrcnn(TINY_MODEL, num_classes=2).eval(), ["book"], TINY_MODEL, RESIZE, None, Path())
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    write_state_dict(loaded, path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """scene.jpg (stored sideways, upright by EXIF), sub/grey.png, broken.jpg, notes.txt."""
    folder = tmp_path_factory.mktemp("photos")
    scene = Image.fromarray(render_scene(np.random.default_rng(1), 128, 96)[0]).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = EXIF_ROTATE_270
    scene.save(folder / "scene.jpg", exif=exif, quality=95)
    (folder / "sub").mkdir()
    Image.new("RGB", (96, 96), (128, 128, 128)).save(folder / "sub" / "grey.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (folder / "notes.txt").write_text("not a photo")
    return folder


@pytest.fixture(scope="module")
def score_threshold(weights, photos) -> float:
    """Halfway between the best scores on the two photos: the untrained model then detects
    something on one of them and nothing on the other."""
    from booksegm.data.images import load_rgb

    loaded = load_model(weights)
    set_detection_limits(loaded.model, 0.0, None)
    best = [predict_images(loaded, [load_rgb(photos / name)], RESIZE)[0].scores.max()
            for name in ("scene.jpg", "sub/grey.png")]
    assert abs(best[0] - best[1]) > 1e-3
    return float(best[0] + best[1]) / 2


def test_predict_defaults_to_the_threshold_calibrated_in_the_model_file(weights, photos, score_threshold, tmp_path):
    """A file that carries the F1-best score of its validation is shown at that score when predict is
    given none; a file without one falls back to matterport's 0.7; an explicit value wins."""
    loaded = load_model(weights)
    assert loaded.score_threshold is None and loaded.display_threshold(None) == 0.7
    assert loaded.display_threshold(0.25) == 0.25
    loaded.score_threshold = score_threshold
    calibrated = tmp_path / "calibrated.pth"
    write_state_dict(loaded, calibrated)
    assert load_model(calibrated).score_threshold == pytest.approx(score_threshold)

    counts = {}
    for name, path, threshold in (("calibrated", calibrated, None), ("explicit", weights, score_threshold),
                                  ("fallback", weights, None)):
        counts[name] = predict(PredictConfig(ckpt_path=str(path), input=str(photos), output_dir=str(tmp_path / name),
                                             formats=["coco"], score_threshold=threshold, device="cpu")).detections
    assert counts["calibrated"] == counts["explicit"] > counts["fallback"]


def test_predict_writes_every_format_for_a_folder(weights, photos, score_threshold, tmp_path, capsys):
    out = tmp_path / "out"
    summary = predict(PredictConfig(ckpt_path=str(weights), input=str(photos), output_dir=str(out),
                                    score_threshold=score_threshold, device="cpu"))
    assert summary.images == 2 and summary.detections > 0
    assert len(summary.skipped) == 1 and "broken.jpg: cannot decode" in summary.skipped[0]
    printed = capsys.readouterr().out
    assert "predicted 2 images" in printed and "skipped 1 unreadable file(s)" in printed and "broken.jpg" in printed
    assert summary.ignored == ["notes.txt"]
    assert "ignored 1 file(s) that are neither images nor videos (.avi, " in printed and printed.endswith(
        "): notes.txt\noutputs in " + str(out) + "\n")

    names = {"scene": (128, 96), "sub/grey": (96, 96)}  # upright (width, height)
    for name, size in names.items():
        for kind in ("overlay", "splash"):
            assert Image.open(out / kind / f"{name}.png").size == size
        assert (out / "masks" / name).is_dir()
    mask_counts = {name: len(list((out / "masks" / name).glob("*.png"))) for name in names}
    assert min(mask_counts.values()) == 0 and sum(mask_counts.values()) == summary.detections
    assert not (out / "overlay" / "broken.png").exists()

    coco = COCO(str(out / "predictions_coco.json"))
    assert sorted(image["file_name"] for image in coco.dataset["images"]) == ["scene.jpg", "sub/grey.png"]
    assert len(coco.dataset["annotations"]) == summary.detections
    coco.loadRes(coco.dataset["annotations"])  # the annotations list is a valid COCO results file
    by_file = {image["file_name"]: len(coco.getAnnIds(imgIds=image["id"])) for image in coco.dataset["images"]}
    assert by_file == {"scene.jpg": mask_counts["scene"], "sub/grey.png": mask_counts["sub/grey"]}

    via = read_via(out / "predictions_via.json", ReaderOptions(image_root=photos))
    assert via.flavour == "via2_project"
    non_empty = {image["file_name"]: sum(coco.anns[i]["area"] > 0 for i in coco.getAnnIds(imgIds=image["id"]))
                 for image in coco.dataset["images"]}
    assert {r.file_name: len(r.instances) for r in via.records} == non_empty
    assert all(r.path.is_file() for r in via.records)


# Peak RSS of the child below, 2026-12-03 on a 2-core AMD EPYC: 2.4 GB (1.3 GB of it imports and
# model) with the model input capped at 1333 px; run at full size it held 6.9 GB after 99 s, when
# its next 1.5 GB allocation met the address-space limit.
PEAK_RSS_LIMIT_GB = 3.0
ADDRESS_SPACE_LIMIT = 10 << 30  # the child's: an unbounded run stops there, not at the machine's memory
MEASURE_PREDICT = """
import logging, resource, sys
from booksegm.cli.predict import PredictConfig, predict
logging.basicConfig(level=logging.INFO)
predict(PredictConfig(ckpt_path=sys.argv[1], input=sys.argv[2], output_dir=sys.argv[3], formats=["overlay", "coco"],
                      score_threshold=0.0, device="cpu"))
print("peak_rss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow  # about 40 s: a 24 MP JPEG written and read, the tiny model on 1333 x 889
def test_a_24_megapixel_photo_runs_within_the_memory_budget_and_comes_back_at_its_size(tmp_path):
    """A model that validated without resizing (resize.mode=none) sees a 6000 x 4000 photo at
    max_side, not at full size; the overlay and the masks are at the photo's size."""
    torch.manual_seed(0)
    as_given = ResizeConfig(mode="none")
    write_state_dict(LoadedModel(build_maskrcnn(TINY_MODEL, num_classes=2).eval(), ["book"], TINY_MODEL, as_given,
                                 None, Path()), tmp_path / "none.pth")
    scene = render_scene(np.random.default_rng(1), 300, 200)[0]
    Image.fromarray(cv2.resize(scene, (6000, 4000), interpolation=cv2.INTER_LINEAR)).save(tmp_path / "big.jpg")
    del scene

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))

    result = subprocess.run(
        [sys.executable, "-c", MEASURE_PREDICT, str(tmp_path / "none.pth"), str(tmp_path / "big.jpg"),
         str(tmp_path / "out")], capture_output=True, text=True, timeout=600, preexec_fn=limit_memory,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    peak_gb = int(result.stdout.split("peak_rss_kb")[1]) / 2**20
    assert peak_gb < PEAK_RSS_LIMIT_GB, f"peak RSS {peak_gb:.2f} GB"
    assert "a 6000x4000 model input runs at 1333x889 (max_side=1333" in result.stderr
    assert Image.open(tmp_path / "out" / "overlay" / "big.png").size == (6000, 4000)
    coco = COCO(str(tmp_path / "out" / "predictions_coco.json"))
    assert (coco.dataset["images"][0]["width"], coco.dataset["images"][0]["height"]) == (6000, 4000)
    annotations = coco.dataset["annotations"]
    assert annotations and all(a["segmentation"]["size"] == [4000, 6000] for a in annotations)


def test_via_and_coco_outputs_reread_with_the_same_instances(tmp_path):
    """Hand-made detections through the writers and booksegm's own readers."""
    height, width = 90, 120
    photo = tmp_path / "shelf.png"
    Image.new("RGB", (width, height), (200, 180, 150)).save(photo)
    masks = np.zeros((3, height, width), np.uint8)
    masks[0, 10:80, 5:25] = 1  # an upright spine
    cv2.fillPoly(masks[1], [cv2.boxPoints(((60, 45), (18, 60), 20)).astype(np.int32)], 1)  # a leaning one
    cv2.ellipse(masks[2], (100, 30), (12, 8), 0, 0, 360, 1, -1)
    masks[2, 75:82, 95:105] = 1  # a second, smaller part: VIA keeps the largest
    detections = Detections(boxes=np.zeros((3, 4), np.float32), scores=np.array([0.9, 0.8, 0.7], np.float32),
                            labels=np.ones(3, np.int64), masks=masks.astype(bool))
    outputs = PhotoOutputs(tmp_path / "out", tmp_path, ["coco", "via"], ["book"], polygon_tolerance=1.0)
    outputs.add(photo, np.zeros((height, width, 3), np.uint8), detections)
    outputs.close()

    def reread(annotations) -> np.ndarray:
        (record,) = annotations.records
        assert record.path == photo and all(inst.label == 1 for inst in record.instances)
        return np.stack([rasterize(list(inst.polygons), height, width) for inst in record.instances])

    largest_parts = masks.copy()
    largest_parts[2, 75:82, 95:105] = 0
    via = reread(read_via(tmp_path / "out" / "predictions_via.json", ReaderOptions(image_root=tmp_path)))
    assert np.diag(mask_ious(via.astype(bool), largest_parts.astype(bool))).min() > 0.9
    coco = reread(read_coco(tmp_path / "out" / "predictions_coco.json", ReaderOptions(image_root=tmp_path)))
    assert np.diag(mask_ious(coco.astype(bool), masks.astype(bool))).min() > 0.99  # RLE: exact


def test_detections_map_back_onto_the_photo():
    """A box and mask found in the 96 px model input land where they are in a 200 x 100 photo."""
    photo_mask = np.zeros((100, 200), np.uint8)
    photo_mask[20:60, 40:120] = 255
    model_input, placement = prepare_image(np.repeat(photo_mask[..., None], 3, axis=2), RESIZE)
    assert model_input.shape == (3, 96, 96) and placement.offset == (0.0, 24.0)
    np.testing.assert_allclose(placement.scale, [0.48, 0.48], rtol=1e-6)
    box_in_model = torch.tensor([[40 * 0.48, 20 * 0.48 + 24, 120 * 0.48, 60 * 0.48 + 24]])
    prediction = {"boxes": box_in_model, "scores": torch.tensor([0.9]), "labels": torch.tensor([1]),
                  "masks": model_input[:1][None]}  # the resized mask as a probability map
    restored = restore_detections(prediction, placement)
    np.testing.assert_allclose(restored.boxes[0], [40, 20, 120, 60], atol=1e-4)
    assert restored.masks.shape == (1, 100, 200)
    assert mask_ious(restored.masks, photo_mask[None] > 0)[0, 0] > 0.95


class EchoModel(torch.nn.Module):
    """Stands in for the model: one detection per input, its box the input's top-left quarter and
    its mask the input's first channel; records the input sizes it was given."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # a device to read
        self.sizes: list[tuple[int, int]] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.sizes += [tuple(image.shape[-2:]) for image in images]
        return [{"boxes": torch.tensor([[0.0, 0.0, image.shape[2] / 2, image.shape[1] / 2]]),
                 "scores": torch.tensor([0.9]), "labels": torch.tensor([1]), "masks": image[:1][None]}
                for image in images]


def test_an_input_over_max_side_runs_scaled_down_and_its_detections_come_back_at_its_size(caplog):
    """predict (photos) and evaluate (inputs sized as validation sized them) alike."""
    loaded = LoadedModel(EchoModel(), ["book"], TINY_MODEL, ResizeConfig(mode="none"), None, Path())
    photo = np.zeros((100, 200, 3), np.uint8)
    photo[20:60, 40:120] = 255
    with caplog.at_level("INFO", logger="booksegm.inference"):
        (detections,) = predict_images(loaded, [photo], ResizeConfig(mode="none"), max_side=80)
    assert loaded.model.sizes == [(40, 80)] and "a 200x100 model input runs at 80x40 (max_side=80" in caplog.text
    np.testing.assert_allclose(detections.boxes[0], [0, 0, 100, 50], atol=1e-4)
    assert detections.masks.shape == (1, 100, 200) and mask_ious(detections.masks, photo[None, ..., 0] > 0)[0, 0] > 0.95

    image = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
    small = torch.rand(3, 30, 40)
    capped, as_given = predict_inputs(loaded, [image, small], max_side=80)
    assert loaded.model.sizes[1:] == [(40, 80), (30, 40)]
    np.testing.assert_allclose(capped["boxes"][0], [0, 0, 100, 50], atol=1e-4)
    assert capped["masks"].shape == (1, 1, 100, 200)
    assert mask_ious(capped["masks"][:, 0].numpy(), photo[None, ..., 0] > 0)[0, 0] > 0.95
    assert torch.equal(as_given["masks"], small[:1][None])  # within the budget: the model's own output


def test_video_is_written_back_frame_by_frame(weights, tmp_path):
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (128, 96))
    for seed in range(3):
        writer.write(cv2.cvtColor(render_scene(np.random.default_rng(seed), 128, 96)[0], cv2.COLOR_RGB2BGR))
    writer.release()
    summary = predict(PredictConfig(ckpt_path=str(weights), input=str(clip), output_dir=str(tmp_path / "out"),
                                    formats=["overlay", "splash"], score_threshold=0.0, batch_size=2, device="cpu"))
    assert (summary.videos, summary.frames) == (1, 3)
    for kind in ("overlay", "splash"):
        capture = cv2.VideoCapture(str(tmp_path / "out" / kind / "clip.mp4"))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
        assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (128, 96)


def test_predict_config_composes(weights):
    cfg = compose_config(f"ckpt_path={weights}", "input=/photos", "output_dir=/tmp/x", "resize={mode:pad64,min_dim:128}",
                         config_name="predict")
    settings = to_dataclass(PredictConfig, {k: cfg[k] for k in PredictConfig.__dataclass_fields__})
    settings.validate()
    assert settings.formats == ["overlay", "splash", "masks", "coco", "via"] and settings.resize.mode == "pad64"


def test_a_missing_input_fails_in_one_line(weights, tmp_path):
    result = run_predict(tmp_path, f"ckpt_path={weights}", f"input={tmp_path / 'nowhere'}")
    assert result.returncode != 0
    assert f"booksegm: error: input={tmp_path / 'nowhere'}: no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr


def run_predict(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "booksegm.predict", *overrides], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "BOOKSEGM_ROOT": str(cwd)}, check=False,
    )


def test_a_non_empty_output_dir_is_refused_before_the_model_is_loaded(photos, tmp_path):
    out = tmp_path / "out"
    (out / "overlay").mkdir(parents=True)
    with pytest.raises(ConfigError, match=f"output_dir={out} is not empty: .*overwrite=true"):
        # no such checkpoint: the refusal comes before the model is loaded
        predict(PredictConfig(ckpt_path=str(tmp_path / "none.pth"), input=str(photos), output_dir=str(out)))
    assert (out / "overlay").is_dir()
    out_file = tmp_path / "a_file"
    out_file.write_text("")
    with pytest.raises(ConfigError, match="a file, not a folder"):
        predict(PredictConfig(ckpt_path=str(tmp_path / "none.pth"), input=str(photos), output_dir=str(out_file)))


def test_overwrite_replaces_every_earlier_output_and_keeps_other_files(weights, photos, tmp_path):
    """The second run asks for the COCO file of one photo: the first run's overlays and masks of
    both photos go, so the folder holds this run's outputs only; a file of the user's stays."""
    out = tmp_path / "out"
    predict(PredictConfig(ckpt_path=str(weights), input=str(photos), output_dir=str(out), score_threshold=0.0,
                          device="cpu"))
    (out / "notes.txt").write_text("mine")
    predict(PredictConfig(ckpt_path=str(weights), input=str(photos / "sub"), output_dir=str(out), formats=["coco"],
                          score_threshold=0.0, device="cpu", overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "predictions_coco.json"]
    coco = COCO(str(out / "predictions_coco.json"))
    assert [image["file_name"] for image in coco.dataset["images"]] == ["grey.png"]


def test_the_command_writes_its_run_folder_and_refuses_to_write_into_it_again(weights, photos, tmp_path):
    """The default output_dir is the run folder Hydra has just made (with its .hydra and log):
    new, so not refused; given again as output_dir, it is refused in one line."""
    photo = f"input={photos / 'sub' / 'grey.png'}"
    first = run_predict(tmp_path, f"ckpt_path={weights}", photo, "formats=[coco]", "device=cpu")
    assert first.returncode == 0, first.stderr[-2000:]
    (run,) = (tmp_path / "outputs" / "predict" / "runs").iterdir()
    assert (run / ".hydra").is_dir() and (run / "predictions_coco.json").is_file()

    again = run_predict(tmp_path, f"ckpt_path={weights}", photo, "formats=[coco]", "device=cpu", f"output_dir={run}")
    assert again.returncode != 0
    assert f"booksegm: error: output_dir={run} is not empty" in again.stderr and "overwrite=true" in again.stderr
    assert "Traceback" not in again.stderr


def test_coco_predictions_keep_each_mask_box_and_score_as_found(tmp_path):
    """predictions_coco.json holds the exact masks (a hole, two parts, an empty one), the detector's
    boxes and the scores: outlines would fill the hole and bound a different box."""
    masks = np.zeros((3, 40, 60), bool)
    masks[0, 5:35, 5:30] = True
    masks[0, 15:25, 10:20] = False  # a hole
    masks[1, 5:10, 40:50] = masks[1, 30:35, 40:50] = True  # two parts
    boxes = np.array([[4.9, 5.1, 30.2, 35.0], [39.5, 4.5, 50.25, 35.125], [1, 2, 3, 4]], np.float32)
    scores = np.array([0.9, 0.8, 0.05], np.float32)
    detections = Detections(boxes=boxes, scores=scores, labels=np.ones(3, np.int64), masks=masks)
    outputs = PhotoOutputs(tmp_path / "out", tmp_path, ["coco"], ["book"], polygon_tolerance=1.0)
    outputs.add(tmp_path / "shelf.png", np.zeros((40, 60, 3), np.uint8), detections)
    outputs.close()
    coco = COCO(str(tmp_path / "out" / "predictions_coco.json"))
    assert coco.dataset["images"] == [{"id": 1, "file_name": "shelf.png", "width": 60, "height": 40}]
    assert len(coco.dataset["annotations"]) == 3
    for ann, mask, (x0, y0, x1, y1), score in zip(coco.dataset["annotations"], masks, boxes, scores):
        np.testing.assert_array_equal(coco.annToMask(ann), mask)
        assert ann["area"] == mask.sum() and ann["score"] == pytest.approx(score, abs=1e-4)
        np.testing.assert_allclose(ann["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=0.006)
