"""Per-case confidence (hipposeg.confidence): features on synthetic probabilities, the stored mapping, the
``low_confidence`` flag, and the predicted Dice through ``hipposeg segment`` and the bundle door on a clean and a
broken crop."""

from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest

from hipposeg.confidence import (confidence_features, confidence_prediction, load_models, predicted_dice,
                                 select_model, uncertainty_map)


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


def test_core_alone_has_no_partner_feature_and_a_prediction_only_from_a_core_alone_mapping():
    p = _probabilities(_ball())
    features = confidence_features({"prob": p, "axes": [p, p, p]})
    assert math.isnan(features["partner_dice"])
    core_alone = [m for m in load_models() if "partner_dice" not in m["features"]]
    # the stored mapping with the partner needs its agreement; a core-alone one, where the file has it, predicts
    assert (predicted_dice(features) is None) == (not core_alone)
    assert confidence_prediction(features, [_PARTNER]) == {"predicted_dice": None, "low_confidence_below": None}


def test_stored_mappings_predict_within_0_1_and_zero_for_an_empty_mask():
    models = load_models()
    assert models and "partner_dice" in models[0]["features"]  # with the partner, its mapping comes first
    for model in models:
        assert set(model["features"]) <= {"partner_dice", "axis_dice", "entropy", "soft_dice"}
        assert len(model["coefficients"]) == len(model["features"])
        assert {"fitted_on", "scored", "command"} <= set(model) and 0 < model["low_confidence_below"] < 1
    assert [len(m["features"]) for m in models] == sorted((len(m["features"]) for m in models), reverse=True)
    assert len({frozenset(m["features"]) for m in models}) == len(models)  # one mapping per feature set
    p = _probabilities(_ball())
    good = confidence_features({"prob": p, "axes": [p] * 3, "core": p, "partner": p})
    assert 0.0 <= predicted_dice(good) <= 1.0
    assert confidence_prediction(good)["low_confidence_below"] == models[0]["low_confidence_below"]
    empty = _probabilities(np.zeros((32, 40, 32), bool))
    assert predicted_dice(confidence_features({"prob": empty, "axes": [empty] * 3, "core": empty,
                                               "partner": empty})) == 0.0


def test_shipped_file_holds_the_models_list_and_the_old_format_reads_as_one(tmp_path):
    from hipposeg.confidence import MODEL_FILE

    stored = json.loads(MODEL_FILE.read_text())
    assert set(stored) == {"description", "models"} and list(load_models()) == stored["models"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"description": "d", **_PARTNER}))
    assert load_models(old) == ({"description": "d", **_PARTNER},)
    assert load_models(tmp_path / "missing.json") == ()


# A mapping with the partner and one of the core alone, each with its own threshold (not the shipped numbers).
_PARTNER = {"features": ["partner_dice", "axis_dice", "entropy", "soft_dice"], "intercept": 0.0,
            "coefficients": [0.5, 0.0, 0.0, 0.5], "low_confidence_below": 0.8, "fitted_on": "test", "scored": "test",
            "command": "test"}
_CORE = {"features": ["axis_dice", "entropy", "soft_dice"], "intercept": 0.1, "coefficients": [0.4, 0.0, 0.4],
         "low_confidence_below": 0.6, "fitted_on": "test", "scored": "test", "command": "test"}


def _mapping_file(tmp_path, models, name: str = "confidence_model.json") -> tuple:
    """``models`` through a mapping file of the stored format."""
    path = tmp_path / name
    path.write_text(json.dumps({"description": "test", "models": models}))
    return load_models(path)


def test_core_alone_gets_the_core_alone_mapping_and_its_threshold(tmp_path, monkeypatch):
    """Without ``partner_dice`` (the core alone) the first mapping that does not need it predicts, and the flag
    uses that mapping's threshold, through what ``segment`` computes (:func:`hipposeg.segmenter.confidence`)."""
    import hipposeg.confidence
    from hipposeg.segment import confidence_qc
    from hipposeg.segmenter import confidence

    models = _mapping_file(tmp_path, [_PARTNER, _CORE])
    monkeypatch.setattr(hipposeg.confidence, "load_models", lambda path=None: models)
    features = {"partner_dice": math.nan, "axis_dice": 0.5, "entropy": 0.3, "soft_dice": 0.75, "mask_voxels": 10}
    assert select_model(features) == _CORE
    assert confidence_prediction(features) == {"predicted_dice": pytest.approx(0.1 + 0.2 + 0.3),
                                               "low_confidence_below": 0.6}
    assert predicted_dice({k: v for k, v in features.items() if k != "partner_dice"}) == pytest.approx(0.6)
    # 0.6 predicted: above the partner mapping's 0.8 it would be flagged, under the core-alone 0.6 it is not
    assert confidence_qc({"": confidence_prediction(features)})["flags"] == []
    low = {**features, "axis_dice": 0.4}  # 0.56 < 0.6
    assert confidence_qc({"": confidence_prediction(low)})["flags"] == ["low_confidence"]
    # through segment's function, on probabilities of the core alone
    p = _probabilities(_ball(), sharpness=0.999)
    alone = confidence({"prob": p, "axes": [p] * 3, "core": p, "partner": None})
    assert alone["low_confidence_below"] == 0.6 and alone["predicted_dice"] == pytest.approx(
        0.1 + 0.4 * alone["axis_dice"] + 0.4 * alone["soft_dice"])
    # an empty mask: 0, flagged by the threshold of the mapping that applies
    assert confidence_prediction({**features, "mask_voxels": 0}) == {"predicted_dice": 0.0,
                                                                      "low_confidence_below": 0.6}


def test_with_the_partner_the_partner_mapping_predicts_and_sets_the_threshold(tmp_path, monkeypatch):
    import hipposeg.confidence
    from hipposeg.segment import confidence_qc
    from hipposeg.segmenter import confidence

    for i, order in enumerate(([_PARTNER, _CORE], [_CORE, _PARTNER])):
        models = _mapping_file(tmp_path, order, f"order{i}.json")
        features = {"partner_dice": 0.9, "axis_dice": 0.5, "entropy": 0.3, "soft_dice": 0.6, "mask_voxels": 10}
        # the first stored mapping whose features are all there: the file puts the richer sets first
        assert select_model(features, models) == order[0]
    models = _mapping_file(tmp_path, [_PARTNER, _CORE])
    monkeypatch.setattr(hipposeg.confidence, "load_models", lambda path=None: models)
    features = {"partner_dice": 0.9, "axis_dice": 0.5, "entropy": 0.3, "soft_dice": 0.6, "mask_voxels": 10}
    prediction = confidence_prediction(features)
    assert prediction == {"predicted_dice": pytest.approx(0.75), "low_confidence_below": 0.8}
    # 0.75: not low for the core-alone mapping (0.6), low for the partner mapping that predicted it (0.8)
    assert confidence_qc({"": prediction})["flags"] == ["low_confidence"]
    p = _probabilities(_ball(), sharpness=0.999)
    both = confidence({"prob": p, "axes": [p] * 3, "core": p, "partner": p})
    assert both["low_confidence_below"] == 0.8 and both["predicted_dice"] == pytest.approx(
        0.5 * both["partner_dice"] + 0.5 * both["soft_dice"])


def test_low_confidence_flag_is_in_the_one_table_and_fires_below_its_mappings_threshold():
    import hipposeg.qc_flags
    from hipposeg.qc_flags import QC_FLAGS
    from hipposeg.segment import confidence_qc
    from hipposeg.volumes import volume_row

    assert {"low_confidence", "low_confidence_left", "low_confidence_right"} <= set(QC_FLAGS)
    assert "confidence_model.json" in QC_FLAGS["low_confidence"]  # where its threshold is (no figure in --help)
    assert not hasattr(hipposeg.qc_flags, "LOW_CONFIDENCE_BELOW")  # the threshold travels with the prediction
    below = load_models()[0]["low_confidence_below"]
    low = confidence_qc({"": {"predicted_dice": below - 0.01, "low_confidence_below": below}})
    high = confidence_qc({"": {"predicted_dice": min(1.0, below + 0.01), "low_confidence_below": below}})
    assert low["flags"] == ["low_confidence"] and high["flags"] == []
    assert confidence_qc({"": {"predicted_dice": 0.01}})["flags"] == []  # no mapping's threshold: no flag
    sides = confidence_qc({"left": {"predicted_dice": 0.2, "low_confidence_below": 0.5},
                           "right": {"predicted_dice": 0.99, "low_confidence_below": 0.5}})
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


def _clean_and_broken(msd, inputs):
    """``inputs``/clean.nii.gz (a fold-0 crop) and broken.nii.gz (the crop with heavy noise, 45 % of the
    bright-tissue level); returns (the crop's array, its affine)."""
    img = nib.load(str(msd / "imagesTr" / "hippocampus_014.nii.gz"))
    array = np.asanyarray(img.dataobj).astype(np.float32)
    rng = np.random.default_rng(0)
    noisy = array + rng.normal(0, 0.45 * np.percentile(array, 99), array.shape).astype(np.float32)
    inputs.mkdir()
    nib.save(nib.Nifti1Image(array, img.affine), str(inputs / "clean.nii.gz"))
    nib.save(nib.Nifti1Image(noisy, img.affine), str(inputs / "broken.nii.gz"))
    return array, img.affine


def test_segment_writes_predicted_dice_lower_and_flagged_for_a_broken_copy(msd, tmp_path, cli):
    """A clean fold-0 crop and a copy with heavy noise (45 % of the bright-tissue level) through ``hipposeg
    segment``: the column is there, in [0, 1], lower for the broken copy, which alone is flagged."""
    inputs = tmp_path / "in"
    array, affine = _clean_and_broken(msd, inputs)
    result = cli("segment", str(inputs), "-o", str(tmp_path / "out"), "--quiet", "--no-qc", "--save-uncertainty")
    assert result.returncode == 0, result.stderr
    rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "out" / "volumes.csv"))}
    clean, broken = (float(rows[c]["predicted_dice"]) for c in ("clean", "broken"))
    assert 0.0 <= broken < clean <= 1.0
    assert "low_confidence" not in rows["clean"]["qc_flags"]
    assert "low_confidence" in rows["broken"]["qc_flags"]

    # the uncertainty map: the input's grid, entropy in bits, more of it in the broken copy
    maps = {c: nib.load(str(tmp_path / "out" / f"{c}_uncertainty.nii.gz")) for c in ("clean", "broken")}
    assert maps["clean"].shape == array.shape and np.allclose(maps["clean"].affine, affine)
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


def test_bundle_door_writes_segments_predicted_dice_flag_and_map(msd, tmp_path, cli):
    """``python -m monai.bundle run --config_file inference.json --save_uncertainty true``, typed as a user types it,
    on the clean and the broken crop: per case the row file and ``volumes.csv`` of ``hipposeg segment`` with the
    predicted Dice and the ``low_confidence`` flag (``confidence`` is on by default) and the uncertainty map in the
    input's grid, each what ``segment`` writes for the same input. A case re-done with both switches off has no map
    and no predicted Dice."""
    from conftest import BUNDLE, run_cli

    from hipposeg.bundle import run_workflow

    inputs, bundle_out = tmp_path / "in", tmp_path / "bundle"
    array, affine = _clean_and_broken(msd, inputs)
    result = run_cli("-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
                     "--dataset_dir", str(inputs), "--output_dir", str(bundle_out), "--save_uncertainty", "true",
                     "--device", "$torch.device('cpu')", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert cli("segment", str(inputs), "-o", str(tmp_path / "segment"), "--quiet", "--no-qc",
               "--save-uncertainty").returncode == 0
    rows = {door: {r["case"]: r for r in csv.DictReader(open(tmp_path / door / "volumes.csv"))}
            for door in ("bundle", "segment")}
    assert sorted(rows["bundle"]) == sorted(rows["segment"]) == ["broken", "clean"]
    for case, expected in rows["segment"].items():
        row = rows["bundle"][case]
        assert float(row["predicted_dice"]) == pytest.approx(float(expected["predicted_dice"]), abs=1e-3), case
        for column in ("qc_flags", "volume_total_mm3", "model", "model_3d"):  # model_3d: absent from both (core)
            assert row.get(column) == expected.get(column), (case, column)
        uncertainty = nib.load(str(bundle_out / f"{case}_uncertainty.nii.gz"))
        assert uncertainty.shape == array.shape and np.allclose(uncertainty.affine, affine)
        np.testing.assert_allclose(np.asanyarray(uncertainty.dataobj), np.asanyarray(
            nib.load(str(tmp_path / "segment" / f"{case}_uncertainty.nii.gz")).dataobj), atol=1e-4)
    assert "low_confidence" in rows["bundle"]["broken"]["qc_flags"]
    assert "low_confidence" not in rows["bundle"]["clean"]["qc_flags"]
    record = json.loads((bundle_out / "clean_volumes.json").read_text())
    assert record["input"] == str(inputs / "clean.nii.gz") and "predicted_dice" in record["row"]

    # the clean case re-done with the switches off: no map (none left from the first run), no predicted Dice
    run_workflow(["inference.json"], overrides={"dataset_dir": str(inputs / "clean.nii.gz"),
                                                "output_dir": str(bundle_out), "overwrite": True,
                                                "confidence": False, "device": "$torch.device('cpu')"})
    assert not (bundle_out / "clean_uncertainty.nii.gz").exists()
    assert (bundle_out / "broken_uncertainty.nii.gz").is_file()  # a case not re-done keeps its map
    row = json.loads((bundle_out / "clean_volumes.json").read_text())["row"]
    assert "predicted_dice" not in row and row["qc_flags"] == rows["bundle"]["clean"]["qc_flags"]
    table = {r["case"]: r for r in csv.DictReader(open(bundle_out / "volumes.csv"))}
    assert table["clean"]["predicted_dice"] == "" and table["broken"]["predicted_dice"]


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
