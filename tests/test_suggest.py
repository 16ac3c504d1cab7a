"""Which photos to label next: the uncertainty criteria on hand-made predictions, and ``booksegm
data suggest`` end to end on rendered photos with an untrained tiny model."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from booksegm.cli.data import main
from booksegm.cli.export import write_state_dict
from booksegm.cli.predict import PredictConfig, predict
from booksegm.data.formats.options import ReaderOptions
from booksegm.data.formats.via import read_via
from booksegm.data.resize import ResizeConfig
from booksegm.data.synthetic import render_scene
from booksegm.evaluation.uncertainty import (
    CriterionWeights,
    PhotoUncertainty,
    diverse_pick,
    near_threshold,
    photo_uncertainty,
    poor_masks,
    rank,
    view_disagreement,
)
from booksegm.inference import LoadedModel, load_model, pooled_features, predict_views, prepare_image
from booksegm.model.build import ModelConfig, build_maskrcnn
from booksegm.model.tta import TTAMaskRCNN

RESIZE = ResizeConfig(mode="square", min_dim=96, max_dim=96)
# an untrained model scores every detection 0.50 to 0.57 on the photos below: some are shown at this, some not
THRESHOLD = 0.53


def box_mask(x0: int, x1: int, y0: int = 2, y1: int = 18, size: int = 20) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_scores_near_the_threshold_are_less_certain_than_confident_ones():
    t = 0.6
    assert near_threshold([t, t], t) == pytest.approx(1.0)
    assert near_threshold([1.0, 0.0], t) == pytest.approx(0.0)
    unsure, confident = near_threshold([0.55, 0.65], t), near_threshold([0.97, 0.06], t)
    assert unsure > 0.8 and confident < 0.15
    # linear on either side, each side scaled to its own span: 0.3 lies halfway to 0, 0.8 halfway to 1
    assert near_threshold([0.3], t) == pytest.approx(0.5) and near_threshold([0.8], t) == pytest.approx(0.5)
    assert near_threshold([], t) == 0.0


def test_views_that_disagree_rank_higher_than_views_that_agree():
    books = np.stack([box_mask(2, 6), box_mask(8, 12), box_mask(14, 18)])
    assert view_disagreement([books, books.copy(), books[::-1]]) == pytest.approx(0.0)  # order does not matter
    shifted = np.stack([box_mask(3, 7), box_mask(8, 12), box_mask(14, 18)])  # one book outlined 1 px off
    one_missing = books[:2]
    merged_pair = np.stack([box_mask(2, 12), box_mask(14, 18)])  # two books seen as one
    disagreements = [view_disagreement([books, other]) for other in (books, shifted, one_missing, merged_pair)]
    assert disagreements[0] == 0.0 and all(a < b for a, b in itertools.pairwise(disagreements))
    # both directions count: the book the second view misses is a best IoU of 0 of five masks
    assert disagreements[2] == pytest.approx(1 / 5)
    nothing = np.zeros((0, 20, 20), dtype=bool)
    assert view_disagreement([nothing, nothing]) == 0.0 and view_disagreement([books, nothing]) == 1.0
    # several views: the mean of each against the first
    assert view_disagreement([books, books, one_missing]) == pytest.approx(disagreements[2] / 2)
    with pytest.raises(ValueError, match="two views"):
        view_disagreement([books])


def test_masks_of_doubtful_pixels_rank_higher_than_crisp_ones():
    crisp = np.where(box_mask(2, 6), 0.99, 0.01)[None]
    doubtful = np.where(box_mask(2, 6), 0.6, 0.4)[None]
    assert poor_masks(crisp) == pytest.approx(0.02) and poor_masks(doubtful) == pytest.approx(0.8)
    assert poor_masks(np.full((1, 1, 20, 20), 0.3)) == 1.0  # no pixel kept: the worst mask
    assert poor_masks(np.zeros((0, 20, 20))) == 0.0


def test_summing_ranks_photos_with_more_doubtful_books_first_where_the_mean_does_not():
    t = 0.5
    crowded, lone = [0.5] * 6 + [0.95] * 6, [0.5]  # six borderline books among twelve, against one of one
    assert near_threshold(crowded, t) == pytest.approx((6 + 6 * 0.1) / 12) and near_threshold(lone, t) == 1.0
    assert near_threshold(crowded, t, "sum") == pytest.approx(6.6) and near_threshold(lone, t, "sum") == 1.0
    books = np.stack([box_mask(2, 6), box_mask(8, 12), box_mask(14, 18)])
    assert view_disagreement([books, books[:1]], "sum") == pytest.approx(2.0)  # two books the second view misses
    assert view_disagreement([books, books[:1]], "mean") == pytest.approx(2 / 4)
    doubtful = np.where(box_mask(2, 6), 0.6, 0.4)[None]
    assert poor_masks(np.concatenate([doubtful] * 3), "sum") == pytest.approx(3 * 0.8)
    assert near_threshold([], t, "sum") == 0.0 and poor_masks(np.zeros((0, 20, 20)), "sum") == 0.0
    with pytest.raises(ValueError, match="mean or sum"):
        near_threshold(lone, t, "max")


def test_photo_uncertainty_reads_shown_detections_at_the_threshold_and_ranks_photos():
    t = 0.5
    masks = np.stack([np.where(box_mask(2, 6), 0.9, 0.0), np.where(box_mask(8, 12), 0.7, 0.0)])[:, None]
    scores = np.array([0.95, 0.2])  # the second book is below the threshold: not shown
    agreeing = photo_uncertainty(scores, masks, [(scores, masks), (scores, masks)], t)
    assert agreeing == PhotoUncertainty(near_threshold=pytest.approx((0.1 + 0.4) / 2), view_disagreement=0.0,
                                        poor_masks=pytest.approx(0.2))
    # the mirrored view shows the second book as well: the views disagree on it
    mirrored = np.array([0.95, 0.6])
    disagreeing = photo_uncertainty(scores, masks, [(scores, masks), (mirrored, masks)], t)
    assert disagreeing.view_disagreement == pytest.approx(1 - 2 / 3)
    weights = CriterionWeights(1.0, 1.0, 1.0)
    assert disagreeing.total(weights) > agreeing.total(weights)
    assert agreeing.total(CriterionWeights(1.0, 0.0, 0.0)) == pytest.approx(agreeing.near_threshold)
    assert agreeing.total(CriterionWeights(0.0, 2.0, 2.0)) == pytest.approx(0.1)
    assert rank([0.2, 0.7, 0.2, 0.9]) == [3, 1, 0, 2]


def tiny_model(path: Path, views: str, resize: ResizeConfig | None = RESIZE) -> Path:
    """An untrained tiny model exported as a state dict: ``one`` view, or ``mirrored`` (two views merged)."""
    cfg = ModelConfig(backbone="resnet18", rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                      box_detections_per_img=10, tta_hflip=views == "mirrored")
    torch.manual_seed(0)
    write_state_dict(LoadedModel(build_maskrcnn(cfg, num_classes=2).eval(), ["book"], cfg, resize, None, Path()), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The two tiny models, and one whose file does not say how photos are resized (``unsized``)."""
    folder = tmp_path_factory.mktemp("models")
    return {"one": tiny_model(folder / "one.pth", "one"), "mirrored": tiny_model(folder / "mirrored.pth", "mirrored"),
            "unsized": tiny_model(folder / "unsized.pth", "one", resize=None)}


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory) -> Path:
    """Three rendered photos (one in a sub-folder), a broken one and a note."""
    folder = tmp_path_factory.mktemp("unlabelled")
    (folder / "sub").mkdir()
    for seed, name in enumerate(("a.jpg", "b.png", "sub/c.jpg")):
        Image.fromarray(render_scene(np.random.default_rng(seed), 128, 96)[0]).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_a_diverse_pick_takes_a_photo_of_each_kind_where_the_most_unsure_are_alike():
    rng = np.random.default_rng(0)
    kinds = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    features = np.concatenate([rng.normal(centre, 0.1, (10, 2)) for centre in kinds])
    uncertainties = list(rng.uniform(0.6, 0.9, 10)) + list(rng.uniform(0.1, 0.4, 20))  # the first kind: hard
    assert all(i < 10 for i in rank(uncertainties)[:3])  # the three most unsure are all of the first kind
    picked = diverse_pick(features, uncertainties, 3)
    assert sorted(i // 10 for i in picked) == [0, 1, 2]
    assert [uncertainties[i] for i in picked] == sorted((uncertainties[i] for i in picked), reverse=True)
    # each is its kind's most typical photo: the one nearest its kind's (weighted) centre
    for i in picked:
        kind = slice(i // 10 * 10, i // 10 * 10 + 10)
        centre = np.average(features[kind], axis=0, weights=uncertainties[kind])
        assert i == i // 10 * 10 + np.linalg.norm(features[kind] - centre, axis=1).argmin()
    assert diverse_pick(features, uncertainties, 3) == picked  # seeded: the same pick again
    assert diverse_pick(features, uncertainties, 40) == rank(uncertainties)  # k beyond the photos: all, ranked
    with pytest.raises(ValueError, match="30 feature rows for 29 uncertainties"):
        diverse_pick(features, uncertainties[:-1], 3)


def test_unsure_photos_draw_the_diverse_pick_to_them():
    features = np.arange(100.0)[:, None]  # photos along one line, the model unsure of the last fifth
    uncertainties = [1.0 if x >= 80 else 0.01 for x in range(100)]
    evenly = diverse_pick(features, [1.0] * 100, 2)
    drawn = diverse_pick(features, uncertainties, 2)
    assert max(drawn) >= 80 > max(evenly) and min(drawn) > min(evenly)


@pytest.mark.parametrize("views", ["one", "mirrored"])
def test_predict_views_gives_what_the_backbone_sees_in_the_photo_as_given_as_one_unit_vector(models, unlabelled,
                                                                                               views):
    loaded = load_model(models[views])
    photos = [np.asarray(Image.open(unlabelled / name)) for name in ("a.jpg", "b.png")]
    a, b = (predict_views(loaded, photo, RESIZE, shown_from=THRESHOLD).features for photo in photos)
    with torch.no_grad():  # the backbone run on the photo as given, alone
        batch, _ = loaded.model.transform([prepare_image(photos[0], RESIZE)[0]])
        levels = loaded.model.backbone(batch.tensors)
    assert a.shape == (len(levels) * loaded.model.backbone.out_channels,)
    assert np.allclose(a, pooled_features(levels), atol=1e-6)  # not a mirrored or enlarged view's
    assert np.linalg.norm(a) == pytest.approx(1.0) and not np.allclose(a, b)


@pytest.mark.parametrize("views", ["one", "mirrored"])
def test_predict_views_gives_the_models_own_detections_and_each_view_apart(models, unlabelled, views):
    loaded = load_model(models[views])
    image = np.asarray(Image.open(unlabelled / "a.jpg"))
    seen = predict_views(loaded, image, RESIZE, shown_from=THRESHOLD)
    assert len(seen.views) == 2  # a model of one view is compared with its mirror image
    assert isinstance(loaded.model, TTAMaskRCNN) == (views == "mirrored")
    with torch.no_grad():
        (own,) = loaded.model([prepare_image(image, RESIZE)[0]])
    assert torch.equal(seen.merged["scores"], own["scores"])  # what predict would get, down to the floor
    assert 0 < len(seen.detections) < len(own["scores"])
    assert np.array_equal(seen.detections.scores, own["scores"][own["scores"] >= THRESHOLD].numpy())
    assert not torch.equal(seen.views[0]["masks"], seen.views[1]["masks"])


@pytest.mark.parametrize("views", ["one", "mirrored"])
def test_suggest_writes_the_most_unsure_photos_with_the_books_predict_draws(models, unlabelled, views, tmp_path,
                                                                           capsys):
    out = tmp_path / "project.json"
    assert main(["suggest", str(unlabelled), "--ckpt", str(models[views]), "-k", "2", "--out", str(out),
                 "--score-threshold", str(THRESHOLD), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    rows = re.findall(r"^ +(\d) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +(\d+)  (\S+)$", printed, re.M)
    assert [int(r[0]) for r in rows] == [1, 2], printed
    totals = [float(r[1]) for r in rows]
    assert totals == sorted(totals, reverse=True)
    assert all(total == pytest.approx(np.mean([float(v) for v in r[2:5]]), abs=2e-3) for total, r in zip(totals, rows))
    assert "3 photos ranked" in printed and "skipped 1 unreadable file(s)" in printed and "broken.jpg" in printed

    project = read_via(out, ReaderOptions(image_root=unlabelled))
    assert project.flavour == "via2_project"
    assert [(r.file_name, len(r.instances)) for r in project.records] == [(r[6], int(r[5])) for r in rows]
    assert all(r.path.is_file() for r in project.records)
    assert sum(len(r.instances) for r in project.records) > 0

    # the books drawn are predict's at the same threshold, outline for outline
    predict(PredictConfig(ckpt_path=str(models[views]), input=str(unlabelled), output_dir=str(tmp_path / "predict"),
                          formats=["via"], score_threshold=THRESHOLD, device="cpu"))
    predicted = read_via(tmp_path / "predict" / "predictions_via.json", ReaderOptions(image_root=unlabelled))
    outlines = {r.file_name: [i.polygons[0].tolist() for i in r.instances] for r in predicted.records}
    assert all([i.polygons[0].tolist() for i in r.instances] == outlines[r.file_name] for r in project.records)


def test_suggest_ranks_by_the_criteria_weighted_as_asked(models, unlabelled, tmp_path, capsys):
    ranked = {}
    for criterion, weights in (("near", ["1", "0", "0"]), ("views", ["0", "1", "0"])):
        assert main(["suggest", str(unlabelled), "--ckpt", str(models["one"]), "-k", "5", "--out",
                     str(tmp_path / f"{criterion}.json"), "--score-threshold", str(THRESHOLD), "--device", "cpu",
                     "--weight-near", weights[0], "--weight-views", weights[1], "--weight-masks", weights[2]]) == 0
        rows = re.findall(r"^ +\d +([\d.]+) +([\d.]+) +([\d.]+) .*  (\S+)$", capsys.readouterr().out, re.M)
        assert len(rows) == 3  # -k beyond the photos: all of them
        column = 1 if criterion == "near" else 2
        assert all(float(r[0]) == float(r[column]) for r in rows)
        ranked[criterion] = [r[3] for r in rows]
    assert ranked["near"] != ranked["views"]  # each criterion orders these photos its own way
    # summed, each criterion counts doubtful books: the near column is the sum of closeness over the detections
    assert main(["suggest", str(unlabelled), "--ckpt", str(models["one"]), "-k", "5", "--out",
                 str(tmp_path / "sum.json"), "--score-threshold", str(THRESHOLD), "--device", "cpu",
                 "--aggregate", "sum"]) == 0
    rows = re.findall(r"^ +\d +[\d.]+ +([\d.]+) +[\d.]+ +[\d.]+ +\d+  (\S+)$", capsys.readouterr().out, re.M)
    assert len(rows) == 3 and all(float(near) > 1.0 for near, _ in rows)  # several borderline books a photo


def test_suggest_picks_diverse_photos_by_default_or_the_most_unsure_on_request(models, unlabelled, tmp_path, capsys):
    common = ["--ckpt", str(models["one"]), "--score-threshold", str(THRESHOLD), "--device", "cpu"]
    assert main(["suggest", str(unlabelled), "-k", "5", "--out", str(tmp_path / "all.json"), *common]) == 0
    totals = {name: float(total) for total, name in
              re.findall(r"^ +\d +([\d.]+) +[\d.]+ +[\d.]+ +[\d.]+ +\d+  (\S+)$", capsys.readouterr().out, re.M)}
    names = sorted(totals)  # the photos in the order suggest reads them: a.jpg, b.png, sub/c.jpg
    loaded = load_model(models["one"])
    features = np.stack([predict_views(loaded, np.asarray(Image.open(unlabelled / n).convert("RGB")), RESIZE,
                                       shown_from=THRESHOLD).features for n in names])
    expected = {"uncertain": sorted(names, key=lambda n: -totals[n])[:2],
                "diverse": [names[i] for i in diverse_pick(features, [totals[n] for n in names], 2)],
                "typical": [names[i] for i in diverse_pick(features, [1.0] * 3, 2)]}
    assert expected["uncertain"] != expected["diverse"]  # else this test could not tell the picks apart
    for pick, extra in (("uncertain", ["--pick", "uncertain"]), ("diverse", []), ("typical", ["--pick", "typical"])):
        out = tmp_path / f"{pick}.json"
        assert main(["suggest", str(unlabelled), "-k", "2", "--out", str(out), *common, *extra]) == 0
        printed = capsys.readouterr().out
        assert {"uncertain": "the 2 most unsure,", "diverse": "2 of different kinds, leaning to the unsure,",
                "typical": "2 of different kinds,"}[pick] in printed
        picked = [r.file_name for r in read_via(out, ReaderOptions(image_root=unlabelled)).records]
        assert picked == expected[pick], pick


@pytest.mark.parametrize(("arguments", "message"), [
    (["-k", "0"], "-k must be >= 1"),
    (["--score-threshold", "1.5"], "--score-threshold must lie in [0, 1]"),
    (["--weight-views", "-1"], "must be >= 0 and not all 0"),
    (["--weight-near", "0", "--weight-views", "0", "--weight-masks", "0"], "must be >= 0 and not all 0"),
    (["--out", "{tmp}"], "a folder; give the project's file name"),
    (["--out", "{tmp}/taken.json"], "exists (it may hold corrections): give a new name, or --overwrite"),
    (["--dir", "{tmp}/missing"], "missing: no such folder"),
    (["--dir", "{tmp}/empty"], "empty: no photos (.bmp, .jpeg"),
    (["--ckpt", "{tmp}/missing.pth"], "missing.pth"),
    (["--ckpt", "unsized"], "unsized.pth: the checkpoint does not say how images were resized"),
])
def test_suggest_refuses_bad_input_in_one_line(models, unlabelled, tmp_path, capsys, arguments, message):
    (tmp_path / "taken.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    options = {"--dir": str(unlabelled), "--ckpt": str(models["one"]), "--out": str(tmp_path / "new.json")}
    for flag, value in zip(arguments[::2], arguments[1::2]):
        options[flag] = str(models[value]) if value in models else value.format(tmp=tmp_path)
    folder = options.pop("--dir")
    with pytest.raises(SystemExit) as exit_info:
        main(["suggest", folder, "--device", "cpu", *[x for pair in options.items() for x in pair]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("booksegm: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "new.json").exists() and (tmp_path / "taken.json").read_text() == "{}"
