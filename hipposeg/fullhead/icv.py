"""Intracranial volume of a whole-head scan, two ways, with QC: eTIV from the registration, and a mask.

hipposeg registers every whole-head T1 to the ICBM152 2009a template (:mod:`hipposeg.fullhead.registration`).
From that one affine this module gives two independent estimates of the intracranial volume and checks them
against each other, so a failed registration shows up as a flag instead of a silently wrong eTIV (the failure
users of FreeSurfer report, e.g. FastSurfer issues #800 and #378).

1. eTIV, the atlas-scaling method (Buckner et al. 2004, NeuroImage 23:724-738; FreeSurfer's ``mri_segstats
   --etiv``). The determinant of the affine that maps the scan onto the atlas, the *atlas scaling factor*
   ``ASF = det(A_scan->template)``, says how much the head had to be grown or shrunk to match the atlas, so
   ``eTIV = c / ASF`` with ``c`` the intracranial volume of the atlas itself. FreeSurfer's ``c = 1948106 mm3``
   belongs to its MNI305 target (``talairach.xfm``) and must not be reused with another template. Here ``c`` is
   measured on the template we register to: :func:`template_icv_mm3` is the volume of the template's own brain
   mask (nilearn's ``load_mni152_brain_mask``: the ICBM152 2009a T1 thresholded at 0.2; the template is
   already masked, and that mask holds brain, ventricles and most sulcal CSF, 1,882,989 mm3 at 1 mm). Since
   ``A_scan->template`` is the inverse of :attr:`RegistrationResult.matrix_ras` (MNI -> scan),
   ``eTIV = c * det(matrix_ras)``. A scan scaled by ``s`` along every axis gets ``s**3`` times the eTIV; a
   rigid motion leaves it unchanged (``tests/test_icv.py``).

2. ``icv_mask_mm3``, measured in the scan. The template's brain mask is mapped into the scan (on a grid of about
   :data:`WORK_MM` mm made by block averaging) and then *refined by the scan's own intensities*, so its
   boundary follows this head's brain rather than the affine:

   * the tissue level is the median scan intensity inside the template's white matter (probability >
     :data:`WM_CORE_PROBABILITY` in the ICBM152 2009a WM map shipped with nilearn), mapped into the scan;
   * tissue = voxels brighter than :data:`TISSUE_FRACTION` times that level, within :data:`BAND_MM` of the mapped
     mask (grey matter sits at about 0.75 and CSF at about 0.3 of white matter in the template);
   * the brain is the tissue reachable from the mapped mask's interior after an erosion by :data:`OPEN_MM` (which
     cuts the thin bridges to scalp, marrow and muscle), grown back by the same distance inside the tissue, closed
     by :data:`CLOSE_MM` (sulci) and hole-filled (ventricles).

   The same refinement run on the template itself (identity registration) finds about 96 % of its mask on the
   2 mm grid (the outermost CSF is darker than the threshold); the scan's refined volume is scaled
   by that ratio (:func:`template_refined_mm3`), so on the template both estimates equal ``c`` exactly.

QC (``flags`` in the result: codes of :data:`hipposeg.qc_flags.QC_FLAGS`, where the thresholds live):

* ``icv_estimates_disagree``: the two estimates disagree by more than :data:`AGREEMENT_TOLERANCE` (relative). Measured on the three
  whole-head test scans (``python bench/cohort.py`` prints them): mask / eTIV = 0.99-1.07 (on a 3 mm grid the
  refinement takes half the time, 0.45 s instead of 1 s a head on 2 loaded cores, but follows a wrong affine more:
  a scale wrong by 12 % per axis moved it by 18 % instead of < 8 %, so the 2 mm grid stays). A
  registration wrong by 5 % along each axis moves eTIV by 16 % but the refined mask by little, so it is flagged;
  with a deliberately wrong scale of 0.87 or 1.15 per axis the ratio was 1.44-1.55 and 0.64-0.70.
* ``etiv_out_of_range``: eTIV outside :data:`ADULT_ETIV_RANGE_MM3`, 900,000-1,830,000 mm3. Manual MRI segmentation of 49 healthy adults
  aged 24-80 (Matsumae et al. 1996, J Neurosurg 84:982-991) gave a total intracranial volume of 1,289 +- 111 cm3 in
  women and 1,469 +- 102 cm3 in men; the range is the female mean - 3.5 SD to the male mean + 3.5 SD (a CT study of
  58 adults, Surg Radiol Anat 2010 doi:10.1007/s00276-010-0650-4, found 1,106-1,656 cm3, well inside). Children,
  very large heads, or an eTIV scaled by a failed registration land outside it.
* ``registration_mirrored``: a registration that mirrors the head (negative determinant).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from hipposeg.data.readers import Image, sitk_to_image
from hipposeg.fullhead.registration import RegistrationResult, block_average
from hipposeg.fullhead.template import load_template, nilearn_data_dir
from hipposeg.qc_flags import ADULT_ETIV_RANGE_MM3, AGREEMENT_TOLERANCE  # the flags' thresholds, with their table

__all__ = [
    "ADULT_ETIV_RANGE_MM3",
    "AGREEMENT_TOLERANCE",
    "atlas_scaling_factor",
    "etiv_mm3",
    "icv_mask_mm3",
    "intracranial_mask",
    "intracranial_volume",
    "etiv_columns",
    "template_icv_mm3",
]

_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS
WM_MAP_FILE = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"  # nilearn wheel, beside the T1 template


WORK_MM = 2.0  # grid of the mask refinement (block averages of the scan)
WM_CORE_PROBABILITY = 0.9
TISSUE_FRACTION = 0.5  # of the white-matter level: between CSF (~0.3) and grey matter (~0.75)
BAND_MM = 10.0  # how far the refined boundary may move away from the mapped template mask, either way
OPEN_MM = 4.0
CLOSE_MM = 4.0

#: Volume columns of the volume table that get an eTIV fraction (see :func:`etiv_columns`).
VOLUME_COLUMNS = ("left_anterior", "left_posterior", "right_anterior", "right_posterior", "left", "right", "total")


# ------------------------------------------------------------------------------------------------- template


@lru_cache(maxsize=1)
def template_icv_mm3() -> float:
    """``c`` of eTIV = c / ASF: the volume of the ICBM152 2009a brain mask (1 mm voxels), in mm3."""
    tpl = load_template()
    return float(tpl.brain_mask.sum()) * float(abs(np.linalg.det(tpl.affine[:3, :3])))


@lru_cache(maxsize=2)
def _template_tissue(name: str) -> np.ndarray:
    """An ICBM152 2009a tissue probability map shipped with nilearn (``WM_MAP_FILE``, ``GM_MAP_FILE``), scaled to
    0..1, on the template grid."""
    import nibabel as nib

    path = nilearn_data_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: an ICBM152 2009a tissue map is missing from the nilearn installation")
    prob = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    return prob / prob.max()


def _template_wm() -> np.ndarray:
    """The ICBM152 2009a white-matter probability (0..1) on the template grid."""
    return _template_tissue(WM_MAP_FILE)


@lru_cache(maxsize=1)
def template_refined_mm3() -> float:
    """What :func:`intracranial_mask` measures on the template itself (identity registration), in mm3."""
    tpl = load_template()
    mask, voxel_mm3 = intracranial_mask(Image(tpl.array, tpl.affine), np.eye(4))
    return float(mask.sum()) * voxel_mm3


# ------------------------------------------------------------------------------------------------------ eTIV


def _matrix(registration: RegistrationResult | np.ndarray) -> np.ndarray:
    """The 4x4 MNI mm -> scan RAS mm matrix of a registration result (or the matrix itself)."""
    matrix = registration.matrix_ras if isinstance(registration, RegistrationResult) else registration
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"expected a RegistrationResult or a 4x4 MNI -> scan matrix, got shape {matrix.shape}")
    return matrix


def atlas_scaling_factor(registration: RegistrationResult | np.ndarray) -> float:
    """Buckner's ASF: det of the scan -> template affine (> 1 for a head smaller than the template)."""
    return float(1.0 / np.linalg.det(_matrix(registration)[:3, :3]))


def etiv_mm3(registration: RegistrationResult | np.ndarray) -> float:
    """Estimated total intracranial volume, ``template_icv_mm3() / |ASF|``, in mm3 of the scan."""
    return template_icv_mm3() / abs(atlas_scaling_factor(registration))


# ------------------------------------------------------------------------------------------------------ mask


@lru_cache(maxsize=2)
def _template_map_sitk(name: str):
    """``"brain_mask"`` or ``"white_matter"`` of the template as a SimpleITK float32 image (LPS), built once."""
    from hipposeg.data.readers import image_to_sitk

    tpl = load_template()
    values = tpl.brain_mask if name == "brain_mask" else _template_wm()
    return image_to_sitk(Image(np.asarray(values, dtype=np.float32), tpl.affine))


def _template_on_grid(name: str, matrix: np.ndarray, grid: Image) -> np.ndarray:
    """The template's ``name`` map (:func:`_template_map_sitk`) sampled (trilinear, 0 outside) at the voxels of
    ``grid``, through the MNI -> scan ``matrix``. SimpleITK's resampler (multithreaded): 5x faster than
    ``scipy.ndimage.map_coordinates`` on a head's million voxels."""
    import SimpleITK as sitk

    from hipposeg.data.readers import image_to_sitk

    scan_to_mni_lps = _FLIP @ np.linalg.inv(matrix) @ _FLIP
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([float(v) for v in scan_to_mni_lps[:3, :3].ravel()])
    transform.SetTranslation([float(v) for v in scan_to_mni_lps[:3, 3]])
    reference = image_to_sitk(Image(np.zeros(grid.shape, dtype=np.uint8), np.asarray(grid.affine)))
    out = sitk.Resample(_template_map_sitk(name), reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def _crop_to_template(grid: Image, matrix: np.ndarray, margin_mm: float) -> Image:
    """The part of ``grid`` around the template brain mask mapped through ``matrix``, plus ``margin_mm``.

    Only there can the refined mask lie; cropping the neck and the air around the head makes the distance
    transforms several times faster. The cropped image may be empty when the template lands outside the scan.
    """
    tpl = load_template()
    corners = _template_mask_corners()
    to_grid = np.linalg.inv(grid.affine) @ matrix @ tpl.affine
    points = to_grid[:3, :3] @ corners + to_grid[:3, 3:4]
    margin = np.ceil(margin_mm / np.asarray(grid.spacing)) + 2
    lo = np.clip(np.floor(points.min(axis=1) - margin).astype(int), 0, grid.shape)
    hi = np.clip(np.ceil(points.max(axis=1) + margin).astype(int) + 1, 0, grid.shape)
    affine = np.asarray(grid.affine, dtype=np.float64).copy()
    affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    block = np.asarray(grid.array)[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return Image(np.ascontiguousarray(block), affine, source=grid.source)


@lru_cache(maxsize=1)
def _template_mask_corners() -> np.ndarray:
    """The 8 corners (template voxels, (3, 8)) of the template brain mask's bounding box; read-only."""
    ijk = np.argwhere(load_template().brain_mask)
    corners = np.array(np.meshgrid(*zip(ijk.min(axis=0), ijk.max(axis=0)), indexing="ij")).reshape(3, -1)
    corners.setflags(write=False)
    return corners


def _squared_distance_to(mask: np.ndarray, spacing) -> np.ndarray:
    """Squared Euclidean distance (mm2, anisotropic voxels) of every voxel to the nearest voxel of ``mask`` (0 on
    it): ITK's exact Maurer transform, multithreaded, 4-5x faster than ``scipy.ndimage.distance_transform_edt``
    with the same result (``tests/test_icv.py``)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.asarray(mask, dtype=np.uint8))  # array axes (i, j, k) as ITK's (z, y, x)
    image.SetSpacing([float(s) for s in reversed(tuple(spacing))])
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=True,
                                            useImageSpacing=True)
    return np.maximum(sitk.GetArrayViewFromImage(distance), 0.0)


def _grow(mask: np.ndarray, mm: float, spacing) -> np.ndarray:
    """Dilation by a ball of ``mm`` (exact Euclidean distance, anisotropic voxels)."""
    return _squared_distance_to(mask, spacing) <= mm * mm


def _shrink(mask: np.ndarray, mm: float, spacing) -> np.ndarray:
    """Erosion by a ball of ``mm``; outside the array counts as background."""
    padded = np.pad(mask, 1)
    return (_squared_distance_to(~padded, spacing) > mm * mm)[1:-1, 1:-1, 1:-1]


def _close(mask: np.ndarray, mm: float, spacing) -> np.ndarray:
    pad = int(np.ceil(mm / min(spacing))) + 1
    closed = _shrink(_grow(np.pad(mask, pad), mm, spacing), mm, spacing)
    return closed[pad:-pad, pad:-pad, pad:-pad]


def intracranial_mask(image: Image, registration: RegistrationResult | np.ndarray) -> tuple[np.ndarray, float]:
    """The template brain mask mapped into ``image`` and refined by its intensities (see the module docstring).

    Returns (bool mask on the block-averaged grid of about :data:`WORK_MM` mm, cropped around the mapped template,
    volume of one of its voxels in mm3).
    """
    matrix = _matrix(registration)
    block = getattr(registration, "block_2mm", None) if WORK_MM == 2.0 else None
    if block is None:  # else the registration's own block average of this scan: the same grid and values
        block = block_average(image, WORK_MM)
    grid = _crop_to_template(sitk_to_image(block, source="icv"), matrix, BAND_MM + OPEN_MM + CLOSE_MM)
    spacing, voxel_mm3 = grid.spacing, grid.voxel_volume_mm3
    if min(grid.shape) == 0:  # the template landed outside the field of view
        return np.zeros(grid.shape, dtype=bool), voxel_mm3
    mapped = _template_on_grid("brain_mask", matrix, grid) > 0.5
    wm_core = _template_on_grid("white_matter", matrix, grid) > WM_CORE_PROBABILITY
    if not mapped.any() or not wm_core.any():
        return np.zeros(grid.shape, dtype=bool), voxel_mm3
    array = np.asarray(grid.array, dtype=np.float32)
    tissue = (array > TISSUE_FRACTION * float(np.median(array[wm_core]))) & _grow(mapped, BAND_MM, spacing)
    seeds = _shrink(tissue, OPEN_MM, spacing)
    labels, _ = ndimage.label(seeds)
    interior = _shrink(mapped, BAND_MM, spacing)
    keep = np.unique(labels[interior & seeds])
    brain = _grow(np.isin(labels, keep[keep > 0]), OPEN_MM, spacing) & tissue
    brain = ndimage.binary_fill_holes(_close(brain, CLOSE_MM, spacing))
    return brain, voxel_mm3


def icv_mask_mm3(image: Image, registration: RegistrationResult | np.ndarray) -> float:
    """Intracranial volume from :func:`intracranial_mask`, calibrated so that the template measures ``c``."""
    mask, voxel_mm3 = intracranial_mask(image, registration)
    return float(mask.sum()) * voxel_mm3 * template_icv_mm3() / template_refined_mm3()


# ------------------------------------------------------------------------------------------------- contrast

GM_MAP_FILE = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"  # nilearn wheel, beside the T1 template
T1_WHITE_TO_GREY_MIN = 1.03  # T1-weighted: white matter brighter than grey matter; T2/FLAIR/PD: the reverse
CONTRAST_POINTS = 4000


@lru_cache(maxsize=1)
def _tissue_core_points_mni() -> tuple[np.ndarray, np.ndarray]:
    """(white-matter core, grey-matter core) sample points in MNI mm: voxels of the ICBM152 2009a tissue maps with
    probability > 0.9, a fixed subsample of :data:`CONTRAST_POINTS` each."""
    tpl = load_template()
    rng = np.random.default_rng(0)
    out = []
    for name in (WM_MAP_FILE, GM_MAP_FILE):
        ijk = np.argwhere(_template_tissue(name) > 0.9)
        ijk = ijk[rng.choice(len(ijk), size=min(CONTRAST_POINTS, len(ijk)), replace=False)]
        out.append(ijk @ tpl.affine[:3, :3].T + tpl.affine[:3, 3])
    return out[0], out[1]


def white_to_grey_ratio(image: Image, registration: RegistrationResult | np.ndarray) -> float:
    """Median scan intensity in the template's white-matter core over that in its grey-matter core, both mapped
    into the scan by the registration: 1.2-1.6 on T1-weighted heads, below 1 on T2-weighted, FLAIR or PD images
    (and on a T1 whose registration failed badly). Cheap: 8,000 trilinear samples."""
    matrix = _matrix(registration)
    to_vox = np.linalg.inv(np.asarray(image.affine, dtype=np.float64)) @ matrix
    medians = []
    for points in _tissue_core_points_mni():
        ijk = points @ to_vox[:3, :3].T + to_vox[:3, 3]
        values = ndimage.map_coordinates(np.asarray(image.array, dtype=np.float32), ijk.T, order=1, mode="nearest")
        medians.append(float(np.median(values)))
    return medians[0] / medians[1] if medians[1] > 0 else float("inf")


def check_t1_weighted(image: Image, registration: RegistrationResult | np.ndarray) -> float:
    """:func:`white_to_grey_ratio`, raising :class:`~hipposeg.errors.InputError` when the image does not look
    T1-weighted (white matter not brighter than grey matter by :data:`T1_WHITE_TO_GREY_MIN`)."""
    from hipposeg.errors import InputError

    ratio = white_to_grey_ratio(image, registration)
    if not T1_WHITE_TO_GREY_MIN <= ratio < 3.0:  # a label map (grey matter at 0) gives infinity
        raise InputError(image.path or None, f"does not look T1-weighted: white matter / grey matter intensity "
                                             f"{ratio:.2f} (T1 heads: 1.2-1.6); a T2, FLAIR or PD image, or a failed "
                                             f"registration")
    return ratio


# ------------------------------------------------------------------------------------------------------- QC


def icv_flags(etiv: float, icv_mask: float, asf: float) -> list[str]:
    """QC flag codes (:data:`hipposeg.qc_flags.QC_FLAGS`) for an eTIV / mask pair (empty when both are plausible and
    agree): ``registration_mirrored``, ``etiv_out_of_range``, ``icv_estimates_disagree``."""
    flags = []
    if asf < 0:
        flags.append("registration_mirrored")
    lo, hi = ADULT_ETIV_RANGE_MM3
    if not lo <= etiv <= hi:
        flags.append("etiv_out_of_range")
    ratio = icv_mask / etiv if etiv > 0 else float("nan")
    if not abs(ratio - 1.0) <= AGREEMENT_TOLERANCE:
        flags.append("icv_estimates_disagree")
    return flags


def intracranial_volume(image: Image, registration: RegistrationResult | np.ndarray) -> dict:
    """Both intracranial volume estimates of ``image`` and their QC.

    ``registration`` is what :func:`~hipposeg.fullhead.registration.register_to_template` returned for this image
    (or its 4x4 MNI -> scan RAS matrix). Returns ``etiv_mm3``, ``icv_mask_mm3``, ``atlas_scaling_factor``,
    ``icv_mask_to_etiv`` (their ratio) and ``flags`` (flag codes, :func:`icv_flags`; empty when fine).
    """
    asf = atlas_scaling_factor(registration)
    etiv = etiv_mm3(registration)
    mask = icv_mask_mm3(image, registration)
    return {
        "etiv_mm3": etiv,
        "icv_mask_mm3": mask,
        "atlas_scaling_factor": asf,
        "icv_mask_to_etiv": mask / etiv if etiv > 0 else float("nan"),
        "flags": icv_flags(etiv, mask, asf),
    }


def etiv_columns(row: dict, icv: dict) -> dict:
    """Volume-table columns for one case: ``etiv_mm3``, ``icv_mask_mm3`` and, for each ``volume_<name>_mm3`` of
    ``row`` (see :data:`VOLUME_COLUMNS`), ``volume_<name>_etiv_fraction`` = that volume / eTIV."""
    etiv = float(icv["etiv_mm3"])
    out = {"etiv_mm3": etiv, "icv_mask_mm3": float(icv["icv_mask_mm3"])}
    for name in VOLUME_COLUMNS:
        value = row.get(f"volume_{name}_mm3")
        if value is not None and value != "" and etiv > 0:
            out[f"volume_{name}_etiv_fraction"] = float(value) / etiv
    return out
