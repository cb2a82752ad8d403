"""Which way do the Task04 hippocampus crops face, and must right hippocampi be mirrored to look like them?

Run: ``python bench/archive/task04_orientation.py [--data-root DIR]``; writes
``bench/archive/task04_orientation.json`` (a frozen one-off: the evidence, kept beside its script). Reads only labels. Evidence used by ``hipposeg.fullhead``:

1. Axes of the crops (from the Task04 labels alone): the centroid of label 2 ("posterior") minus that
   of label 1 ("anterior"), in array axes, over all crops. A consistent sign along axis 1 says axis 1
   is the antero-posterior axis and which end is anterior; along axis 2, the posterior part (body/tail)
   lying higher says axis 2 runs inferior -> superior.
2. Handedness: in a RAS head the posterior third of a left hippocampus lies lateral (lower x) to its
   anterior third and that of a right one at higher x. This is measured on the labelled full-head scans
   (in world RAS coordinates) and, for every Task04 crop, along array axis 0. One sign in (nearly) all
   crops means one handedness throughout: the right hippocampi were mirrored (or all crops show the
   same side).
3. Shape: every Task04 label (centred on its centroid) is correlated with the mean shape of the real
   left hippocampi plus mirrored real right hippocampi of the full-head scans (1 mm RAS grid), and with
   that mean mirrored along x. A crop is "left-like" when the first correlation is higher.

The full-head scans serve only as anatomical references here (signs, shapes), nothing is fitted on them.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

HALF = 32  # shapes compared on a 64^3 grid centred on the centroid


def third_shift(points: np.ndarray, ap_axis: int = 1) -> np.ndarray:
    """Centroid of the posterior third minus that of the anterior third (points (N, 3), +ap = anterior)."""
    ap = points[:, ap_axis]
    lo, hi = np.percentile(ap, [100 / 3, 200 / 3])
    return points[ap <= lo].mean(axis=0) - points[ap >= hi].mean(axis=0)


def centred(mask_points: np.ndarray) -> np.ndarray:
    """A 64^3 occupancy grid of integer points centred on their (rounded) centroid."""
    grid = np.zeros((2 * HALF,) * 3, dtype=np.float32)
    idx = np.round(mask_points - mask_points.mean(axis=0)).astype(int) + HALF
    keep = np.all((idx >= 0) & (idx < 2 * HALF), axis=1)
    grid[tuple(idx[keep].T)] = 1.0
    return grid


def ras_grid(label: np.ndarray, affine: np.ndarray, value: int) -> np.ndarray:
    """The hippocampus ``value`` resampled onto a 1 mm RAS grid centred on its centroid (64^3)."""
    ijk = np.argwhere(label == value)
    centre = (ijk @ affine[:3, :3].T + affine[:3, 3]).mean(axis=0)
    grid = np.indices((2 * HALF,) * 3, dtype=np.float64).reshape(3, -1) - HALF
    world = grid + centre[:, None]
    inv = np.linalg.inv(affine)
    src = inv[:3, :3] @ world + inv[:3, 3:4]
    mask = (label == value).astype(np.float32)
    return ndimage.map_coordinates(mask, src, order=1).reshape((2 * HALF,) * 3)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None, help="default: hipposeg's data-root resolution")
    parser.add_argument("--out", default=str(Path(__file__).parent / "task04_orientation.json"))
    args = parser.parse_args(argv)
    from hipposeg.data.manifest import resolve_data_root

    root = Path(resolve_data_root(args.data_root))

    # full-head references, world RAS
    references = {}
    shapes = []
    for subject in ("colin27", "candi030", "bert"):
        path = root / "fullhead" / subject / "hippocampus_lr.nii.gz"
        if not path.exists():
            continue
        img = nib.load(str(path))
        lab = np.asarray(img.dataobj)
        for value, side in ((1, "left"), (2, "right")):
            world = nib.affines.apply_affine(img.affine, np.argwhere(lab == value))
            references[f"{subject}_{side}"] = {"posterior_minus_anterior_third_mm": third_shift(world).round(2).tolist()}
            shape = ras_grid(lab, img.affine, value)
            shapes.append(shape if side == "left" else shape[::-1])  # mirror right ones onto left
    left_like = np.mean(shapes, axis=0) if shapes else None

    # Task04 crops, array axes
    files = sorted(glob.glob(str(root / "msd_hippocampus" / "labelsTr" / "*.nii.gz")))
    ant_post, shifts, votes, margins = [], [], [], []
    affines_identity = 0
    for f in files:
        img = nib.load(f)
        lab = np.asarray(img.dataobj)
        affines_identity += int(np.allclose(img.affine[:3, :3], np.eye(3)))
        p1, p2 = np.argwhere(lab == 1), np.argwhere(lab == 2)
        ant_post.append(p2.mean(axis=0) - p1.mean(axis=0))
        pts = np.argwhere(lab > 0).astype(np.float64)
        shifts.append(third_shift(pts))
        if left_like is not None:
            g = centred(pts)
            votes.append(corr(g, left_like) - corr(g, left_like[::-1]))
    ant_post, shifts, votes = np.array(ant_post), np.array(shifts), np.array(votes)

    result = {
        "n_crops": len(files),
        "crops_with_identity_direction": affines_identity,
        "label2_minus_label1_centroid_voxels": {
            "mean": ant_post.mean(axis=0).round(2).tolist(),
            "std": ant_post.std(axis=0).round(2).tolist(),
            "axis1_negative": int((ant_post[:, 1] < 0).sum()),
            "axis2_positive": int((ant_post[:, 2] > 0).sum()),
        },
        "posterior_minus_anterior_third_axis0_voxels": {
            "mean": float(shifts[:, 0].mean().round(2)),
            "std": float(shifts[:, 0].std().round(2)),
            "negative": int((shifts[:, 0] < 0).sum()),
            "positive": int((shifts[:, 0] > 0).sum()),
            "histogram_edges": [-6, -4, -2, 0, 2, 4, 6],
            "histogram": np.histogram(shifts[:, 0], bins=[-6, -4, -2, 0, 2, 4, 6])[0].tolist(),
        },
        "fullhead_references_ras": references,
    }
    if votes.size:
        result["shape_vote"] = {
            "left_like": int((votes > 0).sum()),
            "right_like": int((votes < 0).sum()),
            "mean_corr_difference": float(votes.mean().round(4)),
        }
        # the same vote for the references themselves (sanity: left ones left-like, right ones right-like)
        ref_votes = {}
        for subject in ("colin27", "candi030", "bert"):
            path = root / "fullhead" / subject / "hippocampus_lr.nii.gz"
            if not path.exists():
                continue
            img = nib.load(str(path))
            lab = np.asarray(img.dataobj)
            for value, side in ((1, "left"), (2, "right")):
                s = ras_grid(lab, img.affine, value)
                others = [sh for k, sh in enumerate(shapes) if k != len(ref_votes)]  # leave this one out
                ll = np.mean(others, axis=0)
                ref_votes[f"{subject}_{side}"] = round(corr(s, ll) - corr(s, ll[::-1]), 4)
        result["shape_vote_references_leave_one_out"] = ref_votes
    left_like_crops = result.get("shape_vote", {}).get("left_like", 0)
    result["conclusion"] = (
        "Task04 arrays: axis 1 posterior->anterior, axis 2 inferior->superior, and every crop has the "
        "handedness of a LEFT hippocampus in RAS axes (axis 0 = +x); right hippocampi must be mirrored "
        "along x to look like the training crops."
        if result["posterior_minus_anterior_third_axis0_voxels"]["negative"] > 0.85 * len(files)
        and left_like_crops > 0.85 * len(files)
        else "inconclusive: see the numbers"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
