import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Spacing

from hipposeg.transforms import context_indices, cut_slices, slice_augmentations, volume_transforms


@pytest.fixture(scope="module")
def case(msd):
    image = np.asanyarray(nib.load(msd / "imagesTr" / "hippocampus_003.nii.gz").dataobj).astype(np.float32)
    label = np.asanyarray(nib.load(msd / "labelsTr" / "hippocampus_003.nii.gz").dataobj).astype(np.uint8)
    return image, label


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_nonempty_filter_yields_exactly_the_labelled_slices(case, axis):
    image, label = case
    expected = [i for i in range(label.shape[axis]) if np.take(label, i, axis=axis).any()]
    samples = cut_slices(image, label, axis, context=1)
    assert [s["slice_index"] for s in samples] == expected
    for s in samples:
        assert np.array_equal(s["label"][0], np.take(label, s["slice_index"], axis=axis))
        assert np.array_equal(s["image"][0], np.take(image, s["slice_index"], axis=axis))
        assert s["label"][0].any()


def test_25d_channels_are_the_neighbours_with_edges_replicated(case):
    image, label = case
    label = label.copy()
    label[0, 0, :] = 1  # every axial slice non-empty, so both edges are tested
    n = image.shape[2]
    samples = {s["slice_index"]: s for s in cut_slices(image, label, axis=2, context=5)}
    assert context_indices(n, 0, 5) == [0, 0, 0, 1, 2] and context_indices(n, n - 1, 5) == [n - 3, n - 2, n - 1, n - 1, n - 1]
    for i in (0, 1, n // 2, n - 1):
        expected = np.stack([image[:, :, j] for j in context_indices(n, i, 5)])
        assert np.array_equal(samples[i]["image"], expected)
    with pytest.raises(ValueError):
        context_indices(n, 0, 4)


def test_empty_fraction_adds_that_share_of_empty_slices(case):
    image, label = case
    nonempty = cut_slices(image, label, 1)
    mixed = cut_slices(image, label, 1, empty_fraction=0.2, rng=np.random.default_rng(0))
    n_empty = sum(1 for s in mixed if not s["label"].any())
    assert len(mixed) - len(nonempty) == n_empty == min(round(0.2 * len(nonempty)), label.shape[1] - len(nonempty))


def test_resampling_to_08mm_and_back_restores_shape_and_affine(msd):
    chain = volume_transforms(keys=["image"], pixdim=(0.8, 0.8, 0.8))
    data = chain({"image": str(msd / "imagesTr" / "hippocampus_003.nii.gz")})
    ref = nib.load(msd / "imagesTr" / "hippocampus_003.nii.gz")
    assert np.allclose(np.sqrt((np.asarray(data["image"].affine)[:3, :3] ** 2).sum(0)), 0.8)
    assert data["image"].shape[1] > ref.shape[0]
    back = Spacing(pixdim=(1.0, 1.0, 1.0), mode="bilinear")(data["image"], output_spatial_shape=ref.shape)
    assert tuple(back.shape[1:]) == ref.shape
    assert np.allclose(np.asarray(back.affine), ref.affine, atol=1e-4)
    inverted = chain.inverse(data)["image"]
    assert tuple(inverted.shape[1:]) == ref.shape and np.allclose(np.asarray(inverted.affine), ref.affine, atol=1e-4)


def test_preprocessing_reorients_to_ras(tmp_path, msd):
    src = nib.load(msd / "imagesTr" / "hippocampus_003.nii.gz")
    data = np.asanyarray(src.dataobj)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
    lps = nib.Nifti1Image(data[::-1, ::-1].copy(), src.affine @ flip)
    nib.save(lps, tmp_path / "lps.nii.gz")
    chain = volume_transforms(keys=["image"])
    a = chain({"image": str(msd / "imagesTr" / "hippocampus_003.nii.gz")})["image"]
    b = chain({"image": str(tmp_path / "lps.nii.gz")})["image"]
    assert np.allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_augmentation_pads_to_multiple_of_32_and_keeps_labels(case):
    image, label = case
    aug = slice_augmentations(flip_prob=1, rotate_prob=1, zoom_prob=1, intensity_prob=1)
    aug.set_random_state(0)
    for s in cut_slices(image, label, 1, context=3)[:5]:
        out = aug(s)
        assert out["image"].shape[0] == 3 and all(d % 32 == 0 for d in out["image"].shape[1:])
        assert out["label"].shape[1:] == out["image"].shape[1:] and out["label"].dtype == torch.long
        assert set(torch.unique(out["label"]).tolist()) <= {0, 1, 2}


def test_thicken_along_axis_averages_slices_on_that_axis_only():
    from hipposeg.transforms import thicken_along_axis

    image = torch.zeros(1, 8, 6, 10)
    image[0, :, :, 5] = 1.0  # one bright 1 mm slab across axis 2
    thick = thicken_along_axis(image, axis=2, thickness=2.0)
    assert thick.shape == image.shape
    assert 0.0 < float(thick[0, 0, 0, 5]) < 1.0  # the slab is spread over a 2 mm slice ...
    assert float(thick[0, 0, 0].sum()) == pytest.approx(1.0, abs=0.15)  # ... keeping its mass
    assert torch.allclose(thicken_along_axis(image, axis=0, thickness=2.0), image)  # constant along axis 0


def test_volume_training_transforms_give_patches():
    from hipposeg.transforms import volume_training_transforms

    chain = volume_training_transforms(pixdim=None, patch_size=(48, 64, 48), thick_slice_prob=1.0)
    chain.set_random_state(0)
    from monai.data import MetaTensor

    image = MetaTensor(torch.randn(35, 50, 41), affine=torch.eye(4))
    label = MetaTensor((torch.rand(35, 50, 41) > 0.7).to(torch.uint8), affine=torch.eye(4))
    from monai.transforms import Compose

    out = Compose(chain.transforms[1:])({"image": image, "label": label})  # skip loading (arrays given)
    assert out["image"].shape == (1, 48, 64, 48) and out["label"].shape == (1, 48, 64, 48)
    assert out["label"].dtype == torch.long and set(out["label"].unique().tolist()) <= {0, 1}


def test_thick_slice_operator_is_a_box_average_sampled_back_linearly():
    from hipposeg.transforms import thick_slice_operator

    assert np.allclose(thick_slice_operator(7, 1.0, 0.0), np.eye(7))
    # 2 mm slices from the first edge: [0, 2) and [2, 4), centres 1 and 3, sampled back at 0.5 ... 3.5
    assert np.allclose(thick_slice_operator(4, 2.0, 0.0), [[0.5, 0.5, 0, 0], [0.375, 0.375, 0.125, 0.125],
                                                          [0.125, 0.125, 0.375, 0.375], [0, 0, 0.5, 0.5]])
    # the first slice starting 1 mm before the line: [0, 1), [1, 3), [3, 4) after clipping, centres 0.5, 2, 3.5
    assert np.allclose(thick_slice_operator(4, 2.0, 1.0), [[1, 0, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0],
                                                          [0, 1 / 3, 1 / 3, 1 / 3], [0, 0, 0, 1]])
    for n, t, phase in [(35, 1.3, 0.2), (50, 2.5, 2.4), (3, 2.0, 0.5), (1, 1.7, 0.0)]:
        op = thick_slice_operator(n, t, phase)
        assert op.shape == (n, n) and np.allclose(op.sum(axis=1), 1.0) and (op >= 0).all()
    with pytest.raises(ValueError):
        thick_slice_operator(4, 0.0)


def test_slice_dataset_cuts_thick_slice_samples_from_the_volume(msd):
    from hipposeg.data.slices import SliceDataset
    from hipposeg.transforms import thicken_along_axis

    data = [{"image": str(msd / "imagesTr" / f"hippocampus_{c}.nii.gz"),
             "label": str(msd / "labelsTr" / f"hippocampus_{c}.nii.gz"), "case": c} for c in ("003", "004")]
    plain = SliceDataset(data, context=3, empty_fraction=0.2, progress=False)
    thick = SliceDataset(data, context=3, empty_fraction=0.2, progress=False, thick_slice_prob=1.0,
                         thick_slice_range=(2.0, 2.0))
    assert len(thick) == len(plain)
    sample = thick.data[len(thick) // 2]
    volume = thick._volumes[sample["volume_index"]]
    axis, index = sample["slice_axis"], sample["slice_index"]
    # 1-voxel slices change nothing; any other thickness gives the slice of the thickened volume
    same = thick.thick_slice_sample(sample, axis=(axis + 1) % 3, thickness=1.0, phase=0.0)
    assert np.allclose(same["image"], sample["image"], atol=1e-5)
    for thick_axis in range(3):
        out = thick.thick_slice_sample(sample, axis=thick_axis, thickness=2.0, phase=0.5)
        expected = thicken_along_axis(volume[None], thick_axis, 2.0, 0.5)[0].movedim(axis, 0)
        rows = [min(max(index + d, 0), expected.shape[0] - 1) for d in (-1, 0, 1)]
        assert np.allclose(out["image"], expected[rows].numpy(), atol=1e-5)
        assert not np.allclose(out["image"], sample["image"])
        assert out["label"] is sample["label"]  # the 1 mm truth
    drawn = thick[0]  # thick_slice_prob=1: every access is cut afresh, the stored sample is left alone
    assert drawn["image"].shape == plain[0]["image"].shape
    assert np.array_equal(thick.data[0]["image"], plain.data[0]["image"])
