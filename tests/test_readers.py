import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from hipposeg.data.readers import check_volume, image_to_sitk, read_dicom_series, read_image
from hipposeg.errors import InputError


def test_nifti_reader_keeps_geometry(msd):
    path = msd / "imagesTr" / "hippocampus_001.nii.gz"
    image = read_image(path)
    ref = nib.load(path)
    assert image.shape == ref.shape and np.allclose(image.affine, ref.affine)
    assert np.array_equal(image.array, np.asanyarray(ref.dataobj)) and image.orientation == "RAS"


def test_nifti_reader_on_oblique_lia_scan(data_root):
    path = data_root / "fullhead" / "candi030" / "t1.nii.gz"
    image = read_image(path)
    assert image.orientation == "LIA" and np.allclose(image.spacing, nib.load(path).header.get_zooms()[:3], atol=1e-4)
    assert np.allclose(image.affine, nib.load(path).affine, atol=1e-4)


def _dicom_header_geometry(folder):
    """Spacing, direction cosines and first-slice position straight from the DICOM tags of every file."""
    positions, orient, spacing = [], None, None
    for f in sorted(folder.glob("*.dcm")):
        r = sitk.ImageFileReader()
        r.SetFileName(str(f))
        r.ReadImageInformation()
        positions.append([float(v) for v in r.GetMetaData("0020|0032").split("\\")])
        orient = [float(v) for v in r.GetMetaData("0020|0037").split("\\")]
        spacing = [float(v) for v in r.GetMetaData("0028|0030").split("\\")]
    row, col = np.array(orient[:3]), np.array(orient[3:])
    normal = np.cross(row, col)
    positions = np.array(positions)
    order = np.argsort(positions @ normal)
    positions = positions[order]
    slice_gap = np.median(np.diff(positions @ normal))
    # DICOM PixelSpacing is (row spacing, column spacing): column spacing goes with the row direction
    return np.array([spacing[1], spacing[0], slice_gap]), np.stack([row, col, normal], 1), positions[0], len(positions)


@pytest.mark.parametrize("series", ["study1_hcrop", "study2_hcrop"])
def test_dicom_series_geometry_matches_headers(data_root, series):
    folder = data_root / "dicom_hcrop" / series
    image = read_dicom_series(folder)
    spacing, direction_lps, origin_lps, n = _dicom_header_geometry(folder)
    assert image.shape[2] == n
    assert np.allclose(image.spacing, spacing, atol=1e-3)
    lps_to_ras = np.diag([-1, -1, 1])
    assert np.allclose(image.affine[:3, :3] / image.spacing, lps_to_ras @ direction_lps, atol=1e-4)
    assert np.allclose(image.affine[:3, 3], lps_to_ras @ origin_lps, atol=1e-3)
    # round trip through SimpleITK gives the same geometry
    back = image_to_sitk(image)
    assert np.allclose(back.GetSpacing(), spacing, atol=1e-3)


def test_dicom_folder_with_two_series_lists_them(tmp_path, data_root):
    both = tmp_path / "both"
    both.mkdir()
    for series in ("study1_hcrop", "study2_hcrop"):
        for f in (data_root / "dicom_hcrop" / series).glob("*.dcm"):
            (both / f"{series}_{f.name}").write_bytes(f.read_bytes())
    with pytest.raises(InputError) as err:
        read_dicom_series(both)
    message = str(err.value)
    assert "2 DICOM series" in message and "--series-uid" in message and "\n" not in message
    uid = message.split(": ")[-1].split(" ")[0]
    chosen = read_dicom_series(both, series_uid=uid)
    assert chosen.meta["series_uid"] == uid
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_dicom_series(empty)


def test_check_volume_rejects_unusable_images(msd):
    image = read_image(msd / "imagesTr" / "hippocampus_001.nii.gz")
    for array, problem in [(np.zeros((4, 4)), "3D"), (np.zeros((4, 4, 4, 2)), "4D"),
                           (np.full((4, 4, 4), np.nan), "NaN"), (np.ones((4, 4, 4)), "constant")]:
        image.array = array
        with pytest.raises(InputError, match=problem):
            check_volume(image)


def test_info_reports_good_files_and_one_line_per_bad_one(msd, data_root, tmp_path, cli):
    good = msd / "imagesTr" / "hippocampus_001.nii.gz"
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    text = tmp_path / "notes.nii.gz"
    text.write_text("this is not an image\n")
    missing = tmp_path / "missing.nii.gz"
    dicom = data_root / "dicom_hcrop" / "study1_hcrop"
    result = cli("info", str(good), str(truncated), str(text), str(missing), str(dicom))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3
    for path, line in zip((truncated, text, missing), errors):
        assert str(path) in line and line.startswith("error: ")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert "35x51x35" in lines[0] and "RAS" in lines[0] and "uint8" in lines[0] and "[2, 139]" in lines[0]
    assert str(dicom) in lines[1] and "dicom" in lines[1]


def _nifti_with_header(path, a, *, sform=None, qform=None, slope=None, big_endian=False):
    header = nib.Nifti1Header(endianness=">" if big_endian else "<")
    header.set_data_dtype(a.dtype.newbyteorder(">") if big_endian else a.dtype)
    img = nib.Nifti1Image(a, np.eye(4) if sform is None else sform, header=header)
    if qform is not None:
        img.set_qform(qform, code=1)
    if slope is not None:
        img.header.set_slope_inter(slope, 1.0)
    nib.save(img, path)
    return path


def test_nifti_reader_matches_monai_loader(msd, tmp_path):
    """read_nifti reads with nibabel (no torch import) but must give what MONAI's LoadImage gives, including
    its header correction (an sform whose voxel sizes disagree with pixdim gives way to the qform)."""
    from monai.transforms import LoadImage

    a = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    files = [msd / "imagesTr" / "hippocampus_001.nii.gz",
             _nifti_with_header(tmp_path / "scaled.nii.gz", a, slope=2.0),
             _nifti_with_header(tmp_path / "sform_off.nii.gz", a, sform=np.diag([2.0, 2.0, 2.0, 1.0]),
                                qform=np.diag([1.0, 1.0, 1.0, 1.0]))]
    assert np.allclose(nib.load(files[2]).affine.diagonal(), [2, 2, 2, 1])  # nibabel alone would take the sform
    for path in files:
        ref = LoadImage(reader="NibabelReader", image_only=True, dtype=None)(str(path))
        image = read_image(path)
        assert np.array_equal(image.array, np.asarray(ref)) and image.array.dtype == np.asarray(ref).dtype
        assert np.allclose(image.affine, np.asarray(ref.affine))
    assert np.allclose(read_image(files[2]).spacing, 1.0)


def test_big_endian_nifti_is_read_in_native_byte_order(tmp_path):
    a = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    image = read_image(_nifti_with_header(tmp_path / "be.nii", a, big_endian=True))
    assert image.array.dtype == np.uint16 and image.array.dtype.isnative and np.array_equal(image.array, a)
    assert "uint16" in image.describe()


def _forged_header(path, shape):
    """A NIfTI file whose header claims ``shape`` (uint8) but holds 1000 bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header.binaryblock + b"\0" * 4 + b"\1" * 1000)
    return path


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_header_claiming_a_huge_grid_is_refused_before_reading(tmp_path, name):
    path = _forged_header(tmp_path / name, (20000, 20000, 20000))
    with pytest.raises(InputError) as err:
        read_image(path)
    message = str(err.value)
    assert str(path) in message and "20000x20000x20000" in message and "not read" in message
    assert "\n" not in message


def test_size_limit_passes_a_fine_whole_head_and_stops_just_above(tmp_path):
    from hipposeg.data import readers

    readers.check_size("head.nii.gz", (512, 512, 640))  # a 0.5 mm whole head with neck
    _forged_header(tmp_path / "ok.nii", (20, 20, 20))
    with pytest.raises(InputError, match="cannot read"):  # within the limit: read, and found truncated
        read_image(tmp_path / "ok.nii")
    with pytest.raises(InputError, match="not read"):
        readers.check_size("x.nii", (readers.MAX_VOXELS // 4 + 1, 2, 2))


def test_dicom_series_size_is_checked_from_the_first_header(data_root, monkeypatch):
    from hipposeg.data import readers

    folder = data_root / "dicom_hcrop" / "study1_hcrop"
    shape = read_dicom_series(folder).shape
    monkeypatch.setattr(readers, "MAX_VOXELS", int(np.prod(shape)) - 1)
    with pytest.raises(InputError, match="x".join(map(str, shape)) + " grid"):
        read_dicom_series(folder)
