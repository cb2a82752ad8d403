"""bench/ smoke test: each table builder on small results built here, checked on the Markdown it produces, and the
shared helpers (paired statistics, the machine record, provenance) on known values. Nothing is measured."""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import accuracy  # noqa: E402  (bench/ scripts as modules)
import cli_timing  # noqa: E402
import cohort  # noqa: E402
import common  # noqa: E402
import fullhead  # noqa: E402
import gpu_ablation  # noqa: E402
import robustness  # noqa: E402
import speed  # noqa: E402

CASES = [f"hippocampus_{i:03d}" for i in range(1, 5)]
MACHINE = {"cpu": "Test CPU 9000", "cores": 2, "isa": "avx2", "torch_threads": 2}


def _row(dice: list[float], **extra) -> dict:
    """An accuracy result: per-case whole/anterior/posterior Dice, HD95, volumes, and their summary."""
    per = {"dice_whole": dice, "dice_anterior": [d - 0.01 for d in dice], "dice_posterior": [d - 0.02 for d in dice],
           "hd95_whole_mm": [1.0] * len(dice), "volume_pred_mm3": [3100.0] * len(dice),
           "volume_true_mm3": [3000.0] * len(dice), "abs_volume_error_mm3": [100.0] * len(dice)}
    summary = {m: {"mean": sum(v) / len(v), "median": sorted(v)[len(v) // 2]} for m, v in per.items()}
    summary["notebook_slice_dice"] = {"mean": 0.85}
    return {"summary": summary, **{f"per_case_{m}": dict(zip(CASES, v)) for m, v in per.items()}, **extra}


def test_paired_statistics_on_known_differences():
    a = {"x": 0.90, "y": 0.80, "z": 0.70, "n": float("nan")}
    b = {"x": 0.88, "y": 0.76, "z": 0.70, "n": 0.5, "only_b": 0.1}
    mean, se, n = common.paired(a, b)
    assert n == 3 and mean == pytest.approx(0.02)  # differences 0.02, 0.04, 0.00; the NaN pair left out
    assert se == pytest.approx((((0.0 ** 2 + 0.02 ** 2 + 0.02 ** 2) / 2) / 3) ** 0.5)
    assert common.format_paired((mean, se, n)) == "+0.0200 ± 0.0115"
    assert common.paired({"x": 1.0}, {"x": 0.5}) is None and common.format_paired(None) == "–"


def test_machine_and_provenance_are_what_ran():
    m = common.machine()
    assert m["cores"] == len(os.sched_getaffinity(0)) and m["cpu"] and m["isa"] in ("avx512", "avx2", "avx") + (
        os.uname().machine,)
    segmenter = SimpleNamespace(checkpoint=str(REPO / "bundles" / "hipposeg" / "models" / "model.pt"),
                                partner_checkpoint=None)
    assert common.provenance(segmenter) == {"model": "bundles/hipposeg/models/model.pt", "model_3d": None}
    assert common.shown("/elsewhere/x.pt") == "/elsewhere/x.pt"
    assert common.shown_command([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                                 str(REPO / "bundles/hipposeg/configs/train.json")]) == \
        "python -m monai.bundle run --config_file bundles/hipposeg/configs/train.json"
    assert common.override_args({"fold": "$None", "epochs": 2, "axes": [0, 1]}) == \
        ["--fold", "$None", "--epochs", "2", "--axes", "[0, 1]"]


def test_replace_block_rewrites_only_between_its_markers(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("intro\n<!-- t -->\nold\n<!-- /t -->\nkept\n")
    assert common.replace_block(page, "t", "new") and page.read_text() == "intro\n<!-- t -->\nnew\n<!-- /t -->\nkept\n"
    assert not common.replace_block(page, "missing", "x") and "x" not in page.read_text()


def test_accuracy_and_cross_validation_tables(tmp_path, monkeypatch):
    core = [0.90, 0.88, 0.86, 0.84]
    rows = {"shipped": _row([d + 0.004 for d in core]), "unet3d": _row([d - 0.02 for d in core]),
            "default-thick": _row(core), "default-f1": _row(core), "default-f2": _row([d + 0.01 for d in core]),
            "unet3d-f1": _row([d - 0.02 for d in core]), "unet3d-f2": _row([d - 0.01 for d in core])}
    for name, result in rows.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(result))
    monkeypatch.setattr(accuracy, "RESULTS", tmp_path)
    monkeypatch.setattr(accuracy, "RUNS", tmp_path / "runs")  # no training history of the real runs
    table = accuracy.build_table().splitlines()
    assert table[0].startswith("| row | what | scored on |") and set(table[1]) <= set("|-")
    assert [line.split(" | ")[0] for line in table[2:]] == [f"| `{n}`" for n in accuracy.ROWS if n in rows]
    shipped = next(line for line in table if line.startswith("| `shipped` |"))
    # mean whole Dice 0.874 / median 0.884; vs unet3d +0.0240 exactly (same offset on every case)
    assert "| 0.874 / 0.884 | – | +0.0240 ± 0.0000 |" in shipped and "| 3.3 / +3.3 |" in shipped
    cv = accuracy.build_cv_table().splitlines()
    held = next(line for line in cv if line.startswith("| **2.5D core (train.json), the default** |"))
    # folds 1+2 pooled: 8 volumes, mean 0.875; vs the plain 3D UNet +0.02 on every volume of both folds
    assert "| **held out (folds 1+2 pooled)** | 8 | 0.875 |" in held and held.endswith("| – | +0.0200 ± 0.0000 |")


def test_speed_table(tmp_path):
    result = {"command": "python bench/speed.py --n 4", "date": "2026-12-07 10:00", "machine": MACHINE,
              "torch": "2.x", "model": "bundles/hipposeg/models/model.pt",
              "model_3d": "bundles/hipposeg/models/model_3d.pt", "n_volumes": 4, "median_segment_s": 0.3412,
              "median_stage_s": {"preprocess": 0.0031, "predict": 0.3302, "postprocess": 0.0049},
              "end_to_end": {"n_cases": 6, "median_end_to_end_s": 0.4567}}
    core = {**result, "command": "python bench/speed.py --model core", "model_3d": None, "median_segment_s": 0.25}
    text = speed.speed_table({"default": result, "core": core})
    assert "Test CPU 9000, 2 cores, avx2, 2 torch threads" in text
    assert "`python bench/speed.py --n 4`; `python bench/speed.py --model core`" in text
    lines = text.splitlines()
    assert lines[2].startswith("| seconds | `default` (bundles/hipposeg/models/model.pt + bundles/hipposeg/models/"
                               "model_3d.pt) | `core` (bundles/hipposeg/models/model.pt) |")
    assert "| engine: `Segmenter.segment`, median per volume | 0.341 | 0.250 |" in lines
    assert any(line.startswith("| end to end: `segment_inputs`") and line.endswith("| 0.457 | 0.457 |")
               for line in lines)
    (tmp_path / "speed.json").write_text(json.dumps(result))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- speed-table -->\n<!-- /speed-table -->\n")
    assert speed.write_table(tmp_path, readme) and "| 0.341 |" in readme.read_text()


def test_fullhead_table():
    row = {"subject": "bert", "variant": "moved0", "input": {"orientation": "LIA", "spacing": [1.0, 1.2, 0.9]},
           "dice": {"left": 0.8123, "right": 0.7891}, "seconds": 3.456,
           "precision_recall": {"left": {"precision": 0.91, "recall": 0.73}, "right": {"precision": 0.8, "recall": 0.78}}}
    result = {"command": "python bench/fullhead.py --predictor model", "model": "bundles/hipposeg/models/model.pt",
              "model_3d": "bundles/hipposeg/models/model_3d.pt", "machine": MACHINE, "rows": [row]}
    lines = fullhead.build_table(result).splitlines()
    assert lines[0] == ("`python bench/fullhead.py --predictor model` (bundles/hipposeg/models/model.pt + "
                        "bundles/hipposeg/models/model_3d.pt; Test CPU 9000, 2 cores, avx2):")
    assert lines[-3] == "| bert | moved0 | LIA 1x1.2x0.9 mm | 0.812 | 0.789 | 0.91 / 0.73 | 0.80 / 0.78 | 3.46 |"
    assert lines[-1].startswith("Runtime: torch;")
    result.update(runtime="openvino", cli={"n_inputs": 3, "runs": 3, "per_case_s": 2.5, "wall_s": 12.0,
                                           "wall_per_input_s": 4.0, "baseline_checkout": "version 0.6.1 (commit abc)",
                                           "baseline": {"per_case_s": 5.0, "wall_s": 24.0}, "speed_up_per_case": 2.0,
                                           "speed_up_wall": 2.0})
    cli = fullhead.build_table(result).splitlines()[-1]
    assert "2.50 s per scan as the CLI prints it" in cli and "version 0.6.1 (commit abc) back to back: 5.00 s" in cli
    assert "speed-up 2.00x per scan" in cli


def test_cohort_tables():
    result = {"n_images": 3, "copies": 0, "machine": MACHINE, "date": "2026-12-07 10:00",
              "command": "python bench/cohort.py --copies 0",
              "throughput": {"one_process": {"wall_s": 30.04, "images_per_hour": 359.5},
                             "torchrun_2": {"wall_s": 25.0, "images_per_hour": 432.0}},
              "adult_etiv_range_cm3": [900.0, 2200.0], "agreement_tolerance": 0.1,
              "etiv": [{"image": "sub-bert_ses-orig", "etiv_cm3": 1400.4, "icv_mask_cm3": 1420.0, "ratio": 1.014,
                        "qc_flags": ""}],
              "etiv_max_relative_change": {"bert": 0.0042}}
    text = cohort.build_tables(result)
    assert text.startswith("3 whole-head images (3 heads + 0 moved copies each), Test CPU 9000, 2 cores, avx2,")
    assert "| `hipposeg bids ... participant` (1 process) | 30.0 | 360 |" in text
    assert "| sub-bert_ses-orig | 1400 | 1420 | 1.014 | – |" in text and "bert max 0.42 %" in text


def test_gpu_ablation_table():
    base = {"dice_whole": 0.88}
    rows = [{"variant": "default", "kind": "train", "about": "bundle defaults", "epochs_done": 4, "epochs_planned": 4,
             "train_elapsed_s": 300.0, "summary": {"dice_whole": {"mean": 0.88}}, "train_status": "ok"},
            {"variant": "2d", "kind": "train", "about": "context 1", "epochs_done": 2, "epochs_planned": 4,
             "train_status": "timeout", "summary": {"dice_whole": {"mean": 0.85}},
             "delta_dice_whole_vs_default": gpu_ablation.paired_delta(
                 {c: {"dice_whole": 0.85 + i * 0.01} for i, c in enumerate(CASES)},
                 {c: {"dice_whole": base["dice_whole"] + i * 0.01} for i, c in enumerate(CASES)})}]
    meta = {"device_name": "H100", "date": "2026-12-07", "epochs": 4, "parallel": 2, "num_workers": 2,
            "command": "python bench/gpu_ablation.py --epochs 4"}
    text = gpu_ablation.markdown({"meta": meta, "rows": rows})
    assert "| `2d` | train | context 1 | 2/4 | – | 0.8500 | – | – | – | -0.0300 ± 0.0000 | train timeout at 2/4 epochs; " \
           "eval ok |" in text
    assert "| `default` | train | bundle defaults | 4 | 300 | 0.8800 |" in text


def test_thick_slices_table(tmp_path):
    import thick_slices

    cells = [{"thickness_mm": t, "axis": a, "mean_loss": 0.01 * (a + 1), "max_loss": 0.1} for t in (1.6, 2.0)
             for a in (0, 1, 2)]
    result = {"checkpoint": "bundles/hipposeg/models/model.pt", "partner_checkpoint": None, "date": "2026-12-07 10:00",
              "command": "python bench/thick_slices.py", "n_cases": 42, "profile": thick_slices.CURRENT_PROFILE,
              "summary": cells, "rows": [{"dice_1mm_native": 0.9}, {"dice_1mm_native": 0.8}]}
    (tmp_path / "thick_slices.json").write_text(json.dumps(result))
    (tmp_path / "thick_slices_partial.json").write_text(json.dumps({**result, "n_cases": 5}))  # not a full run
    lines = thick_slices.build_table(tmp_path).splitlines()
    assert lines[-1] == ("| bundles/hipposeg/models/model.pt (2026-12-07) | `python bench/thick_slices.py` | 0.850 | "
                         + " | ".join(f"+{0.01 * (a + 1):.3f} (+0.10)" for _ in (1.6, 2.0) for a in (0, 1, 2))
                         + " | +0.020 |")
    assert thick_slices.build_table(tmp_path / "empty") is None


# ------------------------------------------------------------------------------------------- CLI timing


@pytest.fixture
def segment_runs(monkeypatch):
    """``hipposeg segment`` processes replaced by a recorder: each call's inputs, checkout, options and environment;
    this checkout takes 2 s a run (1 s per case), a baseline 4 s (2 s per case)."""
    calls = []

    def run_segment(inputs, out, *, checkout=common.REPO, extra=(), env=None):
        calls.append({"inputs": list(inputs), "checkout": checkout, "extra": list(extra), "env": env})
        new = checkout == common.REPO
        return {"wall_s": 2.0 if new else 4.0, "per_case_s": 1.0 if new else 2.0, "exit": 0, "stderr": ""}

    monkeypatch.setattr(cli_timing, "run_segment", run_segment)
    return calls


def test_time_cli_passes_options_threads_and_names_the_baseline(tmp_path, segment_runs):
    old = tmp_path / "old"
    (old / "hipposeg").mkdir(parents=True)
    (old / "hipposeg" / "__init__.py").write_text('__version__ = "0.6.1"\n')
    out = common.time_cli(["a.nii.gz", "b.nii.gz"], ["--runtime", "onnx", "--model", "core"], runs=2, threads=3,
                          baseline=old)
    assert len(segment_runs) == 6  # warm-up + 2 runs, each here and in the baseline, alternately
    assert [c["checkout"] for c in segment_runs[:2]] == [common.REPO, old]
    assert all(c["env"] == {"OMP_NUM_THREADS": "3"} for c in segment_runs)
    assert segment_runs[0]["extra"] == ["--runtime", "onnx", "--model", "core"]
    assert segment_runs[1]["extra"] == ["--model", "core"]  # older versions have no --runtime
    assert out["baseline_checkout"] == "version 0.6.1 (commit ?)" and out["speed_up_wall"] == 2.0
    assert out["wall_per_input_s"] == 1.0 and out["per_case_s"] == 1.0
    assert common.time_cli(["a.nii.gz"], [])["baseline_checkout"] is None and segment_runs[-1]["env"] is None
    assert common.checkout_version(common.REPO).startswith("version ")


def test_speed_cli_timing_runs_with_the_bench_options(segment_runs):
    args = SimpleNamespace(runtime="openvino", model="core", tta=True, threads=3, baseline=None)
    out = speed.time_crops_cli(args, ["a.nii.gz"])
    assert {tuple(c["extra"]) for c in segment_runs} == {("--runtime", "openvino", "--model", "core", "--tta")}
    assert {c["env"]["OMP_NUM_THREADS"] for c in segment_runs} == {"3"}
    assert segment_runs[-1]["inputs"] == ["missing.nii.gz"] and out["start_up"]["wall_s"] == 2.0


def test_a_partner_the_cli_cannot_run_is_refused_before_measuring(capsys):
    """``hipposeg segment`` has no --partner: timing the CLI with one would time --model alone."""
    with pytest.raises(SystemExit) as speed_exit:
        speed.main(["--partner", "p.pt"])
    with pytest.raises(SystemExit) as fullhead_exit:
        fullhead.main(["--predictor", "model", "--partner", "p.pt"])
    assert speed_exit.value.code == fullhead_exit.value.code == 2
    err = capsys.readouterr().err
    assert "--cli-crops 0" in err and "--cli-runs 0" in err


# ------------------------------------------------------------------------------------------- robustness


def _robustness_result() -> dict:
    """Three crops, clean and every corruption: each corruption costs every crop 0.05 Dice."""
    clean = {"c1": 0.90, "c2": 0.78, "c3": 0.86}
    records = [{"case": case, "condition": name, "dice_whole": dice - (0.05 if kind else 0.0),
                "dice_anterior": dice - 0.01, "dice_posterior": dice - 0.02, "volume_pred_mm3": 3300.0,
                "volume_true_mm3": 3000.0, "qc_flags": "thick_slices" if kind == "thick_slices" else ""}
               for case, dice in clean.items() for name, kind, _ in robustness.conditions()]
    summary = robustness.summarise_crops(records)
    return {"command": "python bench/robustness.py", "model": "m.pt", "model_3d": "p.pt", "machine": MACHINE,
            "n_cases": 3, "crops": records, "summary": summary, "levels": robustness.summarise_levels(summary)}


def test_robustness_table_uses_the_shared_paired_format():
    lines = robustness.build_table(_robustness_result()).splitlines()
    assert lines[0].startswith("`python bench/robustness.py` (m.pt + p.pt; 3 of the 3 fold-0 crops; Test CPU 9000")
    assert lines[2].startswith("| corruption | level | parameter | Dice whole |") and lines[3] == "|" + "---|" * 11
    assert lines[4] == "| clean | - | – | 0.847 | 0.837 | 0.827 | – | 10.0 | 1 | 0 | 0 |"
    assert lines[5] == ("| bias_field | mild | c = 0.2 | 0.797 | 0.837 | 0.827 | "
                        f"{common.format_paired((-0.05, 0.0, 3))} | 10.0 | 1 | 0 | 0 |")
    assert "Mean whole-Dice change over the types: mild -0.0500" in lines[-1]


def test_robustness_fit_predicts_with_the_library_mapping():
    """The cross-validated predictions are :func:`hipposeg.confidence.predicted_dice` of fold-wise fits: linear in
    the features here, so close to the Dice, and 0 for a copy whose mask is empty."""
    import numpy as np

    from hipposeg.confidence import predicted_dice

    rng = np.random.default_rng(0)
    records = []
    for case in range(12):
        for copy in range(5):
            f = {"partner_dice": rng.uniform(0.5, 1.0), "axis_dice": rng.uniform(0.5, 1.0),
                 "entropy": rng.uniform(0.1, 0.5), "soft_dice": rng.uniform(0.6, 1.0), "mask_voxels": 100}
            dice = 0.1 + 0.5 * f["partner_dice"] + 0.3 * f["axis_dice"] - 0.2 * f["entropy"] + 0.1 * f["soft_dice"]
            records.append({"case": f"c{case}", "condition": "clean" if copy == 0 else f"x/{copy}", "features": f,
                            "dice_whole": dice, "volume_pred_mm3": 2500.0 + 10 * len(records),
                            "qc_flags": "x" if copy == 4 else ""})
    records[7]["features"]["mask_voxels"] = 0
    fit = robustness.fit_confidence({"crops": records})
    predictions = np.array(fit["predictions_cv"])
    assert predictions[7] == 0.0
    others = np.arange(len(records)) != 7
    assert np.abs(predictions[others] - np.array([r["dice_whole"] for r in records])[others]).max() < 0.02
    assert predicted_dice(records[3]["features"], fit["model"]) == pytest.approx(records[3]["dice_whole"], abs=0.02)


def _mapping(features: list[str], below: float = 0.8, **extra) -> dict:
    return {"features": features, "intercept": 0.0, "coefficients": [0.1] * len(features),
            "low_confidence_below": below, "fitted_on": "x", "scored": "x", "command": "x", **extra}


def test_robustness_fit_merge_replaces_its_feature_set_and_keeps_the_others():
    partner = _mapping(["partner_dice", "axis_dice", "entropy", "soft_dice"], 0.875)
    core = _mapping(["axis_dice", "entropy", "soft_dice"], 0.7)
    new_core = _mapping(["soft_dice", "axis_dice", "entropy"], 0.65)  # the same set in another order
    new_partner = _mapping(["partner_dice", "axis_dice", "entropy", "soft_dice"], 0.9)
    assert robustness.merge_models([], partner) == [partner]
    # added after the richer partner mapping (the first whose features a result has predicts it)
    assert robustness.merge_models([partner], core) == [partner, core]
    assert robustness.merge_models((core,), partner) == [partner, core]  # a tuple, as load_models returns
    assert robustness.merge_models([partner, core], new_core) == [partner, new_core]
    assert robustness.merge_models([partner, core], new_partner) == [new_partner, core]
    soft = _mapping(["soft_dice"], 0.5)
    entropy = _mapping(["entropy"], 0.5)
    assert robustness.merge_models([partner, soft, core], entropy) == [partner, core, soft, entropy]
    stored = [partner, core]
    robustness.merge_models(stored, new_core)
    assert stored == [partner, core]  # what was read is not changed
    written = robustness.models_file([partner, core])
    assert written == {"description": robustness.MODELS_DESCRIPTION, "models": [partner, core]}


def _fit_records(with_partner: bool) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(1)
    records = []
    for case in range(12):
        for copy in range(5):
            f = {"partner_dice": rng.uniform(0.5, 1.0) if with_partner else float("nan"),
                 "axis_dice": rng.uniform(0.5, 1.0), "entropy": rng.uniform(0.1, 0.5),
                 "soft_dice": rng.uniform(0.6, 1.0), "mask_voxels": 100}
            dice = 0.1 + 0.8 * f["axis_dice"] - 0.2 * f["entropy"] + 0.1 * f["soft_dice"]
            records.append({"case": f"c{case}", "condition": "clean" if copy == 0 else f"x/{copy}", "features": f,
                            "dice_whole": dice, "volume_pred_mm3": 2500.0 + 10 * len(records),
                            "qc_flags": "x" if copy == 4 else ""})
    return records


def test_robustness_fit_of_a_core_alone_run_adds_its_mapping_and_keeps_the_partners(tmp_path):
    """``--fit`` on a ``--model core`` result (``partner_dice`` NaN) writes the core-alone mapping into the mapping
    file (``--model-out``) beside the stored partner mapping, which stays as it was; a second fit replaces it."""
    from hipposeg.confidence import confidence_prediction, load_models

    partner = _mapping(["partner_dice", "axis_dice", "entropy", "soft_dice"], 0.875)
    models_out = tmp_path / "confidence_model.json"
    models_out.write_text(json.dumps({"description": "old", "models": [partner]}))
    out = tmp_path / "robustness-core.json"
    out.write_text(json.dumps({"command": "python bench/robustness.py --model core", "model": "core.pt",
                               "model_3d": None, "crops": _fit_records(with_partner=False)}))
    result = robustness.main(["--fit", "--out", str(out), "--model-out", str(models_out)])
    assert result["confidence"]["features"] == ["axis_dice", "entropy", "soft_dice"]
    stored = json.loads(models_out.read_text())
    assert stored["description"] == robustness.MODELS_DESCRIPTION
    assert stored["models"][0] == partner and len(stored["models"]) == 2
    core = stored["models"][1]
    assert core["features"] == ["axis_dice", "entropy", "soft_dice"]
    assert core["low_confidence_below"] == result["confidence"]["low_confidence_below"]
    assert "segmented by core.pt alone (no 3D partner)" in core["fitted_on"]
    features = {"partner_dice": float("nan"), "axis_dice": 0.9, "entropy": 0.2, "soft_dice": 0.9, "mask_voxels": 9}
    prediction = confidence_prediction(features, load_models(models_out))
    assert prediction["predicted_dice"] == pytest.approx(0.1 + 0.72 - 0.04 + 0.09, abs=0.01)
    assert prediction["low_confidence_below"] == core["low_confidence_below"]
    # fitted again: replaced, not added; the partner mapping still first and unchanged
    robustness.main(["--fit", "--out", str(out), "--model-out", str(models_out)])
    again = json.loads(models_out.read_text())["models"]
    assert again == [partner, core]


def test_robustness_publish_fills_its_blocks_and_survives_missing_markers(tmp_path, monkeypatch, capsys):
    import publish_docs

    (tmp_path / "robustness.json").write_text(json.dumps(_robustness_result()))
    monkeypatch.setattr(robustness, "RESULTS", tmp_path)
    readme = tmp_path / "README.md"
    monkeypatch.setitem(publish_docs.DOCS, "bench", readme)
    # one block's markers only: it is filled, the other is reported, nothing crashes
    readme.write_text("intro\n<!-- robustness-table -->\nstale body\n<!-- /robustness-table -->\nkept\n")
    problems = robustness.publish()
    text = readme.read_text()
    assert len(problems) == 1 and "robustness-confidence" in problems[0] and "markers" in problems[0]
    assert "stale body" not in text and "| bias_field | mild | c = 0.2 | 0.797 |" in text
    assert text.startswith("intro\n<!-- robustness-table -->\n") and text.endswith("<!-- /robustness-table -->\nkept\n")
    assert "robustness-confidence" in capsys.readouterr().err
    # no markers at all: both reported, the file untouched
    readme.write_text("no blocks here\n")
    assert len(robustness.publish()) == 2 and readme.read_text() == "no blocks here\n"
    # no results: the blocks cannot be rendered, reported, the file untouched
    (tmp_path / "robustness.json").unlink()
    stale = "<!-- robustness-table -->\nstale body\n<!-- /robustness-table -->\n"
    readme.write_text(stale)
    assert len(robustness.publish()) == 2 and readme.read_text() == stale
