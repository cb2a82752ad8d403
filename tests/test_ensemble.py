"""The 3D-aware model: core (2.5D slices) + partner (3D network), averaged probabilities."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from hipposeg.ensemble import CoreAndPartner, EnsembleInferer, load_network
from hipposeg.errors import InputError
from hipposeg.inference import MultiAxisSliceInferer, VolumeInferer
from hipposeg.model import build_network_3d


class ConstantNet(torch.nn.Module):
    """Logits that give the same class probabilities ``p`` everywhere (2D or 3D inputs)."""

    def __init__(self, p):
        super().__init__()
        self.logits = torch.log(torch.tensor(p, dtype=torch.float32))

    def forward(self, x):
        shape = (x.shape[0], len(self.logits)) + tuple(x.shape[2:])
        return self.logits.view(1, -1, *([1] * (x.ndim - 2))).expand(shape).clone()


def _volume(shape=(9, 13, 7)):
    return MetaTensor(torch.randn(1, 1, *shape), affine=torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0])))


def test_weighted_mean_of_core_and_partner_with_meta_kept():
    core, partner = ConstantNet([0.7, 0.2, 0.1]), ConstantNet([0.1, 0.1, 0.8])
    inferer = EnsembleInferer(MultiAxisSliceInferer(context=3, divisor=8), VolumeInferer(patch_size=(8, 8, 8), divisor=8),
                              partner_weight=0.25)
    x = _volume()
    out = inferer(x, CoreAndPartner(core, partner))
    assert out.shape == (1, 3, 9, 13, 7)
    expected = 0.75 * np.array([0.7, 0.2, 0.1]) + 0.25 * np.array([0.1, 0.1, 0.8])
    np.testing.assert_allclose(out[0, :, 4, 6, 3].numpy(), expected, atol=1e-5)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, x.affine)


def test_core_alone_when_no_partner():
    core = ConstantNet([0.6, 0.3, 0.1])
    inferer = EnsembleInferer(MultiAxisSliceInferer(context=1, divisor=8), VolumeInferer(divisor=8))
    out = inferer(_volume(), CoreAndPartner(core, None))
    np.testing.assert_allclose(out[0, :, 0, 0, 0].numpy(), [0.6, 0.3, 0.1], atol=1e-5)


def test_partner_weight_checked():
    with pytest.raises(ValueError, match="partner_weight"):
        EnsembleInferer(None, None, partner_weight=1.5)


def test_volume_inferer_pads_and_crops_back_exactly():
    """A 3D network sees a padded volume (multiple of 16, at least the patch) and the output is cut back to the
    input grid voxel for voxel: an identity-like network must return the input's own pattern."""

    class Echo(torch.nn.Module):
        def forward(self, x):
            assert all(s % 16 == 0 for s in x.shape[2:]) and tuple(x.shape[2:]) >= (48, 64, 48)
            return torch.cat([x * 0, x * 10], 1)  # class 1 wins where x > 0

    x = torch.randn(1, 1, 35, 50, 41)
    out = VolumeInferer()(x, Echo())
    assert out.shape == (1, 2, 35, 50, 41)
    assert torch.equal(out[0, 1] > 0.5, x[0, 0] > 0)


def test_load_network_core_and_partner(tmp_path):
    from hipposeg.model import build_network

    small = dict(num_classes=3, channels=(4, 8, 16, 32, 64))
    core, partner = build_network(num_classes=3), build_network_3d(**small)
    torch.save(core.state_dict(), tmp_path / "core.pt")
    torch.save(partner.state_dict(), tmp_path / "partner.pt")
    net = load_network(build_network(num_classes=3), tmp_path / "core.pt", partner=build_network_3d(**small),
                       partner_ckpt_path=tmp_path / "partner.pt")
    assert isinstance(net, CoreAndPartner)
    for a, b in zip(net.partner.state_dict().values(), partner.state_dict().values()):
        assert torch.equal(a, b)
    alone = load_network(build_network(num_classes=3), tmp_path / "core.pt")  # no partner: the plain core
    assert not isinstance(alone, CoreAndPartner)
    with pytest.raises(InputError, match="partner_ckpt_path"):
        load_network(build_network(num_classes=3), tmp_path / "core.pt", partner=build_network_3d(**small))
    with pytest.raises(InputError, match="does not fit"):  # a 3D checkpoint given as the core
        load_network(build_network(num_classes=3), tmp_path / "partner.pt")


def test_partner_architecture_is_read_from_the_checkpoint(tmp_path):
    """A partner checkpoint says which network it is (levels, norm, residual units): inference.json builds the
    plain instance-norm UNet 16-256 candidate and the shipped batch-norm 32-320 partner from the same line."""
    from hipposeg.bundle import parse_bundle
    from hipposeg.model import partner_architecture

    small = dict(num_classes=3, channels=[4, 8, 16, 24], num_res_units=1, norm="instance")
    torch.save(build_network_3d(**small).state_dict(), tmp_path / "partner.pt")
    assert partner_architecture(tmp_path / "partner.pt") == {"channels": [4, 8, 16, 24], "num_res_units": 1,
                                                             "norm": "instance"}
    assert partner_architecture(tmp_path / "missing.pt") == {}
    parser = parse_bundle(["inference.json"], overrides={"partner_ckpt_path": str(tmp_path / "partner.pt"),
                                                         "device": "cpu"})
    partner = parser.get_parsed_content("network").partner
    for a, b in zip(partner.state_dict().values(), torch.load(tmp_path / "partner.pt").values()):
        assert torch.equal(a, b)


def test_bundle_runs_the_ensemble_when_given_a_partner(tmp_path):
    """inference.json with --ckpt_path X --partner_ckpt_path Y: the network is core + partner (use_partner defaults
    to true for a named partner); --use_partner False: the plain core. network_def, what MONAI's verify_net_in_out
    and ckpt_export see, is the core in both cases."""
    from hipposeg.bundle import parse_bundle, shipped_model

    partner = build_network_3d(num_classes=3)
    torch.save(partner.state_dict(), tmp_path / "partner.pt")
    core = str(shipped_model("default"))
    cases = (({"use_partner": False}, "Unet"), ({"partner_ckpt_path": str(tmp_path / "partner.pt")}, "CoreAndPartner"),
             ({"ckpt_path": core, "use_partner": False}, "Unet"))
    for overrides, kind in cases:
        parser = parse_bundle(["inference.json"], overrides={**overrides, "device": "cpu", "runtime": "torch"})
        assert type(parser.get_parsed_content("network")).__name__ == kind, overrides
        assert type(parser.get_parsed_content("network_def")).__name__ == "Unet"
        assert parser.get_parsed_content("ckpt_path") == core


def test_the_partner_is_opt_in(tmp_path):
    """inference.json as it stands runs the 2.5D core alone (the default since 0.8.0); --use_partner True adds the
    bundle's models/model_3d.pt, a --partner_ckpt_path other than that file turns it on by itself; --model names say
    it with a boolean that ``python -m monai.bundle run`` keeps (it drops None-valued overrides)."""
    from hipposeg.bundle import (BUNDLE_DIR, parse_bundle, resolve_model, shipped_model, shipped_partner,
                                 uses_partner_by_default)

    parser = parse_bundle(["inference.json"], overrides={"device": "cpu", "runtime": "torch"})
    assert parser.get_parsed_content("use_partner") is False
    assert type(parser.get_parsed_content("network")).__name__ == "Unet"
    parser = parse_bundle(["inference.json"], overrides={"device": "cpu", "runtime": "torch", "use_partner": True})
    assert parser.get_parsed_content("partner_ckpt_path") == str(shipped_partner("ensemble"))
    assert type(parser.get_parsed_content("network")).__name__ == "CoreAndPartner"
    other = tmp_path / "models" / "model.pt"
    other.parent.mkdir()
    other.write_bytes(b"")
    default_partner = BUNDLE_DIR / "models" / "model_3d.pt"
    assert not uses_partner_by_default(default_partner, BUNDLE_DIR / "models")  # the bundle's own: opt-in
    (other.parent / "model_3d.pt").write_bytes(b"")
    assert not uses_partner_by_default(other.parent / "model_3d.pt", other.parent)  # another bundle's own: opt-in
    assert not uses_partner_by_default(None, other.parent)
    assert uses_partner_by_default(default_partner, other.parent)  # a partner named explicitly

    assert resolve_model(None) == (BUNDLE_DIR, {})
    assert resolve_model("core") == (BUNDLE_DIR, {"ckpt_path": str(shipped_model("core")), "use_partner": False})
    assert resolve_model("default")[1] == resolve_model("core")[1]
    assert resolve_model("ensemble")[1] == {
        "ckpt_path": str(shipped_model("ensemble")), "use_partner": True,
        "partner_ckpt_path": str(shipped_partner("ensemble"))}
    assert resolve_model(str(other)) == (BUNDLE_DIR, {"ckpt_path": str(other), "use_partner": False})
    assert resolve_model(str(other), partner=default_partner)[1] == {
        "ckpt_path": str(other), "use_partner": True, "partner_ckpt_path": str(default_partner)}
    assert resolve_model(str(BUNDLE_DIR)) == (BUNDLE_DIR, {})  # a bundle folder: its configs, its default
    for overrides in (resolve_model(name)[1] for name in ("default", "core", "hires", "default-0.5", str(other))):
        assert None not in overrides.values()
    with pytest.raises(InputError, match="shipped models by name: default, core"):
        resolve_model(str(tmp_path / "missing.pt"))
    with pytest.raises(InputError, match="checkpoint file only"):
        resolve_model("core", partner=default_partner)
    with pytest.raises(InputError, match="not a bundle folder"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("shape, expected", [((31, 26), (64, 64)), ((33, 70), (64, 96)), ((64, 64), (64, 64))])
def test_slice_planes_are_padded_to_a_multiple_and_a_minimum_size(shape, expected):
    """Planes go to the network at least 64 pixels a side (a 32-pixel plane leaves a 1-pixel bottleneck the
    network rarely saw in training), the padding centred and cropped off again."""
    from hipposeg.inference import _pad_to_multiple

    x = torch.arange(shape[0] * shape[1], dtype=torch.float32).reshape(1, 1, *shape)
    padded, crop = _pad_to_multiple(x, 32, 64)
    assert tuple(padded.shape[-2:]) == expected
    assert torch.equal(padded[..., crop[0], crop[1]], x)
    assert tuple(_pad_to_multiple(x, 32)[0].shape[-2:]) == tuple(-(-n // 32) * 32 for n in shape)  # no minimum
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    MultiAxisSliceInferer(axes=(0,), context=1)(torch.zeros(1, 1, 5, *shape), Probe())
    assert seen == [expected]


def test_multi_axis_slice_inferer_alone():
    """Each axis sees every slice with its neighbours as channels (edges replicated), planes padded to the divisor
    and cropped back; the axes' probabilities are averaged; flip TTA mirrors left-right and back."""
    seen = []

    class SliceProbe(torch.nn.Module):
        def forward(self, x):  # (B, context, H, W): class 1 logit = the centre slice's intensity, class 0 = 0
            seen.append(tuple(x.shape))
            assert x.shape[-1] % 8 == 0 and x.shape[-2] % 8 == 0
            centre = x[:, x.shape[1] // 2]
            return torch.stack([torch.zeros_like(centre), 50 * centre], 1)

    volume = torch.zeros(1, 1, 6, 10, 7)
    volume[0, 0, 2:4, 3:7, 2:5] = 1.0
    inferer = MultiAxisSliceInferer(axes=(0, 1, 2), context=3, batch_size=4, divisor=8)
    out = inferer(volume, SliceProbe())
    assert out.shape == (1, 2, 6, 10, 7)
    np.testing.assert_allclose(out.sum(1).numpy(), 1.0, atol=1e-5)
    assert torch.equal(out[0, 1] > 0.5, volume[0, 0] > 0.5)  # every axis agrees on a box
    # every plane pads to 64x64 (min_size): the three axes' 6 + 10 + 7 slices go through together, 4 at a time
    assert len(seen) == 6 and all(s[1:] == (3, 64, 64) for s in seen)
    seen.clear()
    unpadded = MultiAxisSliceInferer(axes=(0, 1, 2), context=3, batch_size=4, divisor=8, min_size=0)
    assert torch.equal(unpadded(volume, SliceProbe())[0, 1] > 0.5, volume[0, 0] > 0.5)
    assert len(seen) == 2 + 3 + 2  # planes of three sizes, one group per axis: ceil(6/4) + ceil(10/4) + ceil(7/4)
    seen.clear()
    mirrored = MultiAxisSliceInferer(axes=(2,), context=1, divisor=8, flip_tta=True)(volume, SliceProbe())
    assert torch.equal(mirrored[0, 1] > 0.5, volume[0, 0] > 0.5)
    with pytest.raises(ValueError, match="expected volumes"):
        inferer(torch.zeros(1, 6, 10, 7), SliceProbe())


def test_calling_the_inferers_keeps_no_parts_and_gives_the_probabilities_of_parts(monkeypatch):
    """Only ``parts`` (asked for by the confidence features) keeps the per-axis and per-network probabilities;
    calling an inferer, as the bundle's evaluator and ``predict_probabilities`` do, asks for none of them and gives
    the same probabilities, bit for bit (flip TTA and a partner included)."""
    torch.manual_seed(0)
    core, partner = torch.nn.Conv2d(3, 3, 1), torch.nn.Conv3d(1, 3, 1)
    slices = MultiAxisSliceInferer(context=3, divisor=8, flip_tta=True)
    inferer = EnsembleInferer(slices, VolumeInferer(patch_size=(8, 8, 8), divisor=8), partner_weight=0.25)
    network, x = CoreAndPartner(core, partner), _volume()
    with torch.no_grad():
        kept, kept_core = inferer.parts(x, network), slices.parts(x, core)
        assert len(kept["axes"]) == 3 and kept["partner"] is not None
        assert set(slices._infer(x, core, keep_axes=False)) == {"prob"}

        def no_parts(*args, **kwargs):
            raise AssertionError("parts computed without being asked for")

        monkeypatch.setattr(slices, "parts", no_parts)
        assert torch.equal(inferer(x, network), kept["prob"])
        assert torch.equal(slices(x, core), kept_core["prob"])


def test_the_confidence_switch_hands_on_each_cases_confidence_in_the_meta_data():
    """``EnsembleInferer(confidence=True)`` (inference.json's ``confidence``): the same probabilities, and in their
    meta data each case's confidence as ``hipposeg segment`` computes it from that case's parts, in the form MONAI's
    ``decollate_batch`` splits per case (a batch of two); the input's own meta data is left as it was. The bundle's
    ``CopyMetaItemd`` then keeps it past ``Invertd``, which replaces the prediction's meta data."""
    from monai.data import decollate_batch

    from hipposeg.inference import CopyMetaItemd
    from hipposeg.segmenter import confidence

    torch.manual_seed(0)
    network = CoreAndPartner(torch.nn.Conv2d(3, 3, 1), torch.nn.Conv3d(1, 3, 1))
    x = MetaTensor(torch.cat([_volume().as_tensor(), 3 * _volume().as_tensor()]), meta={"filename_or_obj": ["a", "b"]})
    x.is_batch = True

    def inferer(flag):
        return EnsembleInferer(MultiAxisSliceInferer(context=3, divisor=8),
                               VolumeInferer(patch_size=(8, 8, 8), divisor=8), confidence=flag)

    with torch.no_grad():
        plain, with_confidence = inferer(False)(x, network), inferer(True)(x, network)
        parts = inferer(False).parts(x, network)
    assert torch.equal(plain.as_tensor(), with_confidence.as_tensor()) and "confidence" not in plain.meta
    assert "confidence" not in x.meta
    expected = [confidence({"prob": parts["prob"][i:i + 1], "core": parts["core"][i:i + 1],
                            "partner": parts["partner"][i:i + 1], "axes": [a[i:i + 1] for a in parts["axes"]]})
                for i in range(2)]
    assert expected[0] != expected[1] and set(expected[0]) >= {"partner_dice", "axis_dice", "predicted_dice"}
    cases = decollate_batch({"pred": with_confidence}, detach=True)
    kept = [CopyMetaItemd()(case)["confidence"] for case in cases]
    assert kept == expected
    assert "confidence" not in CopyMetaItemd()({"pred": plain[0]})  # nothing to keep: nothing added


def test_on_off_overrides_typed_on_monais_command_line_mean_what_they_say():
    """``python -m monai.bundle run --use_partner false`` hands the config the string "false" (fire reads only
    Python's False as a boolean): the bundle's switches read it as off, and refuse what is not a boolean."""
    from hipposeg.bundle import parse_bundle, switch

    assert [switch(v) for v in (True, "True", "true", "1", False, "False", "false", "0", "None")] == [True] * 4 + [False] * 5
    with pytest.raises(ValueError, match="expected a boolean"):
        switch("maybe")
    parser = parse_bundle(["inference.json"], overrides={"use_partner": "false", "keep_largest": "false",
                                                         "device": "cpu", "runtime": "torch"})
    assert type(parser.get_parsed_content("network")).__name__ == "Unet"
    steps = [type(t).__name__ for t in parser.get_parsed_content("postprocessing").transforms]
    assert "KeepLargestConnectedComponentd" not in steps and "Invertd" in steps
