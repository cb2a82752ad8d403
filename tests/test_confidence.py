"""Per-case confidence (hipposeg.confidence): features on synthetic probabilities, the stored mapping, the
``low_confidence`` flag, and the predicted Dice through ``hipposeg segment`` on a clean and a broken crop."""

from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest

from hipposeg.confidence import confidence_features, load_model, predicted_dice, uncertainty_map


def _probabilities(mask: np.ndarray, sharpness: float = 0.98) -> np.ndarray:
    """(3, *shape): background / anterior / posterior from a foreground mask (front half anterior)."""
    fg = np.where(mask, sharpness, 1 - sharpness).astype(np.float32)
    front = np.zeros(mask.shape, bool)
    front[:, mask.shape[1] // 2:] = True
    return np.stack([1 - fg, fg * front, fg * ~front])


def _ball(shape=(32, 40, 32), centre=(16, 20, 16), radius=8.0) -> np.ndarray:
    grid = np.indices(shape)
    return ((grid - np.reshape(centre, (3, 1, 1, 1))) ** 2).sum(0) <= radius ** 2


def test_features_are_perfect_when_every_member_agrees_and_fall_when_they_do_not():
    p = _probabilities(_ball(), sharpness=0.999)
    agree = confidence_features({"prob": p[None], "axes": [p[None]] * 3, "core": p[None], "partner": p[None]})
    assert agree["partner_dice"] == 1.0 and agree["axis_dice"] == 1.0
    assert agree["entropy"] < 0.2 and agree["soft_dice"] > 0.97

    shifted = [_probabilities(_ball(centre=(16 + d, 20, 16))) for d in (-3, 0, 3)]
    partner = _probabilities(_ball(radius=5.0))
    mean = (np.mean(shifted, 0) + partner) / 2
    soft = _probabilities(_ball(), sharpness=0.6)
    disagree = confidence_features({"prob": (mean + soft) / 2, "axes": shifted, "core": np.mean(shifted, 0),
                                    "partner": partner})
    assert disagree["partner_dice"] < 0.8 and disagree["axis_dice"] < 0.9
    assert disagree["entropy"] > agree["entropy"] and disagree["soft_dice"] < agree["soft_dice"]


def test_core_alone_has_no_partner_feature_and_no_prediction():
    p = _probabilities(_ball())
    features = confidence_features({"prob": p, "axes": [p, p, p]})
    assert math.isnan(features["partner_dice"])
    assert predicted_dice(features) is None  # the stored mapping needs the partner's agreement


def test_stored_mapping_predicts_within_0_1_and_zero_for_an_empty_mask():
    model = load_model()
    assert model is not None and set(model["features"]) <= {"partner_dice", "axis_dice", "entropy", "soft_dice"}
    assert "fitted_on" in model and "scored" in model and 0 < model["low_confidence_below"] < 1
    p = _probabilities(_ball())
    good = confidence_features({"prob": p, "axes": [p] * 3, "core": p, "partner": p})
    assert 0.0 <= predicted_dice(good) <= 1.0
    empty = _probabilities(np.zeros((32, 40, 32), bool))
    assert predicted_dice(confidence_features({"prob": empty, "axes": [empty] * 3, "core": empty,
                                               "partner": empty})) == 0.0


def test_low_confidence_flag_is_in_the_one_table_and_fires_below_its_threshold():
    from hipposeg.qc_flags import LOW_CONFIDENCE_BELOW, QC_FLAGS
    from hipposeg.segment import confidence_qc
    from hipposeg.volumes import volume_row

    assert {"low_confidence", "low_confidence_left", "low_confidence_right"} <= set(QC_FLAGS)
    assert "confidence_model.json" in QC_FLAGS["low_confidence"]  # where its threshold is (no figure in --help)
    assert LOW_CONFIDENCE_BELOW == load_model()["low_confidence_below"]  # one reader of the stored mapping
    low = confidence_qc({"": {"predicted_dice": LOW_CONFIDENCE_BELOW - 0.01}})
    high = confidence_qc({"": {"predicted_dice": min(1.0, LOW_CONFIDENCE_BELOW + 0.01)}})
    assert low["flags"] == ["low_confidence"] and high["flags"] == []
    sides = confidence_qc({"left": {"predicted_dice": 0.2}, "right": {"predicted_dice": 0.99}})
    assert sides["flags"] == ["low_confidence_left"] and sides["predicted_dice_right"] == 0.99
    row = volume_row("c", "c.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4), {0: "bg", 1: "a"},
                     extra_flags=low["flags"])
    assert not row["qc_ok"] and "low_confidence" in row["qc_flags"]


def test_uncertainty_map_is_zero_where_certain_and_log2_c_where_uniform():
    p = np.zeros((3, 2, 2, 2), np.float32)
    p[0] = 1.0
    p[:, 0, 0, 0] = 1 / 3
    u = uncertainty_map(p)
    assert u.shape == (2, 2, 2) and u.dtype == np.float32
    assert u[1, 1, 1] == 0.0 and u[0, 0, 0] == pytest.approx(np.log2(3), abs=1e-4)  # exactly 0 where certain


def test_predicted_dice_is_read_back_from_a_row_of_numbers_or_text():
    from hipposeg.confidence import predicted_dice_text, row_predicted_dice

    assert row_predicted_dice({"predicted_dice": 0.834}) == {"": 0.834}
    assert row_predicted_dice({"predicted_dice": "", "predicted_dice_left": "0.5", "predicted_dice_right": 0.75}) == {
        "left": 0.5, "right": 0.75}  # a TSV cell is text; an empty one is no value
    assert row_predicted_dice({"predicted_dice": None, "predicted_dice_left": "nan"}) == {}
    assert predicted_dice_text({"predicted_dice": 0.834}) == "0.83"
    assert predicted_dice_text({"predicted_dice_left": "0.5", "predicted_dice_right": 0.75}) == "L 0.50 / R 0.75"
    assert predicted_dice_text({"case": "c"}) == ""


def test_segment_writes_predicted_dice_lower_and_flagged_for_a_broken_copy(msd, tmp_path, cli):
    """A clean fold-0 crop and a copy with heavy noise (45 % of the bright-tissue level) through ``hipposeg
    segment``: the column is there, in [0, 1], lower for the broken copy, which alone is flagged."""
    src = msd / "imagesTr" / "hippocampus_014.nii.gz"
    img = nib.load(str(src))
    array = np.asanyarray(img.dataobj).astype(np.float32)
    rng = np.random.default_rng(0)
    noisy = array + rng.normal(0, 0.45 * np.percentile(array, 99), array.shape).astype(np.float32)
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(array, img.affine), str(inputs / "clean.nii.gz"))
    nib.save(nib.Nifti1Image(noisy, img.affine), str(inputs / "broken.nii.gz"))
    result = cli("segment", str(inputs), "-o", str(tmp_path / "out"), "--quiet", "--no-qc", "--save-uncertainty")
    assert result.returncode == 0, result.stderr
    rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "out" / "volumes.csv"))}
    clean, broken = (float(rows[c]["predicted_dice"]) for c in ("clean", "broken"))
    assert 0.0 <= broken < clean <= 1.0
    assert "low_confidence" not in rows["clean"]["qc_flags"]
    assert "low_confidence" in rows["broken"]["qc_flags"]

    # the uncertainty map: the input's grid, entropy in bits, more of it in the broken copy
    maps = {c: nib.load(str(tmp_path / "out" / f"{c}_uncertainty.nii.gz")) for c in ("clean", "broken")}
    assert maps["clean"].shape == array.shape and np.allclose(maps["clean"].affine, img.affine)
    values = {c: np.asanyarray(m.dataobj) for c, m in maps.items()}
    assert values["clean"].min() >= 0 and values["clean"].max() <= np.log2(3) + 1e-4
    assert values["broken"].sum() > values["clean"].sum()
    # re-done without --save-uncertainty: no map of the earlier run is left beside the new mask
    again = cli("segment", str(inputs / "clean.nii.gz"), "-o", str(tmp_path / "out"), "--quiet", "--no-qc",
                "--overwrite")
    assert again.returncode == 0, again.stderr
    assert not (tmp_path / "out" / "clean_uncertainty.nii.gz").exists()
    assert (tmp_path / "out" / "broken_uncertainty.nii.gz").is_file()  # a case not re-done keeps its map
    # an output is never an input: the output folder (masks and maps only) holds nothing to segment
    assert cli("segment", str(tmp_path / "out"), "-o", str(tmp_path / "out2"), "--quiet").returncode == 2


def test_risk_coverage_area_orders_by_confidence_and_averages_ties():
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "bench"))
    from robustness import aurc

    risk = np.array([0.0, 0.1, 0.5, 0.9])
    best = aurc(-risk, risk)  # the most confident first = the least risky first
    worst = aurc(risk, risk)
    assert best == pytest.approx(np.mean(np.cumsum(risk) / np.arange(1, 5)))
    assert worst > best
    assert aurc(np.zeros(4), risk) == pytest.approx(risk.mean())  # one tie: every coverage at the mean risk


def test_qc_picture_title_prints_the_predicted_dice():
    from hipposeg.segment import qc_title

    assert qc_title("c1", {"predicted_dice": 0.5}) == "c1   predicted Dice 0.50"
    assert qc_title("h", {"predicted_dice_left": 0.5, "predicted_dice_right": 0.25}) == "h   predicted Dice L 0.50 / R 0.25"
    assert qc_title("c2", {}) == "c2"  # no mapping (e.g. the core alone): the case name only
