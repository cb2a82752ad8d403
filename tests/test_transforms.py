from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Spacing

from hipposeg.transforms import context_indices, cut_slices, volume_transforms

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "hipposeg" / "configs"


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


def _parsed(configs, key, overrides=None):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in configs])
    parser.update(overrides or {})
    return parser.get_parsed_content(key)


def _steps(chain) -> list[tuple]:
    """(transform class, its probability or None) per step of a ``Compose``."""
    return [(type(t).__name__, getattr(t, "prob", None)) for t in chain.transforms]


def test_core_training_chain_is_the_recipe_spelled_out_in_train_json():
    """train.json's ``train#preprocessing`` is the 2.5D core's augmentation, transform by transform: what gets
    trained is read from the config (the shipped model.pt was trained with exactly this chain; the order is also
    the order in which each transform's random state is seeded)."""
    chain = _parsed(["train.json"], "train#preprocessing")
    assert _steps(chain) == [
        ("EnsureTyped", None), ("RandLeftRightFlipd", 0.5), ("RandRotated", 0.5), ("RandZoomd", 0.5),
        ("RandGaussianSmoothd", 0.25), ("RandAdjustContrastd", 0.3), ("RandHistogramShiftd", 0.2),
        ("RandScaleIntensityd", 0.3), ("RandShiftIntensityd", 0.3), ("RandGaussianNoised", 0.2),
        ("DivisiblePadd", None), ("EnsureTyped", None), ("EnsureTyped", None)]
    rotate, zoom, blur, gamma = chain.transforms[2], chain.transforms[3], chain.transforms[4], chain.transforms[5]
    assert rotate.rand_rotate.range_x == pytest.approx((-np.radians(15), np.radians(15)))
    assert rotate.rand_rotate.range_y == rotate.rand_rotate.range_z == (0.0, 0.0)  # in-plane only
    assert (tuple(zoom.rand_zoom.min_zoom), tuple(zoom.rand_zoom.max_zoom)) == ((0.85,), (1.25,))
    assert tuple(blur.rand_smooth.sigma_x) == tuple(blur.rand_smooth.sigma_y) == (0.25, 1.0)
    assert tuple(gamma.adjuster.gamma) == (0.7, 1.5)
    assert chain.transforms[10].padder.k == 32  # the encoder downsamples 5 times
    # the training set cuts its slices from volumes preprocessed exactly as the validation volumes
    assert _steps(_parsed(["train.json"], "validate#preprocessing")) == [
        ("LoadImaged", None), ("EnsureChannelFirstd", None), ("Orientationd", None), ("Spacingd", None),
        ("NormalizeIntensityd", None), ("EnsureTyped", None)]
    assert [type(t).__name__ for t in _parsed(["train.json"], "validate#preprocessing", {"pixdim": None}).transforms] \
        == ["LoadImaged", "EnsureChannelFirstd", "Orientationd", "NormalizeIntensityd", "EnsureTyped"]


def test_core_training_chain_pads_to_multiple_of_32_and_keeps_labels(case):
    image, label = case
    aug = _parsed(["train.json"], "train#preprocessing")
    aug.set_random_state(0)
    changed = 0
    for s in cut_slices(image, label, 1, context=3)[:8]:
        out = aug(dict(s))
        assert out["image"].shape[0] == 3 and all(d % 32 == 0 for d in out["image"].shape[1:])
        assert out["label"].shape[1:] == out["image"].shape[1:] and out["label"].dtype == torch.long
        assert out["image"].dtype == torch.float32
        assert set(torch.unique(out["label"]).tolist()) <= {0, 1, 2}
        h, w = s["image"].shape[1:]
        changed += not np.allclose(out["image"][:, :h, :w].numpy(), s["image"])
    assert changed  # the augmentation does something


def test_partner_training_chain_is_the_recipe_spelled_out_in_train_3d_json():
    chain = _parsed(["train.json", "train_3d.json"], "train#preprocessing")
    assert _steps(chain) == [
        ("LoadImaged", None), ("EnsureChannelFirstd", None), ("Orientationd", None), ("Spacingd", None),
        ("NormalizeIntensityd", None), ("EnsureTyped", None), ("EnsureTyped", None),
        ("RandFlipd", 0.5), ("RandRotated", 0.3), ("RandZoomd", 0.3), ("RandThickSlicesd", 0.25),
        ("RandScaleIntensityd", 0.3), ("RandShiftIntensityd", 0.3), ("RandAdjustContrastd", 0.3),
        ("RandGaussianNoised", 0.15), ("SpatialPadd", None), ("RandSpatialCropd", None), ("EnsureTyped", None),
        ("EnsureTyped", None)]
    rotate = chain.transforms[8].rand_rotate
    assert rotate.range_x == rotate.range_y == rotate.range_z == pytest.approx((-np.radians(15), np.radians(15)))
    assert chain.transforms[10].thickness_range == (1.3, 2.5)
    assert list(chain.transforms[16].cropper.roi_size) == [48, 64, 48]


def test_partner_training_chain_gives_patches():
    from monai.data import MetaTensor
    from monai.transforms import Compose

    chain = _parsed(["train.json", "train_3d.json"], "train#preprocessing", {"pixdim": None})
    chain = Compose(chain.transforms[1:])  # arrays given: no loading
    chain.set_random_state(0)
    image = MetaTensor(torch.randn(35, 50, 41), affine=torch.eye(4))
    label = MetaTensor((torch.rand(35, 50, 41) > 0.7).to(torch.uint8), affine=torch.eye(4))
    out = chain({"image": image, "label": label})
    assert out["image"].shape == (1, 48, 64, 48) and out["label"].shape == (1, 48, 64, 48)
    assert out["label"].dtype == torch.long and set(out["label"].unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("overlays", [["train.json"], ["train.json", "train_3d.json"]])
def test_training_workflows_have_every_property_monai_checks(overlays):
    """MONAI's own check: nothing required is missing and the optional properties (``train_preprocessing``: the
    dataset's transform is ``@train#preprocessing``, ...) are the ids MONAI expects."""
    from monai.bundle import create_workflow

    workflow = create_workflow(config_file=[str(CONFIGS / name) for name in overlays], workflow_type="train")
    assert workflow.check_properties() == []


def test_multi_gpu_overlay_parses():
    """The DDP overlay on train.json resolves: the samplers wrap the configured datasets, DDP is set up by
    :func:`hipposeg.training.init_distributed` (not run here: no process group)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    parser.parse()
    ref = {key: str(parser[key]).replace("::", "#") for key in  # MONAI 1.6 writes "#" as "::"
           ("train#dataloader#sampler", "train#sampler#dataset", "validate#dataloader#sampler")}
    assert ref == {"train#dataloader#sampler": "@train#sampler", "train#sampler#dataset": "@train#dataset",
                   "validate#dataloader#sampler": "@validate#sampler"}
    assert any("init_distributed" in line for line in parser["initialize"])
    assert _steps(parser.get_parsed_content("train#preprocessing"))[1] == ("RandLeftRightFlipd", 0.5)


def test_thicken_along_axis_averages_slices_on_that_axis_only():
    from hipposeg.transforms import thicken_along_axis

    image = torch.zeros(1, 8, 6, 10)
    image[0, :, :, 5] = 1.0  # one bright 1 mm slab across axis 2
    thick = thicken_along_axis(image, axis=2, thickness=2.0)
    assert thick.shape == image.shape
    assert 0.0 < float(thick[0, 0, 0, 5]) < 1.0  # the slab is spread over a 2 mm slice ...
    assert float(thick[0, 0, 0].sum()) == pytest.approx(1.0, abs=0.15)  # ... keeping its mass
    assert torch.allclose(thicken_along_axis(image, axis=0, thickness=2.0), image)  # constant along axis 0


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


@pytest.mark.parametrize("thickness, inside", [(2.0, 0.0), (1.6, 0.3), (2.0, 0.8), (2.5, 0.5)])
def test_thick_slice_grid_is_the_box_mean_of_each_whole_slice(thickness, inside):
    """On the thick grid: each thick voxel is the mean of the 1 mm image over its slice (checked on a 0.1 mm
    nearest-neighbour copy, bins of 10 x thickness), slices start ``inside`` voxels into the image
    (phase = thickness - inside), partial slices are not kept, and the affine puts each thick voxel at its
    slice's centre."""
    from hipposeg.transforms import thick_slice_grid

    rng = np.random.default_rng(1)
    array = rng.normal(size=(5, 23, 4))
    affine = np.array([[0, 0, 1.0, -3], [1.0, 0, 0, 7], [0, -1.0, 0, 2], [0, 0, 0, 1]])
    thick, thick_affine = thick_slice_grid(array, affine, axis=1, thickness=thickness,
                                           phase=(thickness - inside) % thickness)
    fine = np.repeat(array, 10, axis=1)[:, round(inside * 10):]
    step = round(thickness * 10)
    n = fine.shape[1] // step
    expected = fine[:, :n * step].reshape(5, n, step, 4).mean(axis=2)
    assert thick.shape == (5, n, 4) and thick.dtype == np.float32
    assert np.allclose(thick, expected, atol=1e-5)
    centre = inside + thickness / 2 - 0.5  # the first thick voxel's centre, in 1 mm voxel indices
    assert np.allclose(thick_affine[:3, 1], affine[:3, 1] * thickness)
    assert np.allclose(thick_affine[:3, 3], affine[:3, 3] + affine[:3, 1] * centre)
    assert np.allclose(thick_affine[:3, [0, 2]], affine[:3, [0, 2]])
    with pytest.raises(ValueError):
        thick_slice_grid(array, affine, axis=0, thickness=6.0)  # no whole slice fits in 5 voxels


def test_thick_slice_grid_and_training_simulation_share_their_slices():
    """The thick grid's voxels are the training simulation's thick slices (the same edges and box means): sampled
    back at the voxel centres lying between two slice centres, they give ``thicken_along_axis``'s values."""
    from hipposeg.transforms import thick_slice_grid, thicken_along_axis

    rng = np.random.default_rng(2)
    array = rng.normal(size=(3, 30, 2)).astype(np.float32)
    thickness, phase = 2.0, 0.0
    thick, _ = thick_slice_grid(array, np.eye(4), axis=1, thickness=thickness, phase=phase)
    back = thicken_along_axis(torch.from_numpy(array)[None], 1, thickness, phase)[0].numpy()
    # in voxel-edge units: voxel 1 (centre 1.5) lies a quarter, voxel 2 (centre 2.5) three quarters of the way
    # from slice 0's centre (1) to slice 1's (3)
    assert np.allclose(back[:, 1], 0.75 * thick[:, 0] + 0.25 * thick[:, 1], atol=1e-5)
    assert np.allclose(back[:, 2], 0.25 * thick[:, 0] + 0.75 * thick[:, 1], atol=1e-5)


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


def test_slice_dataset_cuts_augmented_samples_from_the_transformed_volume(msd):
    from monai.transforms import Lambdad

    from hipposeg.data.slices import SliceDataset

    data = [{"image": str(msd / "imagesTr" / f"hippocampus_{c}.nii.gz"),
             "label": str(msd / "labelsTr" / f"hippocampus_{c}.nii.gz"), "case": c} for c in ("003", "004")]
    plain = SliceDataset(data, context=3, empty_fraction=0.2, progress=False)
    # a 3D transform whose effect on a slice depends on the volume: each voxel minus the mean of its axis-0 line
    centre = Lambdad(keys="image", func=lambda x: x - x.mean(dim=1, keepdim=True))
    augmented = SliceDataset(data, context=3, empty_fraction=0.2, progress=False, volume_augmentation=centre,
                             volume_augmentation_prob=1.0)
    assert len(augmented) == len(plain)
    for sample in (augmented.data[0], augmented.data[len(augmented) // 2], augmented.data[-1]):
        volume = augmented._volumes[sample["volume_index"]]
        expected = (volume - volume.mean(dim=0, keepdim=True)).movedim(sample["slice_axis"], 0)
        index = sample["slice_index"]
        rows = [min(max(index + d, 0), expected.shape[0] - 1) for d in (-1, 0, 1)]
        out = augmented.augmented_volume_sample(sample)
        assert np.allclose(out["image"], expected[rows].numpy(), atol=1e-5)
        assert out["label"] is sample["label"]
    assert np.array_equal(augmented.data[0]["image"], plain.data[0]["image"])  # the stored volume is left alone
    assert not np.allclose(augmented[0]["image"], plain.data[0]["image"])  # prob 1: every access is augmented
    off = SliceDataset(data, context=3, empty_fraction=0.2, progress=False, volume_augmentation=centre,
                       volume_augmentation_prob=0.0)
    assert np.array_equal(off[0]["image"], plain.data[0]["image"])


def test_slice_dataset_reuses_a_transformed_volume_for_that_many_samples(msd):
    from hipposeg.data.slices import SliceDataset

    data = [{"image": str(msd / "imagesTr" / "hippocampus_003.nii.gz"),
             "label": str(msd / "labelsTr" / "hippocampus_003.nii.gz"), "case": "003"}]
    calls = []

    def shift(d):  # a "random" 3D transform: a new offset on each call
        calls.append(1)
        return {**d, "image": d["image"] + len(calls)}

    dataset = SliceDataset(data, context=3, empty_fraction=0.2, progress=False, volume_augmentation=shift,
                           volume_augmentation_prob=1.0, volume_augmentation_reuse=3)
    sample = dataset.data[0]
    offsets = [float((dataset.augmented_volume_sample(sample)["image"] - sample["image"]).mean()) for _ in range(7)]
    assert np.allclose(offsets, [1, 1, 1, 2, 2, 2, 3], atol=1e-4) and len(calls) == 3


def test_core_robustness_recipe_builds_from_stock_transforms():
    """configs/train_trust.json (the core's robustness augmentation) parses over train.json and gives a
    z-scored volume of the input's shape (TorchIO is in the test extra)."""
    from monai.bundle import ConfigParser

    root = Path(__file__).resolve().parents[1]
    parser = ConfigParser()
    configs = root / "bundles" / "hipposeg" / "configs"
    parser.read_config([str(configs / "train.json"), str(configs / "train_trust.json")])
    augmentation = parser.get_parsed_content("train#dataset#volume_augmentation")
    torch.manual_seed(0)
    volume = torch.randn(1, 20, 24, 20)
    for _ in range(5):
        out = augmentation({"image": volume.clone()})["image"]
        assert out.shape == volume.shape
        assert abs(float(out.mean())) < 1e-3 and abs(float(out.std()) - 1.0) < 1e-2
