"""Tests of hipposeg.qc_picture: reorientation to RAS, the three QC views and the QC picture."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
from label_fixture import AP, LR, lia_affine

from hipposeg.errors import OutputExistsError
from hipposeg.qc_picture import qc_views, reorient_to_ras, save_qc_png


def _lia_case():
    """An LIA volume (20 x 30 x 16, 0.94 x 0.94 x 1.5 mm) with a label in the patient's left, superior,
    anterior octant."""
    shape = (20, 30, 16)
    affine = lia_affine(shape)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[13:17, 4:9, 11:14] = 1  # high i = Left, low j = Superior, high k = Anterior
    return seg, affine


def test_reorient_lia_to_ras_puts_the_label_on_the_correct_side():
    seg, affine = _lia_case()
    world = (affine @ np.append(np.mean(np.nonzero(seg), axis=1), 1))[:3]
    assert world[0] < 0 and world[1] > 0 and world[2] > 0  # left, anterior, superior in world space

    ras, ras_affine, spacing = reorient_to_ras(seg, affine)
    assert nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    assert ras.shape == (20, 16, 30)
    assert spacing == pytest.approx((0.94, 1.5, 0.94))
    assert ras.sum() == seg.sum()
    centre = np.mean(np.nonzero(ras), axis=1)
    assert centre[0] < ras.shape[0] / 2  # x index grows towards Right: left half = low x
    assert centre[1] > ras.shape[1] / 2  # anterior
    assert centre[2] > ras.shape[2] / 2  # superior
    # same world point before and after
    assert np.allclose((ras_affine @ np.append(centre, 1))[:3], world)


def test_qc_views_show_anatomical_directions_and_true_aspect():
    seg, affine = _lia_case()
    image = np.random.default_rng(0).normal(100, 10, seg.shape)
    views = {v["name"]: v for v in qc_views(image, seg, affine, min_fov_mm=None)}

    def where(view):  # label centre as fractions of (width, height), height counted from the bottom
        rows, cols = np.nonzero(view["seg"])
        return cols.mean() / view["seg"].shape[1], rows.mean() / view["seg"].shape[0]

    axial, coronal, sagittal = views["Axial"], views["Coronal"], views["Sagittal"]
    assert axial["edges"] == ("L", "R", "P", "A")
    h, v = where(axial)
    assert h < 0.5 and v > 0.5  # patient's left on the left, anterior at the top
    assert coronal["edges"] == ("L", "R", "I", "S")
    h, v = where(coronal)
    assert h < 0.5 and v > 0.5  # left, superior
    assert sagittal["edges"] == ("P", "A", "I", "S")
    h, v = where(sagittal)
    assert h > 0.5 and v > 0.5  # anterior on the right, superior at the top

    # extents are in mm: 20 voxels x 0.94 mm wide (x), 16 x 1.5 mm tall (y) in the axial view
    x0, x1, y0, y1 = axial["extent"]
    assert x1 - x0 == pytest.approx(20 * 0.94) and y1 - y0 == pytest.approx(16 * 1.5)
    assert axial["image"].shape == (16, 20)
    assert sagittal["image"].shape == (30, 16)
    for view in views.values():  # every view cuts through the label
        assert view["seg"].any()


# ---------------------------------------------------------------------------------------------- PNG


@pytest.mark.parametrize("shape", [(35, 50, 35), (96, 96, 64)])
def test_qc_png_written_valid_and_not_overwritten(tmp_path, shape):
    from matplotlib.image import imread

    rng = np.random.default_rng(1)
    image = rng.normal(100, 20, shape).astype(np.float32)
    seg = np.zeros(shape, dtype=np.uint8)
    c = [s // 2 for s in shape]
    seg[c[0] - 4 : c[0], c[1] - 6 : c[1] + 6, c[2] - 3 : c[2] + 3] = 1
    seg[c[0] : c[0] + 4, c[1] - 6 : c[1] + 6, c[2] - 3 : c[2] + 3] = 2
    affine = lia_affine(shape)
    out = tmp_path / "qc" / "case.png"
    assert save_qc_png(image, seg, affine, out, LR, title="case") == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(out)
    assert pixels.shape[:2] == (385, 990)  # 9 x 3.5 inches at 110 dpi
    red = (pixels[..., 0] > 0.8) & (pixels[..., 1] < 0.35) & (pixels[..., 2] < 0.35)
    assert red[int(0.17 * 385) : int(0.83 * 385)].any()  # the label-1 outline is drawn in the panels
    assert os.listdir(out.parent) == ["case.png"]

    before = out.read_bytes()
    with pytest.raises(OutputExistsError):
        save_qc_png(image, seg, affine, out, LR, title="case")
    assert out.read_bytes() == before and os.listdir(out.parent) == ["case.png"]


def test_qc_png_for_empty_mask(tmp_path):
    from matplotlib.image import imread

    image = np.random.default_rng(2).normal(size=(30, 30, 30))
    out = save_qc_png(image, np.zeros((30, 30, 30), np.uint8), np.eye(4), tmp_path / "e.png", AP, title="e")
    assert imread(out).shape[:2] == (385, 990)


def _magenta(pixels: np.ndarray) -> np.ndarray:
    """Where the translucent magenta shading of uncertain voxels lies over the gray image (red and blue equal and
    well above green; the red and cyan outlines are not)."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return (r - g > 0.25) & (b - g > 0.25) & (np.abs(r - b) < 0.1)


def test_qc_views_cut_the_uncertainty_map_like_the_labels():
    seg, affine = _lia_case()
    image = np.random.default_rng(0).normal(100, 10, seg.shape)
    uncertainty = np.where(seg > 0, 1.2, 0.0).astype(np.float32)
    for view in qc_views(image, seg, affine, uncertainty=uncertainty):
        np.testing.assert_array_equal(view["uncertainty"] > 0, view["seg"] > 0)  # same cut, same orientation
    assert all(view["uncertainty"] is None for view in qc_views(image, seg, affine))
    with pytest.raises(ValueError, match="uncertainty map"):
        qc_views(image, seg, affine, uncertainty=uncertainty[:-1])


def test_qc_png_shades_the_uncertain_voxels_with_a_legend_line(tmp_path):
    from matplotlib.image import imread

    from hipposeg.confidence import UNCERTAIN_ABOVE_BITS

    shape = (35, 50, 35)
    image = np.random.default_rng(1).normal(100, 20, shape).astype(np.float32)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[12:22, 15:35, 12:22] = 1
    seg[12:22, 25:35, 12:22] = 2
    uncertainty = np.zeros(shape, np.float32)
    uncertainty[12:22, 22:28, 12:22] = UNCERTAIN_ABOVE_BITS + 0.3  # the head/body boundary: 600 voxels
    uncertainty[12:22, 15:18, 12:22] = UNCERTAIN_ABOVE_BITS - 0.1  # below the threshold: not shaded
    affine = lia_affine(shape)
    shaded = imread(save_qc_png(image, seg, affine, tmp_path / "u.png", LR, title="u", uncertainty=uncertainty))
    plain = imread(save_qc_png(image, seg, affine, tmp_path / "p.png", LR, title="p"))
    assert shaded.shape[:2] == plain.shape[:2] == (385, 990)  # the same size with the legend's second line
    panels = slice(int(0.17 * 385), int(0.80 * 385))
    assert _magenta(shaded[panels]).sum() > 200 and not _magenta(plain[panels]).any()
    assert _magenta(shaded[int(0.9 * 385):]).any() and not _magenta(plain[int(0.9 * 385):]).any()  # legend entry
    # nothing above the threshold: no shading, the legend says 0 mm3
    calm = imread(save_qc_png(image, seg, affine, tmp_path / "c.png", LR, uncertainty=np.minimum(uncertainty, 0.4)))
    assert not _magenta(calm[panels]).any()
