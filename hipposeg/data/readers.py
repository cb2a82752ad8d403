"""Image readers: NIfTI through nibabel (with MONAI's header correction), DICOM series through SimpleITK.

Every reader returns an :class:`Image`: the voxel array in file index order (i, j, k) and the
4x4 affine that maps voxel indices to RAS world millimetres (the NIfTI / nibabel convention).
Whatever the source, downstream code needs nothing else to put a result back into the input's geometry.

This module imports only numpy and nibabel at the top (``hipposeg info`` starts in well under a second);
SimpleITK is imported for DICOM, MONAI only for the rare NIfTI header whose voxel sizes disagree with its affine.
Before any voxel is read, an image larger than :data:`MAX_VOXELS` (by its own header) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from hipposeg.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SERIES_DESCRIPTION = "0008|103e"
DICOM_SERIES_UID = "0020|000e"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# The largest image read: 2**29 voxels, 2 GiB as float32 (a 0.5 mm whole head with neck, 512 x 512 x 640, is
# 168 M voxels). A header claiming more is refused before any memory is allocated for its voxels.
MAX_VOXELS = 2**29


@dataclass
class Image:
    """A 3D scalar volume with its true geometry."""

    array: np.ndarray  # (i, j, k), file index order
    affine: np.ndarray  # 4x4, voxel index -> RAS world mm
    path: str = ""
    source: str = "nifti"  # "nifti" or "dicom"
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def orientation(self) -> str:
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def describe(self) -> str:
        """One line: shape, voxel size, orientation code, data type, intensity range."""
        arr = self.array
        finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (float("nan"), float("nan"))
        shape = "x".join(str(s) for s in self.shape)
        spacing = "x".join(f"{s:.3g}" for s in self.spacing)
        return (
            f"{self.path}: {self.source} shape {shape}, voxel {spacing} mm, {self.orientation}, "
            f"{arr.dtype}, range [{lo:.6g}, {hi:.6g}]"
        )


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def case_name(path: str | Path) -> str:
    """The case id of an input: the file name without ``.nii``/``.nii.gz``, or the DICOM folder name."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def check_size(path: str | Path, shape) -> None:
    """Refuse an image whose grid (from its header: no voxel has been read yet) exceeds :data:`MAX_VOXELS`."""
    dims = [int(d) for d in shape]
    n_voxels = int(np.prod(dims, dtype=np.float64))  # float: a forged header can overflow int64
    if n_voxels > MAX_VOXELS:
        grid = "x".join(str(d) for d in dims)
        raise InputError(path, f"header claims a {grid} grid ({n_voxels / 2**20:.0f} M voxels), more than the "
                               f"{MAX_VOXELS // 2**20} M voxels hipposeg reads (2 GiB as float32); not read")


def _consistent_header(img):
    """``img`` with voxel sizes that agree with its affine: unchanged when they already agree (nearly every
    file; checked here without importing MONAI), else MONAI's ``correct_nifti_header_if_necessary`` (what
    ``LoadImage`` applies), which picks the sform or qform that agrees with ``pixdim``."""
    n_dim = int(img.header["dim"][0])
    if n_dim >= 5:
        return img  # MONAI leaves these alone too
    if 1 <= n_dim <= 3:
        zooms = np.asarray(img.header.get_zooms()[:n_dim], dtype=np.float64)
        if np.allclose(zooms, nib.affines.voxel_sizes(img.affine)[:n_dim]):
            return img
    from monai.data.utils import correct_nifti_header_if_necessary

    return correct_nifti_header_if_necessary(img)


def read_nifti(path: str | Path) -> Image:
    """Read a ``.nii``/``.nii.gz`` file with nibabel, as MONAI's ``LoadImage(reader="NibabelReader")`` does
    (same header correction, same voxels), keeping the file's data type in native byte order."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a NIfTI file")
    try:
        img = nib.load(str(path))  # the header only
    except Exception as exc:  # nibabel/gzip/zlib raise many kinds; all mean "cannot read this file"
        raise InputError(path, f"cannot read as NIfTI ({_first_line(exc)})") from None
    check_size(path, img.shape)
    try:
        img = _consistent_header(img)
        array = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise InputError(path, f"cannot read as NIfTI ({_first_line(exc)})") from None
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return Image(array=array, affine=np.array(img.affine, dtype=np.float64), path=str(path), source="nifti")


def list_dicom_series(folder: str | Path) -> list[tuple[str, str, list[str]]]:
    """The DICOM series in ``folder``: (series UID, description, sorted file names) for each."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns on stderr for every non-DICOM file
    reader = sitk.ImageSeriesReader()
    series = []
    for uid in reader.GetGDCMSeriesIDs(str(folder)) or ():
        files = list(reader.GetGDCMSeriesFileNames(str(folder), uid))
        description = ""
        try:
            info = sitk.ImageFileReader()
            info.SetFileName(files[0])
            info.ReadImageInformation()
            if info.HasMetaDataKey(DICOM_SERIES_DESCRIPTION):
                description = info.GetMetaData(DICOM_SERIES_DESCRIPTION).strip()
        except RuntimeError:
            pass
        series.append((uid, description, files))
    return series


def sitk_to_image(sitk_image, path: str = "", source: str = "dicom") -> Image:
    """Convert a SimpleITK image (LPS world) to an :class:`Image` (RAS affine, (i, j, k) array)."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(sitk_image).transpose(2, 1, 0)  # (k, j, i) -> (i, j, k)
    direction = np.asarray(sitk_image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * np.asarray(sitk_image.GetSpacing(), dtype=np.float64)
    affine_lps[:3, 3] = sitk_image.GetOrigin()
    return Image(array=np.ascontiguousarray(array), affine=_LPS_TO_RAS @ affine_lps, path=path, source=source)


def image_to_sitk(image: Image):
    """Convert an :class:`Image` to a SimpleITK image in LPS world coordinates."""
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(np.ascontiguousarray(image.array.transpose(2, 1, 0)))
    affine_lps = _LPS_TO_RAS @ image.affine
    spacing = np.sqrt((affine_lps[:3, :3] ** 2).sum(axis=0))
    out.SetSpacing([float(s) for s in spacing])
    out.SetDirection([float(v) for v in (affine_lps[:3, :3] / spacing).ravel()])
    out.SetOrigin([float(v) for v in affine_lps[:3, 3]])
    return out


def _dicom_series_shape(files: list[str]) -> tuple[int, ...]:
    """The grid a series of ``files`` makes, from the first file's header (columns, rows, frames per file)
    times the number of files; nothing but that header is read."""
    import SimpleITK as sitk

    info = sitk.ImageFileReader()
    info.SetFileName(files[0])
    try:
        info.ReadImageInformation()
    except RuntimeError:
        return (len(files),)  # an unreadable first file: reading the series says why
    size = list(info.GetSize()) + [1]
    return (size[0], size[1], size[2] * len(files))


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Image:
    """Read one DICOM series from a folder through SimpleITK.

    A folder with no series, or with several and no ``series_uid`` chosen, is an :class:`InputError`
    that lists what is there.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder")
    series = list_dicom_series(folder)
    if not series:
        subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())
        hint = f" (it holds sub-folders: {', '.join(subfolders[:5])}; give one series folder)" if subfolders else ""
        raise InputError(folder, f"no DICOM series found in this folder{hint}")
    if series_uid is not None:
        chosen = [s for s in series if s[0] == series_uid]
        if not chosen:
            listed = "; ".join(f"{uid} ({desc or 'no description'})" for uid, desc, _ in series)
            raise InputError(folder, f"series {series_uid} not found; the folder holds: {listed}")
    elif len(series) > 1:
        listed = "; ".join(f"{uid} ({desc or 'no description'}, {len(f)} files)" for uid, desc, f in series)
        raise InputError(folder, f"holds {len(series)} DICOM series, choose one with --series-uid: {listed}")
    else:
        chosen = series
    uid, description, files = chosen[0]
    check_size(folder, _dicom_series_shape(files))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        sitk_image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(folder, f"cannot read DICOM series {uid} ({_first_line(exc)})") from None
    image = sitk_to_image(sitk_image, path=str(folder), source="dicom")
    image.meta.update({"series_uid": uid, "series_description": description, "n_files": len(files)})
    return image


def read_image(path: str | Path, series_uid: str | None = None) -> Image:
    """Read a NIfTI file or a DICOM series folder; raise :class:`InputError` with a one-line reason."""
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, series_uid=series_uid)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if is_nifti(path):
        return read_nifti(path)
    raise InputError(path, "not a NIfTI file (.nii, .nii.gz) or a DICOM series folder")


def check_volume(image: Image) -> Image:
    """Reject what no segmentation can use: not 3D, non-finite or constant intensities.

    A 4D image with a single volume (trailing axis of length 1) is squeezed to 3D.
    """
    array = image.array
    if array.ndim == 4 and array.shape[3] == 1:
        image.array = array = array[..., 0]
    if array.ndim != 3:
        raise InputError(image.path, f"expected a 3D image, got {array.ndim}D with shape {tuple(array.shape)}")
    if min(array.shape) < 2:
        raise InputError(image.path, f"expected a 3D volume, got shape {tuple(array.shape)} (a single slice)")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(image.path, "intensities contain NaN or infinite values")
    if array.size and array.min() == array.max():
        raise InputError(image.path, f"intensities are constant ({array.flat[0]}); nothing to segment")
    if not np.isfinite(image.affine).all() or abs(np.linalg.det(image.affine[:3, :3])) < 1e-9:
        raise InputError(image.path, "the image geometry (affine) is degenerate")
    return image
