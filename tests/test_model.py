"""The network builder: plain smp U-Net and the full-resolution-skip variant."""

import pytest
import torch

from hipposeg.errors import InputError
from hipposeg.model import FullResolutionUnet, build_network, load_weights, save_half_precision


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One weights file per architecture the configs must rebuild from a checkpoint: plain U-Net, the full-resolution
    skip variant, and slices upsampled 1.5x (random weights)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    kinds = {"plain": {}, "skip": {"full_res_skip": True}, "scaled": {"input_scale": 1.5}}
    for name, options in kinds.items():
        torch.save(build_network(in_channels=3, num_classes=3, **options).state_dict(), folder / f"{name}.pt")
    return {name: folder / f"{name}.pt" for name in kinds}


@pytest.mark.parametrize("skip", [False, True])
def test_output_shape_matches_input_slices(skip):
    net = build_network(in_channels=3, num_classes=3, full_res_skip=skip).eval()
    assert isinstance(net, FullResolutionUnet) is skip
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 3, 64, 96)


def test_full_resolution_branch_reaches_the_output():
    torch.manual_seed(0)
    net = build_network(in_channels=3, num_classes=3, full_res_skip=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        net.stem[0][0].weight.mul_(2.0)
        after = net(x)
    assert not torch.allclose(before, after)


def test_checkpoint_round_trip_and_torchscript(tmp_path):
    torch.manual_seed(0)
    net = build_network(in_channels=3, num_classes=3, full_res_skip=True).eval()
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    again = load_weights(build_network(in_channels=3, num_classes=3, full_res_skip=True), ckpt).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), again(x))
        assert torch.allclose(torch.jit.script(again)(x), net(x), atol=1e-5)


def test_a_plain_checkpoint_does_not_fit_the_skip_network(checkpoints):
    with pytest.raises(InputError, match="does not fit the network"):
        load_weights(build_network(in_channels=3, num_classes=3, full_res_skip=True), checkpoints["plain"])


def test_segmenter_builds_the_architecture_its_checkpoint_holds(tmp_path, checkpoints):
    from hipposeg.model import has_full_res_skip
    from hipposeg.segmenter import load_segmenter

    for skip in (False, True):
        ckpt = checkpoints["skip" if skip else "plain"]
        assert has_full_res_skip(ckpt) is skip
        assert isinstance(load_segmenter(ckpt, runtime="torch").network, FullResolutionUnet) is skip
    with pytest.raises(InputError, match="not found"):
        has_full_res_skip(tmp_path / "missing.pt")


def test_infer_wrapper_runs_a_full_res_skip_checkpoint(msd, tmp_path, cli, checkpoints):
    ckpt = checkpoints["skip"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "hippocampus_001.nii.gz").symlink_to(msd / "imagesTr" / "hippocampus_001.nii.gz")
    result = cli("infer", str(inputs), "-o", str(tmp_path / "out"), "--model", str(ckpt))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "hippocampus_001_seg.nii.gz").is_file()


@pytest.mark.parametrize("configs", [["inference.json"], ["inference.json", "evaluate.json"]])
def test_bundle_configs_build_the_architecture_of_their_checkpoint(tmp_path, configs, checkpoints):
    # python -m monai.bundle run --config_file inference.json (or evaluate.json) --ckpt_path x.pt
    from hipposeg.bundle import parse_bundle

    for skip in (False, True):
        parser = parse_bundle(configs, overrides={"ckpt_path": str(checkpoints["skip" if skip else "plain"])})
        assert isinstance(_core(parser), FullResolutionUnet) is skip
    net = _core(parse_bundle(configs, overrides={"ckpt_path": str(checkpoints["scaled"])}))
    assert float(net.input_scale) == 1.5
    # a missing checkpoint builds the default network; loading the weights then names the file
    parser = parse_bundle(configs, overrides={"ckpt_path": str(tmp_path / "missing.pt")})
    assert type(_core(parser)).__name__ == "Unet"


def _core(parser):
    """The 2.5D network a config builds (alone, or as the core of hipposeg.ensemble.CoreAndPartner)."""
    network = parser.get_parsed_content("network_def")
    return getattr(network, "core", network)


def test_scaled_input_network_runs_on_upsampled_slices(tmp_path):
    from hipposeg.model import ScaledInputNet, architecture_overrides

    torch.manual_seed(0)
    net = build_network(in_channels=3, num_classes=3, input_scale=1.5).eval()
    assert isinstance(net, ScaledInputNet)
    seen = []
    hook = net.net.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 32))
    hook.remove()
    # 1.5x on both sides alike (96 x 48), then padded to multiples of 32 for the U-Net; logits at the input's size
    assert out.shape == (2, 3, 64, 32) and seen == [(96, 64)]
    # the scale travels with the weights (also in a half-precision copy): the bundle rebuilds the same network
    ckpt = tmp_path / "scaled.pt"
    torch.save({k: v.half() for k, v in net.state_dict().items()}, ckpt)
    overrides = architecture_overrides(ckpt)
    assert overrides == {"full_res_skip": False, "input_scale": 1.5}
    again = load_weights(build_network(in_channels=3, num_classes=3, **overrides), ckpt).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), net(x), atol=0.05, rtol=0.05)  # weights rounded to fp16
    # the checkpoint's buffer, not the builder's argument, sets the scale the network runs at
    other = load_weights(build_network(in_channels=3, num_classes=3, input_scale=2.0), ckpt)
    assert float(other.input_scale) == 1.5
    torch.save(build_network(in_channels=3, num_classes=3, full_res_skip=True, input_scale=1.3).half().state_dict(),
               ckpt)
    assert architecture_overrides(ckpt) == {"full_res_skip": True, "input_scale": 1.3}
    with pytest.raises(ValueError, match="positive"):
        build_network(input_scale=0.0)
    scripted = torch.jit.script(again)  # ckpt_export scripts the network
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), again(x))


def test_export_half_keeps_the_scale_and_never_overwrites(tmp_path, cli):
    src = tmp_path / "trained.pt"
    net = build_network(in_channels=3, num_classes=3, input_scale=1.3)
    torch.save({"network": net.state_dict(), "epoch": 3}, src)
    out = tmp_path / "model.pt"
    result = cli("export-half", str(src), "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(out, weights_only=True)
    assert state["input_scale"].dtype == torch.float32 and float(state["input_scale"]) == pytest.approx(1.3)
    weights = [v for k, v in state.items() if torch.is_floating_point(v) and k != "input_scale"]
    assert weights and all(v.dtype == torch.float16 for v in weights)
    assert out.stat().st_size < 0.6 * src.stat().st_size
    before = out.read_bytes()
    again = cli("export-half", str(src), "-o", str(out))
    assert again.returncode == 2 and str(out) in again.stderr and "Traceback" not in again.stderr
    assert out.read_bytes() == before
    missing = cli("export-half", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "x.pt"))
    assert missing.returncode == 2 and "nope.pt" in missing.stderr and not (tmp_path / "x.pt").exists()


def test_networks_are_built_channels_last_and_compute_the_same(tmp_path):
    """build_network stores the weights channels-last (oneDNN's fast CPU path); the same weights in the usual layout
    give the same logits, and a channels-last checkpoint loads into either."""
    torch.manual_seed(0)
    fast = build_network(in_channels=3, num_classes=3, input_scale=1.5).eval()
    plain = build_network(in_channels=3, num_classes=3, input_scale=1.5, channels_last=False).eval()
    convs = [m.weight for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    spatial = [w for w in convs if w.shape[1] > 1 and w.shape[-1] > 1]  # (1x1 and depthwise kernels fit both layouts)
    assert spatial and not any(w.is_contiguous() for w in spatial)
    assert all(m.weight.is_contiguous() for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    torch.save(fast.state_dict(), tmp_path / "cl.pt")
    load_weights(plain, tmp_path / "cl.pt")
    x = torch.randn(4, 3, 35, 50)
    with torch.no_grad():
        assert torch.allclose(fast(x), plain(x), atol=1e-4)
    # and the other way: a checkpoint in the usual layout (all shipped before 0.3.1), also in half precision
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    save_half_precision(tmp_path / "plain.pt", tmp_path / "half.pt")
    again = load_weights(build_network(in_channels=3, num_classes=3, input_scale=1.5).eval(), tmp_path / "half.pt")
    assert all(w.is_contiguous(memory_format=torch.channels_last)
               for w in (m.weight for m in again.modules() if isinstance(m, torch.nn.Conv2d)))
    with torch.no_grad():
        assert torch.allclose(again(x), plain(x), atol=2e-2)
