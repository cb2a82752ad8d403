"""The ICBM152 2009a template that ships inside the nilearn wheel, and hippocampus geometry in its space.

Template
    ``nilearn.datasets.load_mni152_template(resolution=1)`` reads
    ``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz`` from the installed package
    (no download: the file is part of the wheel) and rescales it to [0, 1];
    ``load_mni152_brain_mask(resolution=1)`` is that image thresholded at 0.2. The template is already
    skull-stripped (zero outside the brain), 1 mm, RAS, 197x233x189, world coordinates in MNI mm.
    Importing nilearn costs more than a second, so :func:`load_template` reads the same file with nibabel
    and applies the same two steps; ``tests/test_fullhead.py`` checks that the result equals nilearn's.

Hippocampus geometry (MNI152 mm, RAS: +x right, +y anterior, +z superior)
    Chosen from published atlas coordinates, not fitted on any test scan:

    * centroid of the hippocampus: about (-25, -21, -10) left / (+29, -20, -10) right in the AAL atlas
      (Tzourio-Mazoyer et al. 2002) and about (+-25, -22, -14) in the Harvard-Oxford subcortical atlas;
      the 2009a *symmetric* template gets one symmetric centre, (+-26, -22, -12);
    * extent: x from about +-15 (medial, tail) to +-38 (lateral body), y from about -42 (tail) to -4
      (head, at the amygdala), z from about -27 (head) to +5 (tail, rising under the splenium);
    * long axis in the sagittal plane rising about 35 degrees from the AC-PC plane towards the back
      (the head is antero-inferior, the tail postero-superior).

    :data:`BOX_CENTRE_MM` / :data:`BOX_SIZE_MM` are that extent plus a margin of 6-7 mm on every side
    (room for registration error and the context the crop model saw: Task04 crops hold the hippocampus
    with about 5-7 voxels of margin and measure 35x50x36 voxels on average). :data:`REGION_*` is an
    ellipsoid of about 4 cm^3 (a typical hippocampus) along the long axis, used only for QC.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
BRAIN_MASK_THRESHOLD = 0.2  # nilearn.datasets.load_mni152_brain_mask default

SIDES = ("left", "right")
SIDE_SIGN = {"left": -1.0, "right": 1.0}  # sign of MNI x

# Hippocampus box (crop) per side, MNI mm: centre and edge lengths along x, y, z.
BOX_CENTRE_MM = {"left": (-26.5, -23.0, -11.0), "right": (26.5, -23.0, -11.0)}
BOX_SIZE_MM = (36.0, 52.0, 44.0)

# QC "template hippocampus region": an ellipsoid per side, MNI mm.
REGION_CENTRE_MM = {"left": (-26.0, -22.0, -12.0), "right": (26.0, -22.0, -12.0)}
REGION_LONG_AXIS_TILT_DEG = 35.0  # long axis in the sagittal plane, rising towards posterior
REGION_SEMI_AXES_MM = (8.0, 20.0, 6.0)  # medio-lateral, long (antero-posterior), thickness


def nilearn_data_dir() -> Path:
    """The ``datasets/data`` folder of the installed nilearn, found without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nilearn is not installed; it ships the ICBM152 template hipposeg registers to")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def template_path() -> Path:
    path = nilearn_data_dir() / TEMPLATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: the ICBM152 2009a template is missing from the nilearn installation")
    return path


@dataclass(frozen=True)
class Template:
    """The 1 mm ICBM152 2009a template: intensities in [0, 1], brain mask, voxel->MNI affine."""

    array: np.ndarray  # float32 (i, j, k), 0..1
    brain_mask: np.ndarray  # bool
    affine: np.ndarray  # 4x4 voxel -> MNI mm (RAS)


@lru_cache(maxsize=1)
def load_template() -> Template:
    """Same arrays as nilearn's ``load_mni152_template(resolution=1)`` / ``load_mni152_brain_mask``."""
    import nibabel as nib

    img = nib.load(str(template_path()))
    data = np.asarray(img.dataobj).astype(np.float32)
    data /= data.max()
    array = np.ascontiguousarray(data)
    mask = array > BRAIN_MASK_THRESHOLD
    array.setflags(write=False)
    mask.setflags(write=False)
    return Template(array=array, brain_mask=mask, affine=np.asarray(img.affine, dtype=np.float64))


def box_corner_and_axes(side: str) -> tuple[np.ndarray, np.ndarray]:
    """Centre (3,) and edge lengths (3,) of the crop box of ``side`` in MNI mm."""
    return np.asarray(BOX_CENTRE_MM[side], dtype=np.float64), np.asarray(BOX_SIZE_MM, dtype=np.float64)


def region_axes(side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (3,), rotation (3x3, columns = ellipsoid axes in MNI) and semi-axes (3,) of the QC region."""
    t = np.deg2rad(REGION_LONG_AXIS_TILT_DEG)
    # long axis points anterior-inferior (tail -> head), thickness axis perpendicular in the sagittal plane
    axes = np.array(
        [
            [1.0, 0.0, 0.0],
            [0.0, np.cos(t), -np.sin(t)],
            [0.0, np.sin(t), np.cos(t)],
        ]
    ).T
    return (
        np.asarray(REGION_CENTRE_MM[side], dtype=np.float64),
        axes,
        np.asarray(REGION_SEMI_AXES_MM, dtype=np.float64),
    )


def in_region(points_mni: np.ndarray, side: str, margin_mm: float = 0.0) -> np.ndarray:
    """Boolean per point (N, 3) in MNI mm: inside the template hippocampus region of ``side``
    (grown by ``margin_mm`` along each ellipsoid axis)."""
    centre, axes, semi = region_axes(side)
    semi = semi + margin_mm
    local = (np.asarray(points_mni, dtype=np.float64) - centre) @ axes  # coordinates along the ellipsoid axes
    return ((local / semi) ** 2).sum(axis=-1) <= 1.0
