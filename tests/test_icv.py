"""Intracranial volume: eTIV from the registration's determinant, the refined template mask, and their QC.

Three registrations of one whole-head scan (colin27): the original, a copy scaled by 1.1 along every axis (the
same voxels with 1.1 mm spacing), and a rigidly moved copy resampled onto another grid. About 5-10 s each on
2 busy cores.
"""

from __future__ import annotations

import numpy as np
import pytest

from hipposeg.data.readers import Image, read_image
from hipposeg.fullhead.evaluation import move_and_regrid
from hipposeg.fullhead import icv
from hipposeg.fullhead.icv import (
    ADULT_ETIV_RANGE_MM3,
    etiv_columns,
    etiv_mm3,
    icv_flags,
    intracranial_mask,
    intracranial_volume,
    template_icv_mm3,
)
from hipposeg.fullhead.registration import register_to_template
from hipposeg.fullhead.template import load_template
from hipposeg.qc_flags import QC_FLAGS

SUBJECT = "colin27"
_CACHE: dict = {}


@pytest.fixture(scope="module")
def head(data_root) -> Image:
    path = data_root / "fullhead" / SUBJECT / "t1.nii.gz"
    assert path.is_file(), f"full-head test data not found: {path}"
    return read_image(path)


def _icv(key: str, image: Image) -> dict:
    """Registration and intracranial volume of ``image``, computed once per key."""
    if key not in _CACHE:
        reg = register_to_template(image)
        _CACHE[key] = {"registration": reg, **intracranial_volume(image, reg)}
    return _CACHE[key]


def _scaled(image: Image, factor: float) -> Image:
    affine = np.asarray(image.affine, dtype=np.float64).copy()
    affine[:3, :3] *= factor  # the same voxels, each `factor` times larger along every axis
    return Image(np.asarray(image.array), affine, path=f"{image.path}#x{factor}")


def _about_brain_centre(matrix: np.ndarray, factor: float) -> np.ndarray:
    """``matrix`` (MNI -> scan) followed by a scaling by ``factor`` about the scan point of MNI (0, -18, 18)."""
    centre = matrix[:3, :3] @ np.array([0.0, -18.0, 18.0]) + matrix[:3, 3]
    scale = np.eye(4)
    scale[:3, :3] *= factor
    scale[:3, 3] = centre - factor * centre
    return scale @ matrix


def test_template_constant_is_the_template_brain_mask():
    from nilearn.datasets import load_mni152_brain_mask

    nilearn_mask = np.asarray(load_mni152_brain_mask(resolution=1).dataobj) > 0
    assert template_icv_mm3() == pytest.approx(float(nilearn_mask.sum()))  # 1 mm voxels
    assert 1.8e6 < template_icv_mm3() < 2.0e6
    assert etiv_mm3(np.eye(4)) == pytest.approx(template_icv_mm3())


def test_refinement_recovers_the_template_mask():
    """On the template itself the intensity refinement finds the template's own mask (the calibration step)."""
    tpl = load_template()
    refined, voxel_mm3 = intracranial_mask(Image(tpl.array, tpl.affine), np.eye(4))
    assert voxel_mm3 == pytest.approx(icv.WORK_MM ** 3)
    assert 0.93 < refined.sum() * voxel_mm3 / template_icv_mm3() < 1.0


def test_real_head_estimates_agree_and_are_adult(head):
    result = _icv("original", head)
    lo, hi = ADULT_ETIV_RANGE_MM3
    assert lo < result["etiv_mm3"] < hi
    assert result["icv_mask_to_etiv"] == pytest.approx(1.0, abs=0.1)
    assert result["flags"] == []


def test_scaled_head_has_scaled_etiv(head):
    base = _icv("original", head)
    scaled = _icv("scaled", _scaled(head, 1.1))
    assert scaled["etiv_mm3"] / base["etiv_mm3"] == pytest.approx(1.1 ** 3, rel=0.02)
    assert scaled["icv_mask_mm3"] / base["icv_mask_mm3"] == pytest.approx(1.1 ** 3, rel=0.03)


def test_rigidly_moved_head_keeps_its_etiv(head):
    base = _icv("original", head)
    moved, _, info = move_and_regrid(head, head, np.random.default_rng([7, 0]))
    assert info["rotation_deg"] > 10 and info["translation_mm"] > 10
    result = _icv("moved", moved)
    assert result["etiv_mm3"] / base["etiv_mm3"] == pytest.approx(1.0, rel=0.01)
    assert result["icv_mask_mm3"] / base["icv_mask_mm3"] == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("factor", [0.9, 1.12])
def test_wrongly_scaled_registration_is_flagged(head, factor):
    """A registration whose scale is wrong by ~10 % per axis moves eTIV but not the refined mask."""
    good = _icv("original", head)
    wrong = intracranial_volume(head, _about_brain_centre(good["registration"].matrix_ras, factor))
    assert wrong["etiv_mm3"] / good["etiv_mm3"] == pytest.approx(factor ** 3, rel=1e-6)
    assert wrong["icv_mask_mm3"] / good["icv_mask_mm3"] == pytest.approx(1.0, abs=0.08)
    assert "icv_estimates_disagree" in wrong["flags"]


def test_flags_without_registration():
    assert icv_flags(1.4e6, 1.45e6, 1.2) == []
    assert icv_flags(0.7e6, 0.72e6, 2.5) == ["etiv_out_of_range"]
    assert icv_flags(1.4e6, 1.4e6, -1.2) == ["registration_mirrored"]
    assert icv_flags(1.2e6, 1.8e6, 1.5) == ["icv_estimates_disagree"]  # mask / eTIV = 1.50
    assert icv_flags(1.2e6, 1.37e6, 1.5) == []  # 1.14: within the tolerance
    assert set(icv_flags(2e6, 1e6, -1.0)) <= set(QC_FLAGS)  # codes of the one table


def test_etiv_columns():
    row = {"volume_left_mm3": 3000.0, "volume_right_mm3": 2800.0, "volume_total_mm3": 5800.0,
           "volume_left_anterior_mm3": ""}
    cols = etiv_columns(row, {"etiv_mm3": 1.5e6, "icv_mask_mm3": 1.45e6})
    assert cols["etiv_mm3"] == 1.5e6 and cols["icv_mask_mm3"] == 1.45e6
    assert cols["volume_left_etiv_fraction"] == pytest.approx(0.002)
    assert cols["volume_total_etiv_fraction"] == pytest.approx(5800.0 / 1.5e6)
    assert "volume_left_anterior_etiv_fraction" not in cols


def test_t1_contrast_check(head):
    """T1 heads have white matter brighter than grey matter; the same head with inverted contrast (as a T2-like
    image) is refused in one line, before any segmentation."""
    from hipposeg.errors import InputError

    image = head
    reg = _icv("original", head)["registration"]
    assert 1.2 < icv.check_t1_weighted(image, reg) < 1.6
    inverted = Image(float(image.array.max()) - np.asarray(image.array, dtype=np.float32), image.affine, path="t2.nii.gz")
    with pytest.raises(InputError, match="t2.nii.gz: does not look T1-weighted"):
        icv.check_t1_weighted(inverted, reg)


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.875, 2.0, 2.4)])
def test_itk_distance_morphology_equals_scipy_edt(spacing):
    """The refinement's ball dilation / erosion run on ITK's Maurer distance map (4-5x faster); the same voxels as
    scipy's exact EDT, which they replaced, on an anisotropic grid and with the array border as background."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    mask = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((40, 46, 38)), 3) > 0.5)
    mask[:, :, 0] = True  # touches the border: erosion must treat outside as background
    for mm in (2.0, 4.0, 10.0):
        grown = ndimage.distance_transform_edt(~mask, sampling=spacing) <= mm
        shrunk = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1] > mm
        assert np.array_equal(icv._grow(mask, mm, spacing), grown)
        assert np.array_equal(icv._shrink(mask, mm, spacing), shrunk)
    assert not icv._grow(np.zeros((5, 5, 5), bool), 4.0, spacing).any()


def test_template_sampling_matches_trilinear_interpolation():
    """The template maps are sampled with SimpleITK's resampler; at the voxels of a rotated, scaled 2 mm grid it
    gives scipy's trilinear interpolation of the same map."""
    from scipy import ndimage

    tpl = load_template()
    angle = np.deg2rad(12.0)
    matrix = np.eye(4)  # MNI -> scan: a rotation about z, 5 % larger, shifted
    matrix[:2, :2] = 1.05 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix[:3, 3] = [4.0, -7.0, 3.0]
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-70.0, -100.0, -60.0]
    grid = Image(np.zeros((70, 80, 70), np.float32), affine)
    got = icv._template_on_grid("brain_mask", matrix, grid)
    vox = np.linalg.inv(tpl.affine) @ np.linalg.inv(matrix) @ grid.affine
    points = np.indices(grid.shape).reshape(3, -1).astype(np.float64)
    want = ndimage.map_coordinates(tpl.brain_mask.astype(np.float32), vox[:3, :3] @ points + vox[:3, 3:4], order=1,
                                   mode="constant", cval=0.0).reshape(grid.shape)
    assert got.shape == grid.shape
    assert np.abs(got - want).max() < 1e-4
    assert ((got > 0.5) != (want > 0.5)).sum() <= 2
