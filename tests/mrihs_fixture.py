"""A small synthetic copy of the Kaggle "mrihs" layout, with real JPEG files, for importer and bundle tests.

    info = make_mrihs_fixture(tmp_path / "kaggle")
    import_mrihs(info["root"], tmp_path / "mrihs", progress=False)

Layout and names follow the Kaggle archive (see hipposeg/data/mrihs.py)::

    original/100/<subject>/<subject>_NNN.jpg          label/100label/<subject>/<name5>_{L,R}/<name5>_{L,R}_NNN.jpg
    original/35/<subject>/<subject>_NNN.jpg           label/35label/<subject>/...

Slice numbers start at 001. Images are smooth (low-frequency) 8-bit patterns that move from slice to slice, so
JPEG error is small and a wrong slice order shows. Masks are pure 0/255 ellipses: the left hippocampus in the low
columns, the right one in the high columns, on the middle slices only; empty slices are uniform black.
The first test subject (``..._tal_noscale``) is saved as 3-channel (RGB) JPEGs, the others as grayscale.
With ``missing_right=True`` the second training subject (the first if there is only one),
``ADNI_013_S_0325_85153_ACPC`` as in the real data, has no ``_R`` mask folder, so ``n_train - 1`` training
subjects are importable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

TRAIN_NAMES = ["ADNI_007_S_4387_269929_ACPC", "ADNI_013_S_0325_85153_ACPC", "ADNI_002_S_0295_40966_ACPC"]
TEST_NAMES = ["ADNI_003_S_1074_32035_tal_noscale", "ADNI_012_S_1321_99348_ACPC", "ADNI_002_S_1261_223901_ACPC"]
BROKEN_NAME = "ADNI_013_S_0325_85153_ACPC"
JPEG_QUALITY = 95


def name5(subject: str) -> str:
    """The mask-folder stem: the first five underscore-separated parts of a subject folder name."""
    return "_".join(subject.split("_")[:5])


def _names(base: list[str], n: int, site0: int) -> list[str]:
    extra = [f"ADNI_{site0 + i:03d}_S_{4100 + i:04d}_{70000 + i}_ACPC" for i in range(max(0, n - len(base)))]
    return (base + extra)[:n]


def _image(rng: np.random.Generator, n_slices: int, rows: int, cols: int) -> np.ndarray:
    """Smooth 8-bit content, (n_slices, rows, cols): a soft ellipse ("head") times slowly moving waves."""
    r = np.arange(rows, dtype=np.float64)[:, None]
    c = np.arange(cols, dtype=np.float64)[None, :]
    phase = rng.uniform(0, 2 * np.pi, size=4)
    period_r, period_c = max(rows, 16) / 2.5, max(cols, 16) / 2.5
    ellipse = ((r - rows / 2) / (0.45 * rows)) ** 2 + ((c - cols / 2) / (0.45 * cols)) ** 2
    head = 1.0 / (1.0 + np.exp((ellipse - 1.0) * 6.0))  # soft edge
    out = np.empty((n_slices, rows, cols), dtype=np.uint8)
    for k in range(n_slices):
        shift = 0.9 * k  # patterns move ~1 px per slice and change phase: neighbouring slices differ
        waves = (np.sin(2 * np.pi * (c + 2 * shift) / period_c + phase[0] + 0.4 * k)
                 * np.cos(2 * np.pi * (r - shift) / period_r + phase[1])
                 + 0.5 * np.sin(2 * np.pi * (r + c) / (period_r + period_c) + phase[2] + 0.3 * k))
        value = 25 + head * (120 + 55 * waves)
        out[k] = np.clip(np.rint(value), 0, 255).astype(np.uint8)
    return out


def _masks(rng: np.random.Generator, n_slices: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Left (low columns) and right (high columns) ellipses on the middle slices, (n_slices, rows, cols) bool."""
    left = np.zeros((n_slices, rows, cols), dtype=bool)
    right = np.zeros_like(left)
    r = np.arange(rows, dtype=np.float64)[:, None]
    c = np.arange(cols, dtype=np.float64)[None, :]
    first, last = n_slices // 4, n_slices - n_slices // 4  # slices [first, last) carry hippocampi
    jitter = rng.uniform(-0.03, 0.03, size=4)
    for k in range(first, last):
        t = (k - first + 0.5) / max(last - first, 1)
        scale = 0.6 + 0.4 * np.sin(np.pi * t)  # grows, then shrinks
        rad_r, rad_c = max(2.5, 0.08 * rows * scale), max(2.5, 0.06 * cols * scale)
        for mask, centre_c, dr in ((left, 0.35 + jitter[0], jitter[1]), (right, 0.65 + jitter[2], jitter[3])):
            centre_r = (0.55 + dr) * rows
            mask[k] = ((r - centre_r) / rad_r) ** 2 + ((c - centre_c * cols) / rad_c) ** 2 <= 1.0
    return left, right


def _save(array: np.ndarray, path: Path, rgb: bool) -> None:
    im = PILImage.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    if rgb:
        im = im.convert("RGB")
    im.save(path, format="JPEG", quality=JPEG_QUALITY)


def make_mrihs_fixture(
    root: Path,
    n_train: int = 3,
    n_test: int = 2,
    n_slices: int = 12,
    rows: int = 233,
    cols: int = 197,
    seed: int = 0,
    *,
    missing_right: bool = True,
) -> dict:
    """Write the synthetic Kaggle tree under ``root`` and return what was built.

    Returns a dict with:
    ``root`` (Path); ``train`` / ``test`` (subject names, sorted as the folders are listed);
    ``broken`` ({subject: what is wrong}, empty when ``missing_right=False``);
    ``good_train`` (training subjects that can be imported); ``rgb`` (subjects saved as 3-channel JPEGs);
    ``images`` / ``left`` / ``right`` ({subject: array}) -- the source arrays before JPEG compression, uint8 and
    bool, shaped (n_slices, rows, cols), i.e. slice index, PIL row, PIL column;
    ``volume_shape`` ((cols, rows, n_slices), the shape of an imported volume);
    ``slice_numbers`` (the NNN of the files, 1..n_slices).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    train = _names(TRAIN_NAMES, n_train, 101)
    test = _names(TEST_NAMES, n_test, 201)
    broken = {}
    if missing_right and train:
        victim = BROKEN_NAME if BROKEN_NAME in train else train[0]
        broken[victim] = "no _R mask folder"
    rgb = [test[0]] if test else []
    info = {
        "root": root, "train": sorted(train), "test": sorted(test), "broken": broken,
        "good_train": sorted(s for s in train if s not in broken), "rgb": rgb,
        "images": {}, "left": {}, "right": {},
        "volume_shape": (cols, rows, n_slices), "slice_numbers": list(range(1, n_slices + 1)),
    }
    for subjects, set_name, label_set in ((train, "100", "100label"), (test, "35", "35label")):
        for subject in subjects:
            image = _image(rng, n_slices, rows, cols)
            left, right = _masks(rng, n_slices, rows, cols)
            info["images"][subject], info["left"][subject], info["right"][subject] = image, left, right
            image_dir = root / "original" / set_name / subject
            image_dir.mkdir(parents=True)
            stem = name5(subject)
            sides = [("L", left)] + ([] if subject in broken else [("R", right)])
            mask_dirs = {}
            for side, _ in sides:
                mask_dirs[side] = root / "label" / label_set / subject / f"{stem}_{side}"
                mask_dirs[side].mkdir(parents=True)
            as_rgb = subject in rgb
            for k in range(n_slices):
                number = k + 1
                _save(image[k], image_dir / f"{subject}_{number:03d}.jpg", as_rgb)
                for side, mask in sides:
                    _save(mask[k].astype(np.uint8) * 255, mask_dirs[side] / f"{stem}_{side}_{number:03d}.jpg", as_rgb)
    return info
