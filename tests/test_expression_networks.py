"""Our LivePortrait networks: state_dicts equal to the published manifests key for key, strict
loading of both public file layouts (with useful errors), and tiny-config forwards."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.errors import ModelNotFoundError
from engine.expression.manifest_files import (
    read_manifest,
    write_network_files,
    write_zero_files,
)
from engine.expression.networks import (
    LivePortraitNetworks,
    build_networks,
    extract_features,
    motion_raw,
    stitching_delta,
    warp_decode,
)
from engine.expression.networks.blocks import kp2gaussian, make_coordinate_grid
from engine.expression.networks.config import REAL_CONFIG, TINY_CONFIG
from engine.expression.weights import (
    FILE_STEMS,
    KIJAI,
    NETWORKS,
    OFFICIAL,
    find_liveportrait_files,
    load_networks,
    relative_path,
)

BASE_NETWORKS = ("appearance", "motion", "warping", "spade")


@pytest.fixture(scope="module")
def real_meta() -> LivePortraitNetworks:
    return build_networks(REAL_CONFIG, device="meta")


@pytest.fixture(scope="module")
def tiny() -> LivePortraitNetworks:
    return build_networks(TINY_CONFIG, seed=7)


def layout_of(module: torch.nn.Module) -> list[tuple[str, tuple[tuple[int, ...], str]]]:
    """[(key, (shape, dtype name))] in state_dict order, as the manifests write them."""
    return [
        (key, (tuple(t.shape), str(t.dtype).removeprefix("torch.")))
        for key, t in module.state_dict().items()
    ]


# The published layouts -------------------------------------------------------------------


@pytest.mark.parametrize("network", BASE_NETWORKS)
def test_state_dict_equals_manifest(real_meta: LivePortraitNetworks, network: str) -> None:
    manifest = read_manifest(FILE_STEMS[network])
    assert layout_of(real_meta.modules()[network]) == list(manifest.items())


def test_stitching_equals_both_stitching_layouts(real_meta: LivePortraitNetworks) -> None:
    ours = layout_of(real_meta.stitching)
    official = read_manifest("stitching_retargeting_module", "retarget_shoulder")
    assert ours == [(k.replace("module.", ""), v) for k, v in official.items()]
    kijai = read_manifest("kijai_stitching_retargeting_module")
    prefix = "retarget_shoulder_module."
    assert ours == [(k.removeprefix(prefix), v) for k, v in kijai.items() if k.startswith(prefix)]


# Real-size zero files: written from the manifests (about 520 MB per layout), found and
# loaded strictly into REAL_CONFIG networks. Measured at about 3 s per layout on a 2-core
# CPU (the networks are built on the meta device and the files' tensors assigned, never
# initialised), so the real byte layout is checked end to end rather than via headers.
@pytest.mark.parametrize("layout", [OFFICIAL, KIJAI])
def test_zero_files_load_strictly(tmp_path: Path, layout: str) -> None:
    write_zero_files(tmp_path, layout)
    files = find_liveportrait_files([tmp_path / "absent", tmp_path])
    assert {f.layout for f in files.files()} == {layout}
    assert str(tmp_path) in files.label
    nets = load_networks(files)
    for network, module in nets.modules().items():
        tensors = [*module.parameters(), *module.buffers()]
        assert not any(t.is_meta for t in tensors), network
        assert all(t.device.type == "cpu" and not t.any() for t in tensors), network
        assert not module.training
    assert layout_of(nets.warping) == list(read_manifest("warping_module").items())


def test_round_trip_keeps_outputs(tmp_path: Path, tiny: LivePortraitNetworks) -> None:
    """Our weights written in each layout load back to bit-identical outputs."""
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    expected = _render(tiny, image)
    for layout in (OFFICIAL, KIJAI):
        write_network_files(tiny, tmp_path / layout, layout)
        loaded = load_networks(find_liveportrait_files([tmp_path / layout]), TINY_CONFIG)
        assert torch.equal(_render(loaded, image), expected), layout


def _render(nets: LivePortraitNetworks, image: torch.Tensor) -> torch.Tensor:
    x_s = motion_raw(nets, image)["kp"].reshape(1, 21, 3) * 0.3
    x_d = x_s + 0.02
    return warp_decode(nets, extract_features(nets, image), x_s, x_d)


# Finding ---------------------------------------------------------------------------------


def touch_layout(folder: Path, layout: str, networks: tuple[str, ...] = NETWORKS) -> None:
    for network in networks:
        path = folder / relative_path(network, layout)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_official_file_wins_per_network_and_identity_tracks_files(tmp_path: Path) -> None:
    touch_layout(tmp_path, KIJAI)
    touch_layout(tmp_path, OFFICIAL, ("appearance", "stitching"))
    files = find_liveportrait_files([tmp_path])
    layouts = {f.network: f.layout for f in files.files()}
    assert layouts == {
        "appearance": OFFICIAL,
        "motion": KIJAI,
        "warping": KIJAI,
        "spade": KIJAI,
        "stitching": OFFICIAL,
    }
    assert files.stitching.name == "retargeting_models/stitching_retargeting_module.pth"
    before = files.identity
    assert find_liveportrait_files([tmp_path]).identity == before
    (tmp_path / "motion_extractor.safetensors").write_bytes(b"xy")
    assert find_liveportrait_files([tmp_path]).identity != before


def test_missing_files_name_files_layouts_and_places(tmp_path: Path) -> None:
    touch_layout(tmp_path, KIJAI, ("appearance", "motion", "warping"))
    absent = tmp_path / "nowhere"
    with pytest.raises(ModelNotFoundError) as caught:
        find_liveportrait_files([absent, tmp_path])
    text = str(caught.value)
    for name in (
        "base_models/spade_generator.pth",
        "spade_generator.safetensors",
        "retargeting_models/stitching_retargeting_module.pth",
        "stitching_retargeting_module.safetensors",
        str(absent) + " (missing)",
        str(tmp_path),
        "Kijai/LivePortrait_safetensors",
        "KwaiVGI/LivePortrait",
    ):
        assert name in text
    assert "motion_extractor.pth or" not in text  # found files are not reported missing


# Files that cannot be used ---------------------------------------------------------------


class MarkerPickle:
    """Unpickling this with full pickle would create a file (what a hostile .pth could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def _edit_kijai(path: Path, edit: Callable[[dict[str, torch.Tensor]], object]) -> None:
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bad_case(case: str, folder: Path) -> tuple[Path, list[str]]:
    """Break one file of a valid tiny set; return it and what the message must say."""
    appearance_st = folder / "appearance_feature_extractor.safetensors"
    appearance_pth = folder / "base_models" / "appearance_feature_extractor.pth"
    stitching_pth = folder / "retargeting_models" / "stitching_retargeting_module.pth"
    if case == "wrong shape":
        _edit_kijai(appearance_st, lambda t: t.update({"second.bias": torch.zeros(5)}))
        return appearance_st, ["second.bias", "[5]", "[16]", "Kijai .safetensors layout"]
    if case == "extra key":
        _edit_kijai(appearance_st, lambda t: t.update({"extra.weight": torch.zeros(1)}))
        return appearance_st, ["1 unexpected tensor (extra.weight)"]
    if case == "missing key":
        _edit_kijai(appearance_st, lambda t: t.pop("first.conv.bias"))
        return appearance_st, ["lacks 1 of the", "first.conv.bias"]
    if case == "truncated safetensors":
        _truncate(appearance_st)
        return appearance_st, ["truncated"]
    if case == "truncated pth":
        _truncate(appearance_pth)
        return appearance_pth, ["cannot be read", "truncated", "official LivePortrait .pth"]
    if case == "code in pth":
        probe = folder / "probe"
        pickle.loads(pickle.dumps(MarkerPickle(probe))).close()  # a plain unpickle runs it
        assert probe.exists()
        torch.save({"first.conv.weight": MarkerPickle(folder / "marker")}, appearance_pth)
        return appearance_pth, ["needs code", "refuses"]
    if case == "stitching without retarget_shoulder":
        torch.save({"retarget_eye": {}}, stitching_pth)
        return stitching_pth, ["retarget_shoulder", "retarget_eye"]
    raise AssertionError(case)


BAD_CASES = {
    "wrong shape": KIJAI,
    "extra key": KIJAI,
    "missing key": KIJAI,
    "truncated safetensors": KIJAI,
    "truncated pth": OFFICIAL,
    "code in pth": OFFICIAL,
    "stitching without retarget_shoulder": OFFICIAL,
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_unusable_file_gives_a_useful_message(
    tmp_path: Path, tiny: LivePortraitNetworks, case: str
) -> None:
    write_network_files(tiny, tmp_path, BAD_CASES[case])
    path, phrases = _bad_case(case, tmp_path)
    files = find_liveportrait_files([tmp_path])
    with pytest.raises(ModelNotFoundError) as caught:
        load_networks(files, TINY_CONFIG)
    text = str(caught.value)
    assert str(path) in text
    for phrase in phrases:
        assert phrase in text, (phrase, text)
    assert "Traceback" not in text
    assert not (tmp_path / "marker").exists()  # the hostile pickle never ran


# Semantics and forwards ------------------------------------------------------------------


def test_coordinate_grid_is_right_down_in_and_gaussian_peaks_at_keypoint() -> None:
    grid = make_coordinate_grid((3, 4, 5), torch.zeros(1))
    assert grid.shape == (3, 4, 5, 3)
    assert grid[0, 0, 0].tolist() == [-1, -1, -1] and grid[2, 3, 4].tolist() == [1, 1, 1]
    assert grid[0, 0, 1, 0] > grid[0, 0, 0, 0] and grid[0, 1, 0, 1] > grid[0, 0, 0, 1]
    kp = grid[1, 2, 3].view(1, 1, 3)
    heat = kp2gaussian(kp, (3, 4, 5))
    assert heat.shape == (1, 1, 3, 4, 5)
    assert heat[0, 0, 1, 2, 3] == 1 and heat.argmax().item() == (1 * 4 + 2) * 5 + 3
    step = (grid[1, 2, 4, 0] - grid[1, 2, 3, 0]).item()  # one pixel right: variance 0.01
    expected = math.exp(-0.5 * step**2 / 0.01)
    assert heat[0, 0, 1, 2, 4].item() == pytest.approx(expected, rel=1e-5)


def test_tiny_forward_shapes(tiny: LivePortraitNetworks) -> None:
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    features = extract_features(tiny, image)
    assert features.shape == (1, 8, 2, 64, 64)
    raw = motion_raw(tiny, image)
    shapes = {key: tuple(value.shape) for key, value in raw.items()}
    assert shapes == {
        "pitch": (1, 66),
        "yaw": (1, 66),
        "roll": (1, 66),
        "t": (1, 3),
        "exp": (1, 63),
        "scale": (1, 1),
        "kp": (1, 63),
    }
    x_s = raw["kp"].reshape(1, 21, 3)
    assert stitching_delta(tiny, x_s, x_s).shape == (1, 65)
    out = warp_decode(tiny, features, x_s, x_s + 0.05)
    assert out.shape == (1, 3, 512, 512)
    assert out.isfinite().all() and out.min() >= 0 and out.max() <= 1
    assert out.std() > 0.01  # spectral norms settled: not saturated at 0/1


def test_seeded_builds_are_identical_and_leave_global_rng_alone() -> None:
    state = torch.get_rng_state()
    first, second = (build_networks(TINY_CONFIG, seed=11) for _ in range(2))
    assert torch.equal(torch.get_rng_state(), state)
    for name, module in first.modules().items():
        theirs = second.modules()[name].state_dict()
        assert all(torch.equal(t, theirs[k]) for k, t in module.state_dict().items()), name
    other = build_networks(TINY_CONFIG, seed=12)
    assert not torch.equal(other.motion.detector.fc_kp.weight, first.motion.detector.fc_kp.weight)


def test_identical_keypoints_and_zero_stitching_stay_finite() -> None:
    nets = build_networks(TINY_CONFIG, seed=5)
    for parameter in nets.stitching.parameters():
        parameter.zero_()
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    x_s = motion_raw(nets, image)["kp"].reshape(1, 21, 3)
    delta = stitching_delta(nets, x_s, x_s.clone())
    assert torch.equal(delta, torch.zeros(1, 65))
    x_d = x_s + delta[:, :63].reshape(1, 21, 3)
    x_d[..., :2] += delta[:, 63:65].reshape(1, 1, 2)
    out = warp_decode(nets, extract_features(nets, image), x_s, x_d)
    assert out.isfinite().all()


def test_to_casts_floats_and_keeps_counters(tiny: LivePortraitNetworks) -> None:
    nets = build_networks(TINY_CONFIG, seed=7).to("cpu", torch.float16).eval()
    assert nets.appearance.first.conv.weight.dtype == torch.float16
    assert nets.appearance.first.norm.num_batches_tracked.dtype == torch.int64
    assert nets.spade.up_0.conv_0.weight_u.dtype == torch.float16
