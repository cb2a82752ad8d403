"""Tests of hipposeg.metrics: Dice and HD95 pinned to MONAI, the empty-mask conventions, and the other doors
(training's validation Dice, the whole-head Dice per side) computing the same Dice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from scipy import ndimage

from hipposeg.metrics import case_metrics, dice, hausdorff95, summarise

SPACINGS = [(1.0, 1.0, 1.0), (0.7, 0.9, 2.5), (1.5, 0.5, 1.2)]


def random_blob(rng: np.random.Generator, shape=(26, 22, 18), level: float = 0.25) -> np.ndarray:
    """An irregular, non-empty 3D mask: smoothed noise above ``level``."""
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    mask = noise > level * noise.std()
    assert mask.any()
    return mask


def monai_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    as_tensor = lambda m: torch.as_tensor(np.asarray(m, np.float32))[None, None]  # noqa: E731
    return float(compute_dice(as_tensor(pred), as_tensor(truth), include_background=True, ignore_empty=False))


def reference_hd95(pred: np.ndarray, truth: np.ndarray, spacing) -> float:
    """The textbook definition, independent of MONAI: surface = mask minus its 6-connected erosion; distances
    from each surface voxel to the other surface through scipy's exact EDT in mm; max of the two 95th
    percentiles."""
    cross = ndimage.generate_binary_structure(3, 1)
    sp, st = pred & ~ndimage.binary_erosion(pred, cross), truth & ~ndimage.binary_erosion(truth, cross)
    to_truth = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
    return float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


# ------------------------------------------------------------------------------------------------ Dice


@pytest.mark.parametrize("seed", range(6))
def test_dice_equals_monai_compute_dice(seed):
    rng = np.random.default_rng(seed)
    truth = random_blob(rng)
    pred = random_blob(rng) if seed % 2 else ndimage.binary_dilation(truth, iterations=seed % 3 + 1)
    value = dice(pred, truth)
    assert 0.0 < value < 1.0
    assert value == pytest.approx(monai_dice(pred, truth), abs=1e-6)
    assert dice(truth, truth) == 1.0 == monai_dice(truth, truth)


def test_dice_empty_conventions_match_monai():
    empty, blob = np.zeros((8, 8, 8), bool), np.zeros((8, 8, 8), bool)
    blob[2:5, 2:5, 2:5] = True
    assert dice(empty, empty) == 1.0 == monai_dice(empty, empty)  # nothing to find, nothing found
    assert dice(empty, blob) == 0.0 == monai_dice(empty, blob)
    assert dice(blob, empty) == 0.0 == monai_dice(blob, empty)
    assert dice(blob.astype(np.uint8) * 3, blob) == 1.0  # any nonzero value is foreground


def test_training_whole_dice_metric_is_the_same_dice():
    from monai.networks.utils import one_hot

    from hipposeg.training import WholeDiceMetric

    rng = np.random.default_rng(7)
    preds, truths = [], []
    for _ in range(3):  # labels 0/1/2 (anterior/posterior): the whole-hippocampus Dice merges 1 and 2
        truths.append(random_blob(rng) * rng.integers(1, 3, size=(26, 22, 18)))
        preds.append(random_blob(rng) * rng.integers(1, 3, size=(26, 22, 18)))
    preds.append(np.zeros((26, 22, 18), int))  # a case with no foreground at all: Dice 1.0 by convention
    truths.append(np.zeros((26, 22, 18), int))
    to_one_hot = lambda labels: one_hot(torch.as_tensor(np.stack(labels))[:, None], num_classes=3)  # noqa: E731
    metric = WholeDiceMetric()
    per_case = metric(to_one_hot(preds), to_one_hot(truths))
    expected = [dice(p > 0, t > 0) for p, t in zip(preds, truths)]
    assert per_case.shape == (4, 1)
    np.testing.assert_allclose(per_case[:, 0].numpy(), expected, atol=1e-6)
    assert float(metric.aggregate()) == pytest.approx(np.mean(expected), abs=1e-6)


def test_whole_head_dice_per_side_is_the_same_dice():
    from hipposeg.fullhead.evaluation import dice_per_side

    rng = np.random.default_rng(3)
    truth = random_blob(rng).astype(np.uint8)  # left = 1 ...
    truth[13:] *= 2  # ... right = 2 (the high half of axis 0)
    labels = np.where(random_blob(rng), np.where(np.arange(26)[:, None, None] < 13, 1, 3), 0)
    labels[labels == 3] += rng.integers(0, 2, size=int((labels == 3).sum()))  # right anterior 3 / posterior 4
    out = dice_per_side(labels, truth)
    assert out["left"] == dice(np.isin(labels, (1, 2)), truth == 1)
    assert out["right"] == dice(np.isin(labels, (3, 4)), truth == 2)
    assert dice_per_side(np.zeros_like(labels), np.zeros_like(truth)) == {"left": 1.0, "right": 1.0}
    assert dice_per_side(np.zeros_like(labels), truth) == {"left": 0.0, "right": 0.0}


# ------------------------------------------------------------------------------------------------ HD95


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")  # MONAI's own internal call
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("seed", range(4))
def test_hd95_equals_monai_and_the_textbook_definition(seed, spacing):
    rng = np.random.default_rng(100 + seed)
    truth = random_blob(rng)
    pred = random_blob(rng) if seed % 2 else np.roll(ndimage.binary_erosion(truth), seed + 1, axis=seed % 3)
    value = hausdorff95(pred, truth, spacing)
    monai = float(compute_hausdorff_distance(torch.as_tensor(pred)[None, None], torch.as_tensor(truth)[None, None],
                                             include_background=True, percentile=95, spacing=spacing))
    assert value > 0
    assert value == pytest.approx(monai, rel=1e-6)
    assert value == pytest.approx(reference_hd95(pred, truth, spacing), rel=1e-5)
    assert hausdorff95(truth, pred, spacing) == pytest.approx(value, rel=1e-6)  # symmetric


@pytest.mark.parametrize("axis", range(3))
def test_hd95_is_in_mm_along_the_right_axis(axis):
    spacing = (0.7, 0.9, 2.5)
    truth = np.zeros((20, 20, 20), bool)
    index = [slice(4, 16)] * 3
    index[axis] = 5  # a one-voxel-thick plate across ``axis``: every voxel is surface
    truth[tuple(index)] = True
    pred = np.roll(truth, 3, axis=axis)  # every surface voxel is 3 voxels from the other plate
    assert hausdorff95(pred, truth, spacing) == pytest.approx(3 * spacing[axis], rel=1e-6)
    assert hausdorff95(truth, truth, spacing) == 0.0


def test_hd95_empty_conventions():
    empty, blob = np.zeros((10, 10, 10), bool), np.zeros((10, 10, 10), bool)
    blob[3:6, 3:7, 2:8] = True
    assert math.isnan(hausdorff95(empty, empty))  # no surface at all: undefined
    assert math.isnan(hausdorff95(empty, blob))  # nothing predicted: undefined, not a large number
    assert math.isnan(hausdorff95(blob, empty))
    with pytest.raises(ValueError, match="shape"):
        hausdorff95(blob, blob[:5])
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95(blob, blob, (1.0, 1.0))


def test_case_metrics_and_summary_count_undefined_hd95_as_nan():
    truth = np.zeros((12, 12, 12), np.uint8)
    truth[3:6, 3:9, 3:9], truth[6:9, 3:9, 3:9] = 1, 2
    names = {0: "background", 1: "anterior", 2: "posterior"}
    good = case_metrics(truth, truth, (1.0, 1.0, 2.0), names)
    assert (good["dice_whole"], good["dice_anterior"], good["hd95_whole_mm"]) == (1.0, 1.0, 0.0)
    assert good["volume_pred_mm3"] == good["volume_true_mm3"] == 6 * 6 * 6 * 2.0
    missed = case_metrics(np.zeros_like(truth), truth, (1.0, 1.0, 2.0), names)
    assert missed["dice_whole"] == 0.0 and math.isnan(missed["hd95_whole_mm"])
    summary = summarise([good, missed])
    assert summary["n_cases"] == 2
    assert summary["dice_whole"] == {"mean": 0.5, "median": 0.5, "n_nan": 0}
    assert summary["hd95_whole_mm"] == {"mean": 0.0, "median": 0.0, "n_nan": 1}  # NaN excluded, and counted


# ------------------------------------------------------------------------------------------- the doors


def test_evaluator_handlers_compute_the_same_numbers(tmp_path):
    """The bundle's doors on an ignite engine: ``whole_dice_handler`` (validation key metric) and
    ``CaseMetricsWriter`` (evaluate.json: HD95 in mm through the label's affine) give metrics.dice/hausdorff95."""
    import csv

    from ignite.engine import Engine
    from monai.data import MetaTensor
    from monai.handlers import from_engine
    from monai.networks.utils import one_hot

    from hipposeg.evaluation import CaseMetricsWriter
    from hipposeg.training import whole_dice_handler

    rng = np.random.default_rng(11)
    affine = torch.diag(torch.tensor([0.7, 0.9, 2.5, 1.0], dtype=torch.float64))
    cases = []
    for n in range(2):
        truth = random_blob(rng) * rng.integers(1, 3, size=(26, 22, 18))
        pred = random_blob(rng) * rng.integers(1, 3, size=(26, 22, 18))
        meta = {"filename_or_obj": f"/data/case{n}.nii.gz"}
        cases.append((MetaTensor(torch.as_tensor(pred)[None], affine=affine, meta=dict(meta)),
                      MetaTensor(torch.as_tensor(truth)[None], affine=affine, meta=dict(meta))))

    engine = Engine(lambda e, batch: [{"pred": batch[0], "label": batch[1]}])
    writer = CaseMetricsWriter(str(tmp_path), {0: "background", 1: "anterior", 2: "posterior"})
    writer.attach(engine)
    engine.run(cases, max_epochs=1)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    for row, (pred, truth) in zip(rows, cases):
        p, t = pred.numpy()[0], truth.numpy()[0]
        assert float(row["dice_whole"]) == pytest.approx(dice(p > 0, t > 0), rel=1e-5)
        assert float(row["dice_posterior"]) == pytest.approx(dice(p == 2, t == 2), rel=1e-5)
        assert float(row["hd95_whole_mm"]) == pytest.approx(hausdorff95(p > 0, t > 0, (0.7, 0.9, 2.5)), rel=1e-5)

    one_hot_case = lambda x: one_hot(x.as_tensor()[None].long(), num_classes=3)[0]  # noqa: E731
    validator = Engine(lambda e, batch: [{"pred": one_hot_case(batch[0]), "label": one_hot_case(batch[1])}])
    whole_dice_handler(output_transform=from_engine(["pred", "label"])).attach(validator, "val_whole_dice")
    validator.run(cases, max_epochs=1)
    expected = np.mean([dice(p.numpy() > 0, t.numpy() > 0) for p, t in cases])
    assert validator.state.metrics["val_whole_dice"] == pytest.approx(expected, abs=1e-6)
