"""Whole-head path: template, registration, boxes, mirroring, mapping back, sides, QC, robustness, speed.

The Dice / moved-copy tests run with every ``crop_predictor``:

* ``oracle`` resamples the ground truth into each crop, so it checks registration, boxes, mirroring,
  mapping back and label sides end to end (its Dice is 1 minus two resamplings);
* ``model`` is the shipped bundle's crop model (``hipposeg.segmenter.load_crop_predictor``); the fixture
  first checks that the shipped weights segment a Task04 crop at all, so a broken model fails loudly.

Registrations are cached per scan, so each scan is registered once (about 1-2 s on 2 cores).
"""

from __future__ import annotations

import numpy as np
import pytest

from hipposeg.data.readers import Image, read_image
from hipposeg.fullhead.evaluation import (
    dice_per_side,
    left_is_left,
    move_and_regrid,
    oracle_predictor,
    overlap_per_side,
    template_predictor,
    thicken_slices,
)
from hipposeg.fullhead.pipeline import (
    LABEL_NAMES,
    extract_boxes,
    is_full_head,
    segment_full_head,
    write_result,
)
from hipposeg.fullhead.registration import register_to_template
from hipposeg.qc_flags import QC_FLAGS
from hipposeg.volumes import reference_volume_ranges, volume_row

SUBJECTS = ("colin27", "candi030", "bert")
# the shipped default, whole-head Dice per side (bench/results/fullhead.json, 0.6.x models): lowest 0.744 on the
# originals, 0.735 on moved copies, 0.729 on 2 mm thick copies; a floor a little below the lowest
MODEL_FLOOR = 0.70
MODEL_MOVED_DIFF = 0.03  # moved copies differ from the original by at most 0.021 (bench); the bound
_REGISTRATIONS: dict = {}
_SCANS: dict = {}


@pytest.fixture(scope="session")
def fullhead_root(data_root):
    root = data_root / "fullhead"
    assert all((root / s / "t1.nii.gz").is_file() for s in SUBJECTS), f"full-head test data not found in {root}"
    return root


def scan(fullhead_root, subject: str, variant: str = "original") -> tuple[Image, Image]:
    """(image, truth) of a subject, or of its seeded moved + regridded copy."""
    key = (subject, variant)
    if key not in _SCANS:
        if variant == "original":
            folder = fullhead_root / subject
            _SCANS[key] = (read_image(folder / "t1.nii.gz"), read_image(folder / "hippocampus_lr.nii.gz"))
        else:
            image, truth = scan(fullhead_root, subject)
            rng = np.random.default_rng([2024, SUBJECTS.index(subject)])
            moved, moved_truth, info = move_and_regrid(image, truth, rng)
            moved.meta["move"] = info
            _SCANS[key] = (moved, moved_truth)
    return _SCANS[key]


def registration(fullhead_root, subject: str, variant: str = "original"):
    key = (subject, variant)
    if key not in _REGISTRATIONS:
        _REGISTRATIONS[key] = register_to_template(scan(fullhead_root, subject, variant)[0])
    return _REGISTRATIONS[key]


def _model_predictor(msd_root, model: str = "default"):
    from hipposeg.segmenter import load_crop_predictor

    predictor = load_crop_predictor(model=model)  # a shipped model by name, as --model takes it
    case = "hippocampus_001"
    crop = read_image(msd_root / "imagesTr" / f"{case}.nii.gz")
    truth = read_image(msd_root / "labelsTr" / f"{case}.nii.gz").array > 0
    pred = np.argmax(predictor(crop), axis=0) > 0
    dice = 2 * (pred & truth).sum() / max(1, pred.sum() + truth.sum())
    assert dice >= 0.8, f"the shipped crop model segments the Task04 training crop {case} with Dice {dice:.2f}"
    return predictor


@pytest.fixture(scope="module", params=["oracle", "model"])
def crop_predictor(request, msd):
    """A factory: ``crop_predictor(truth)`` -> a crop predictor (the model ignores ``truth``)."""
    if request.param == "oracle":
        return oracle_predictor
    model = _model_predictor(msd)
    return lambda truth: model


# --- template -------------------------------------------------------------------------------------


def test_template_is_nilearns_without_download():
    from nilearn import datasets

    from hipposeg.fullhead.template import load_template, template_path

    path = template_path()
    assert path.is_file() and "nilearn" in path.parts  # inside the installed package: nothing to download
    tpl = load_template()
    ref = datasets.load_mni152_template(resolution=1)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    assert tpl.array.shape == ref.shape == (197, 233, 189)
    np.testing.assert_allclose(tpl.array, np.asarray(ref.dataobj), atol=1e-6)
    np.testing.assert_array_equal(tpl.brain_mask, np.asarray(mask.dataobj) > 0)
    np.testing.assert_allclose(tpl.affine, ref.affine)


def test_hippocampus_box_and_region_constants():
    from hipposeg.fullhead.template import BOX_CENTRE_MM, BOX_SIZE_MM, in_region, region_axes

    for side, sign in (("left", -1), ("right", 1)):
        centre = np.asarray(BOX_CENTRE_MM[side])
        assert np.sign(centre[0]) == sign
        # the box is a Task04-sized crop (35x50x36 on average) with room for registration error
        assert 30 <= BOX_SIZE_MM[0] <= 45 and 45 <= BOX_SIZE_MM[1] <= 60 and 30 <= BOX_SIZE_MM[2] <= 50
        c, _, semi = region_axes(side)
        assert in_region(c[None], side)[0]
        assert not in_region((c + [0, 0, semi.max() + 1])[None], side)[0]
        # the QC region lies inside the box
        lo, hi = centre - np.asarray(BOX_SIZE_MM) / 2, centre + np.asarray(BOX_SIZE_MM) / 2
        grid = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
        inside = grid[in_region(grid, side)]
        assert 3000 < len(inside) < 5000  # mm^3, a typical hippocampus
        assert (inside.min(axis=0) > lo).all() and (inside.max(axis=0) < hi).all()


def test_crop_intensities_are_sampled_with_interpolating_cubic_splines():
    from hipposeg.fullhead.pipeline import _sample_cubic

    rng = np.random.default_rng(0)
    scan_array = rng.normal(size=(40, 50, 45)).astype(np.float32)
    shift = np.eye(4)
    shift[:3, 3] = (12, 7, 9)  # crop voxel (i, j, k) -> scan index (i + 12, j + 7, k + 9)
    # on the grid itself the spline interpolates: exact values, not a smoothed copy
    np.testing.assert_allclose(_sample_cubic(scan_array, shift, (20, 30, 25)),
                               scan_array[12:32, 7:37, 9:34], atol=1e-4)
    # a quadratic ramp is reproduced between voxels too (trilinear would be off by up to 1/8 voxel^2)
    ii, jj, kk = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in (40, 50, 45)], indexing="ij")
    ramp = 0.05 * (ii - 20) ** 2 + 0.3 * jj - 0.2 * kk
    half = shift.copy()
    half[:3, 3] += 0.5
    want = 0.05 * (np.arange(20)[:, None, None] + 12.5 - 20) ** 2 + 0.3 * (np.arange(30)[None, :, None] + 7.5) \
        - 0.2 * (np.arange(25)[None, None, :] + 9.5)
    np.testing.assert_allclose(_sample_cubic(ramp, half, (20, 30, 25)), want, atol=2e-3)
    # outside the scan: 0, like the trilinear sampler
    far = np.eye(4)
    far[:3, 3] = (-100, 0, 0)
    assert not _sample_cubic(scan_array, far, (10, 10, 10)).any()
    part = np.eye(4)
    part[:3, 3] = (-5, 0, 0)  # the first 5 crop planes lie before the scan
    out = _sample_cubic(scan_array, part, (10, 10, 10))
    assert not out[:5].any() and np.allclose(out[5:], scan_array[:5, :10, :10], atol=1e-4)


@pytest.mark.parametrize("thickness", [2.0, 2.5])
def test_thick_slice_copy_keeps_the_anatomy_in_place(thickness):
    # an L-I-A grid (like bert and CANDI): voxel axis 2 runs anterior, so that axis gets the thick slices
    affine = np.array([[-1.0, 0, 0, 40], [0, 0, 1, -50], [0, -1, 0, 40], [0, 0, 0, 1]])
    array = np.zeros((80, 80, 100), dtype=np.float32)
    array[30:50, 30:50, 40:70] = 100.0  # a block 30 mm long from front to back
    labels = (array > 0).astype(np.uint8)
    labels[30:50, 30:50, 40:55] = 2  # its front half another label
    thick, thick_labels, info = thicken_slices(Image(array, affine), Image(labels, affine), thickness)
    assert info["thick_axis"] == 2 and thick.spacing == pytest.approx((1.0, 1.0, thickness))
    assert thick.shape == (80, 80, round(100 / thickness)) and thick_labels.shape == thick.shape

    def world_centre(a, aff):
        return aff[:3, :3] @ np.argwhere(a).mean(axis=0) + aff[:3, 3]

    # each label stays where it was (no half-voxel shift) and keeps its size
    for value in (1, 2):
        np.testing.assert_allclose(world_centre(thick_labels.array == value, thick.affine),
                                   world_centre(labels == value, affine), atol=0.5)
        assert abs((thick_labels.array == value).sum() * thickness - (labels == value).sum()) <= 0.15 * 15 * 400
    # the image is smoothed across slices only, and lies where the labels are
    centre = int(round(55 / thickness))
    assert thick.array[40, 40, centre] == pytest.approx(100.0, abs=1.0)
    assert thick.array[29, 40, centre] == pytest.approx(0.0, abs=1e-3)
    np.testing.assert_allclose(world_centre(thick.array > 50, thick.affine), world_centre(array > 50, affine), atol=0.5)
    if thickness == 2.0:  # training's box profile: each thick voxel the mean of the two 1 mm voxels of its slice
        np.testing.assert_allclose(thick.array, array.reshape(80, 80, 50, 2).mean(axis=3), atol=1e-4)
    with pytest.raises(ValueError, match="positive"):
        thicken_slices(Image(array, affine), Image(labels, affine), 0.0)


def test_overlap_per_side_tells_under_from_over_segmentation():
    truth = np.zeros((10, 10, 10), dtype=np.uint8)
    truth[0:4, :5] = 1  # left: 200 voxels
    truth[6:10, :5] = 2  # right: 200 voxels
    labels = np.zeros_like(truth)
    labels[0:2, :5] = 1  # left predicted inside the truth, half of it: under-segmented
    labels[6:10, :5] = 3  # right anterior covers the true right exactly ...
    labels[6:10, 5:] = 4  # ... and the posterior label spills out as much again: over-segmented
    out = overlap_per_side(labels, truth)
    assert out["left"] == pytest.approx({"precision": 1.0, "recall": 0.5})
    assert out["right"] == pytest.approx({"precision": 0.5, "recall": 1.0})
    d = dice_per_side(labels, truth)
    assert d["left"] == pytest.approx(2 * 100 / 300) and d["right"] == pytest.approx(2 * 200 / 600)


# --- field-of-view rule ---------------------------------------------------------------------------


def test_is_full_head(fullhead_root, msd):
    for subject in SUBJECTS:
        assert is_full_head(scan(fullhead_root, subject)[0])
    for case in ("hippocampus_001", "hippocampus_003"):
        assert not is_full_head(read_image(msd / "imagesTr" / f"{case}.nii.gz"))
    assert not is_full_head(Image(np.zeros((60, 60, 40)), np.diag([1.0, 1.0, 1.0, 1.0])))
    assert is_full_head(Image(np.zeros((128, 128, 30)), np.diag([1.0, 1.0, 4.0, 1.0])))  # thick slices


def test_crop_input_takes_crop_path(msd):
    """``hipposeg.segment.segment_case`` in auto mode sends a Task04 crop to the crop model, not here."""
    import hipposeg.segment as segment
    image = read_image(msd / "imagesTr" / "hippocampus_001.nii.gz")
    calls = []

    class FakeSegmenter:
        def segment(self, img):
            calls.append("crop")
            return type("S", (), {"labels": np.zeros(img.shape, np.uint8)})()

        def predict_probabilities(self, img):  # the whole-head path would call this
            calls.append("full-head")
            raise AssertionError("a crop must not take the whole-head path")

    labels, names, qc = segment.segment_case(image, FakeSegmenter(), mode="auto")
    assert calls == ["crop"] and labels.shape == image.shape


# --- registration, boxes, mirroring ---------------------------------------------------------------


@pytest.mark.parametrize("subject", SUBJECTS)
def test_registration_puts_box_on_hippocampi(fullhead_root, subject):
    image, truth = scan(fullhead_root, subject)
    reg = registration(fullhead_root, subject)
    assert reg.metric < -0.15, reg.metric
    assert reg.seconds < 15.0  # loose for a loaded CI machine; bench/fullhead.py measures it
    crops = extract_boxes(image, reg)
    assert set(crops) == {"left", "right"}
    for value, side in ((1, "left"), (2, "right")):
        crop = crops[side]
        assert np.allclose(crop.affine, np.eye(4))  # Task04 frame: RAS, 1 mm; the scan geometry is in meta
        p = oracle_predictor(truth)(crop)
        inside = (p[1] + p[2]).sum()
        # the box holds (nearly) all of this hippocampus and none of the other
        assert inside >= 0.97 * (truth.array == value).sum() * truth.voxel_volume_mm3
        ijk = np.argwhere(truth.array == 3 - value)
        world = ijk @ truth.affine[:3, :3].T + truth.affine[:3, 3]
        local = (np.linalg.inv(crop.meta["scan_affine"]) @ np.c_[world, np.ones(len(world))].T)[:3].T
        assert not np.all((local > -0.5) & (local < np.asarray(crop.shape) - 0.5), axis=1).any()


def test_right_box_is_mirrored(fullhead_root):
    """Crop axis 0 points to the patient's right (+x) in the left box and to the left (-x) in the right one."""
    image, _ = scan(fullhead_root, "colin27")
    crops = extract_boxes(image, registration(fullhead_root, "colin27"))
    assert crops["left"].meta["scan_affine"][0, 0] > 0.9 and not crops["left"].meta["mirrored"]
    assert crops["right"].meta["scan_affine"][0, 0] < -0.9 and crops["right"].meta["mirrored"]
    for crop in crops.values():  # axis 1 anterior, axis 2 superior, like Task04 crops
        assert crop.meta["scan_affine"][1, 1] > 0.9 and crop.meta["scan_affine"][2, 2] > 0.9
    # mirrored, the two hippocampi have the same handedness: posterior third lateral (lower axis 0) in both
    _, truth = scan(fullhead_root, "colin27")
    for side in ("left", "right"):
        p = oracle_predictor(truth)(crops[side])
        fg = np.argwhere(p[1] + p[2] > 0.5).astype(float)
        lo, hi = np.percentile(fg[:, 1], [100 / 3, 200 / 3])
        shift = fg[fg[:, 1] <= lo].mean(axis=0) - fg[fg[:, 1] >= hi].mean(axis=0)
        assert shift[1] < -10 and shift[2] > 5  # posterior = lower axis 1 and higher axis 2, as in Task04


# --- Dice, sides, moved copies --------------------------------------------------------------------


def _segment(fullhead_root, subject, variant, make_predictor):
    image, truth = scan(fullhead_root, subject, variant)
    result = segment_full_head(image, make_predictor(truth), registration=registration(fullhead_root, subject, variant))
    return image, truth, result


@pytest.mark.parametrize("subject", SUBJECTS)
def test_dice_and_sides(fullhead_root, subject, crop_predictor):
    image, truth, result = _segment(fullhead_root, subject, "original", crop_predictor)
    assert result.labels.shape == image.shape and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 1, 2, 3, 4}
    assert result.label_names == LABEL_NAMES
    dice = dice_per_side(result.labels, truth.array)
    oracle = crop_predictor is oracle_predictor
    # oracle: only resampling is lost; model: a floor that catches a broken path (the 0.75 bar is
    # measured by bench/fullhead.py)
    assert min(dice.values()) >= (0.95 if oracle else MODEL_FLOOR), dice
    # the left label lies on the patient's left (lower RAS x) in world coordinates
    ijk = {k: np.argwhere(np.isin(result.labels, v)) for k, v in (("left", (1, 2)), ("right", (3, 4)))}
    x = {k: (v @ image.affine[:3, :3].T + image.affine[:3, 3])[:, 0] for k, v in ijk.items()}
    assert x["left"].mean() < 0 < x["right"].mean() or x["left"].max() < x["right"].min()
    assert (x["left"] < x["right"].mean()).all() and (x["right"] > x["left"].mean()).all()
    # anterior lies in front of posterior on both sides
    for ant, post in ((1, 2), (3, 4)):
        y = [(np.argwhere(result.labels == v) @ image.affine[:3, :3].T + image.affine[:3, 3])[:, 1].mean()
             for v in (ant, post)]
        assert y[0] > y[1]
    if oracle:
        assert not result.qc["flags"], result.qc["flags"]


@pytest.mark.parametrize("subject", SUBJECTS)
def test_moved_copy_gives_same_dice(fullhead_root, subject, crop_predictor):
    _, truth, base = _segment(fullhead_root, subject, "original", crop_predictor)
    image, moved_truth, moved = _segment(fullhead_root, subject, "moved", crop_predictor)
    info = image.meta["move"]
    assert info["rotation_deg"] >= 10 and info["translation_mm"] >= 12.5
    d0 = dice_per_side(base.labels, truth.array)
    d1 = dice_per_side(moved.labels, moved_truth.array)
    oracle = crop_predictor is oracle_predictor
    for side in ("left", "right"):
        assert abs(d1[side] - d0[side]) <= (0.03 if oracle else MODEL_MOVED_DIFF), (info, d0, d1)
        assert d1[side] >= (0.75 if oracle else MODEL_FLOOR)
    assert left_is_left(moved.labels, image.affine, moved_truth)


# Issue 6's bar (Dice >= 0.75 per side, moved copies within 0.03) is measured by the whole-head bench, not here:
# `python bench/fullhead.py --predictor model` (tables in bench/README.md, results in bench/results/fullhead*.json).
# The test keeps what must hold: bert with the hires model meets it with a margin of about 0.03 (0.809/0.801,
# moved copies 0.783-0.796), so a regression of the hires path shows up as a failure.
def test_hires_model_meets_the_whole_head_bar_on_bert(fullhead_root, msd):
    model = _model_predictor(msd, "hires")
    _, truth, base = _segment(fullhead_root, "bert", "original", lambda t: model)
    image, moved_truth, moved = _segment(fullhead_root, "bert", "moved", lambda t: model)
    d0, d1 = dice_per_side(base.labels, truth.array), dice_per_side(moved.labels, moved_truth.array)
    assert min(d0.values()) >= 0.75 and min(d1.values()) >= 0.75, (d0, d1)
    assert all(abs(d1[s] - d0[s]) <= 0.03 for s in d0)
    assert left_is_left(moved.labels, image.affine, moved_truth)


# --- QC, writing, speed ---------------------------------------------------------------------------


def test_qc_reports_and_flags(fullhead_root, tmp_path):
    image, truth = scan(fullhead_root, "bert")
    reg = registration(fullhead_root, "bert")
    good = segment_full_head(image, oracle_predictor(truth), registration=reg)
    assert good.qc["registration_metric"] == reg.metric
    for side in ("left", "right"):
        s = good.qc["sides"][side]
        assert 0.2 < s["template_region_dice"] < 0.9 and s["fraction_near_template_region"] > 0.7
        assert 3000 < s["volume_mm3"] < 6000
    assert good.qc["plausible"]
    # nothing found -> flagged
    empty = segment_full_head(image, lambda crop: np.stack([np.ones(crop.shape)] + [np.zeros(crop.shape)] * 2),
                              registration=reg)
    assert not empty.labels.any()
    assert {"hippocampus_missing_left", "hippocampus_missing_right"} <= set(empty.qc["flags"]) <= set(QC_FLAGS)
    # a prediction far from the template hippocampus (a corner of the box) -> flagged
    def corner(crop):
        p = np.zeros((3,) + crop.shape, np.float32)
        p[0] = 1.0
        p[0, :8, :8, :8], p[1, :8, :8, :8] = 0.0, 1.0
        return p

    bad = segment_full_head(image, corner, registration=reg)
    assert {"off_template_region_left", "off_template_region_right"} <= set(bad.qc["flags"]) <= set(QC_FLAGS)
    # its volume (512 voxels a side) is implausible by the one rule of every volume row, not a second whole-head one
    assert not any("volume" in f for f in bad.qc["flags"])
    row = volume_row("bad", "bad.nii.gz", bad.labels, image.affine, {0: "background", **bad.label_names},
                     reference_volume_ranges(), extra_flags=bad.qc["flags"])
    assert row["qc_flags"].split(";")[0] == "volume_out_of_range" and set(row["qc_flags"].split(";")) <= set(QC_FLAGS)
    good_row = volume_row("good", "good.nii.gz", good.labels, image.affine, {0: "background", **good.label_names},
                          reference_volume_ranges(), extra_flags=good.qc["flags"])
    assert good_row["qc_flags"] == "" and good_row["qc_ok"] is True
    # a broken registration -> flagged by its metric
    from dataclasses import replace

    matrix = np.eye(4)
    matrix[:3, 3] = [0.0, 40.0, 30.0]
    res = segment_full_head(image, oracle_predictor(truth), registration=replace(reg, matrix_ras=matrix, metric=-0.05))
    assert "registration_poor_fit" in res.qc["flags"] and not res.qc["plausible"]
    # writing: labels in the input geometry + QC json
    import json

    import nibabel as nib

    seg, qc = write_result(good, tmp_path / "bert_seg.nii.gz")
    img = nib.load(str(seg))
    assert img.shape == image.shape and np.allclose(img.affine, image.affine)
    np.testing.assert_array_equal(np.asarray(img.dataobj), good.labels)
    assert json.loads(qc.read_text())["qc"]["sides"]["left"]["volume_mm3"] > 0


def test_save_uncertainty_writes_the_map_in_the_heads_grid_and_leaves_the_mask_alone(fullhead_root, tmp_path):
    """``hipposeg segment --full-head --save-uncertainty`` (``segment_one_case``) with a stand-in crop model that is
    unsure (1.3 bits) in a ball at each crop's centre and certain elsewhere: the map is in the head's grid, the
    entropy of the probabilities the labels come from (high on the mask, 0 away from it and outside the crops);
    without the option the same mask and no map."""
    import nibabel as nib

    from hipposeg.batch import CaseFiles
    from hipposeg.segment import CaseInput, segment_one_case

    unsure = np.array([0.1, 0.6, 0.3], np.float32)
    bits = float(-(unsure * np.log2(unsure)).sum())

    class UnsureModel:
        label_names = {0: "background", 1: "anterior", 2: "posterior"}

        def predict_probabilities(self, crop):
            ball = ((np.indices(crop.shape) - (np.array(crop.shape) // 2)[:, None, None, None]) ** 2).sum(0) <= 36
            p = np.zeros((3,) + crop.shape, np.float32)
            p[0] = 1.0
            p[:, ball] = unsure[:, None]
            return p

    case = CaseInput("bert", fullhead_root / "bert" / "t1.nii.gz")
    segment_one_case(case, UnsureModel(), tmp_path / "a", mode="full-head", save_uncertainty=True)
    segment_one_case(case, UnsureModel(), tmp_path / "b", mode="full-head", qc_png=False)
    a, b = CaseFiles.of(tmp_path / "a", "bert"), CaseFiles.of(tmp_path / "b", "bert")
    head = nib.load(case.path)
    mask = nib.load(a.seg)
    uncertainty = nib.load(a.uncertainty)
    assert uncertainty.shape == head.shape and np.allclose(uncertainty.affine, head.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asanyarray(mask.dataobj), np.asanyarray(nib.load(b.seg).dataobj))
    assert not b.uncertainty.exists() and a.qc.is_file()
    labels, u = np.asanyarray(mask.dataobj), np.asanyarray(uncertainty.dataobj)
    assert set(np.unique(labels)) == {0, 1, 3}  # both sides' balls, as their anterior label
    assert u.dtype == np.float32 and u.min() == 0.0 and bits - 1e-3 < u.max() <= np.log2(3)  # more on the rim
    assert np.median(u[labels > 0]) == pytest.approx(bits, abs=1e-3)  # the mask is as unsure as the model
    from scipy import ndimage

    near = ndimage.binary_dilation(labels > 0, np.ones((3, 3, 3), bool), iterations=2)
    assert not u[~near].any()  # 0 away from the mask, outside the crops included


def test_bundle_fullhead_config_runs_the_same_path(fullhead_root, tmp_path):
    """``inference.json`` + ``inference_fullhead.json`` through ``python -m monai.bundle``: labels 1-4, input grid."""
    import json

    import nibabel as nib

    from conftest import BUNDLE, run_cli

    configs = "[" + ",".join(f"'{BUNDLE / 'configs' / n}'" for n in ("inference.json", "inference_fullhead.json")) + "]"
    src = fullhead_root / "bert" / "t1.nii.gz"
    result = run_cli("-m", "monai.bundle", "run", "--config_file", configs, "--dataset_dir", str(src),
                     "--output_dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    seg = nib.load(tmp_path / "out" / "t1_seg.nii.gz")
    ref = nib.load(src)
    assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine, atol=1e-4)
    assert set(np.unique(np.asanyarray(seg.dataobj))) == {0, 1, 2, 3, 4}
    names = json.loads((tmp_path / "out" / "t1_seg.json").read_text())
    assert names["1"] == "left_anterior" and names["4"] == "right_posterior"
    row = json.loads((tmp_path / "out" / "volumes.json").read_text())[0]
    assert 1000 < row["volume_left_mm3"] < 6500 and 1000 < row["volume_right_mm3"] < 6500
