"""Colour stage: each step against specs §9, LUT files, the grader and its fast path."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import engine.color.grader as grader_module
from engine.color import baked
from engine.color.cube import list_luts, load_cube, resolve_lut
from engine.color.exposure import apply_exposure
from engine.color.grader import ColorGrader
from engine.color.grain import (
    BLUR_SIZES,
    RGB_TO_YCC,
    add_grain,
    apply_grain,
    grain_base,
    grain_field,
    grain_fields,
    noise_size,
    opencv_gaussian_kernel,
    reflect101_index,
)
from engine.color.lut import apply_lut
from engine.color.tone import (
    apply_contrast,
    apply_saturation,
    apply_tone,
    contrast_mean,
    mean_from_sums,
)
from engine.errors import InputError
from engine.recipe import ColorParams, ExposureParams, GrainParams, LutParams, ToneParams

ASSET_LUTS = Path(__file__).resolve().parents[1] / "assets" / "luts"
LEVEL = 1.0 / 255.0


def pixels(*rgb: tuple[float, float, float]) -> torch.Tensor:
    """A (1, 3, 1, N) image from RGB triples."""
    return torch.tensor(rgb, dtype=torch.float32).T.reshape(1, 3, 1, len(rgb))


def sample_image(height: int = 72, width: int = 88, seed: int = 0) -> torch.Tensor:
    """Smooth gradients plus noise, every value in [0, 1]."""
    y = torch.linspace(0, 1, height).view(1, 1, height, 1)
    x = torch.linspace(0, 1, width).view(1, 1, 1, width)
    base = torch.cat([0.1 + 0.8 * x * y, 0.9 - 0.7 * y + 0 * x, 0.2 + 0.6 * x + 0 * y], dim=1)
    noise = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
    return (base + 0.15 * (noise - 0.5)).clamp(0, 1)


def write_cube(path: Path, rows: list[str], size: int | None, header: tuple[str, ...] = ()) -> Path:
    lines = [*header] + ([f"LUT_3D_SIZE {size}"] if size is not None else []) + rows
    path.write_text("\n".join(lines) + "\n")
    return path


def table_rows(size: int, fn=lambda r, g, b: (r, g, b)) -> list[str]:
    """Rows of a .cube table (red fastest) for a colour function on [0, 1]."""
    steps = [i / (size - 1) for i in range(size)]
    return [" ".join(f"{v:.7f}" for v in fn(r, g, b)) for b in steps for g in steps for r in steps]


# --- Exposure -------------------------------------------------------------------------------


def test_exposure_plus_32_is_one_stop_and_clips():
    out = apply_exposure(pixels((0.25, 0.1, 0.0), (0.75, 0.5, 1.0)), 32)
    expected = pixels((0.5, 0.2, 0.0), (1.0, 1.0, 1.0))
    assert torch.allclose(out, expected, atol=1e-7)


def test_negative_exposure_darkens_then_raises_the_black_point():
    out = apply_exposure(pixels((0.8, 0.3, 1.0)), -50)
    black = 50 / 250
    scaled = [v * 2 ** (-50 / 32) for v in (0.8, 0.3, 1.0)]
    expected = [min(max((v - black) / (1 - black), 0.0), 1.0) for v in scaled]
    assert expected[1] == 0.0  # 0.3 falls below the black point and clips
    assert torch.allclose(out.flatten(), torch.tensor(expected), atol=1e-6)
    assert out.flatten()[0].item() == pytest.approx(0.088561, abs=1e-5)


# --- Brightness / contrast / saturation -----------------------------------------------------


def test_brightness_scales_and_clips():
    tone = ToneParams(brightness=1.5, contrast=1.0, saturation=1.0)
    out = apply_tone(pixels((0.2, 0.4, 0.8)), tone)
    assert torch.allclose(out, pixels((0.3, 0.6, 1.0)), atol=1e-7)


def test_contrast_uses_the_rounded_integer_mean_luma():
    # Two grey pixels whose mean luma is 100.4 on the 0..255 scale: PIL uses 100, not 100.4.
    image = pixels((100 / 255,) * 3, (100.8 / 255,) * 3)
    assert contrast_mean(image).item() * 255 == pytest.approx(100.0, abs=1e-4)
    out = apply_contrast(image, 2.0)
    expected = [100 / 255 + 2 * (v - 100 / 255) for v in (100 / 255, 100.8 / 255)]
    assert torch.allclose(out[0, 0, 0], torch.tensor(expected), atol=1e-6)


def test_contrast_mean_rounds_half_up_like_pil():
    # Grey pixels summing to 100.5 over 255 pixels: a mean luma of exactly 100.5 / 255, which
    # PIL's int(mean + 0.5) takes to 101 where round-half-to-even would give 100.
    sums = torch.tensor([[100.5] * 3], dtype=torch.float64)
    assert mean_from_sums(sums, 255).item() * 255 == pytest.approx(101.0, abs=1e-4)


def test_contrast_mean_weights_luma_per_channel():
    image = pixels((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))  # L = 0.299*255, 0.587*255 -> mean 113.22
    assert contrast_mean(image).item() * 255 == pytest.approx(113.0, abs=1e-4)


def test_saturation_blends_towards_per_pixel_luma():
    out = apply_saturation(pixels((0.8, 0.4, 0.2)), 0.5)
    luma = 0.299 * 0.8 + 0.587 * 0.4 + 0.114 * 0.2
    expected = pixels(tuple(luma + 0.5 * (c - luma) for c in (0.8, 0.4, 0.2)))
    assert torch.allclose(out, expected, atol=1e-6)


def test_contrast_mean_is_taken_after_brightness():
    image = pixels((0.1, 0.1, 0.1), (0.3, 0.3, 0.3))
    tone = ToneParams(brightness=2.0, contrast=1.5, saturation=1.0)
    bright = [0.2, 0.6]
    mean = math.floor(sum(bright) / 2 * 255 + 0.5) / 255  # 102/255 after brightness
    expected = [mean + 1.5 * (v - mean) for v in bright]
    assert torch.allclose(apply_tone(image, tone)[0, 0, 0], torch.tensor(expected), atol=1e-6)


def test_factors_of_exactly_one_are_skipped():
    image = pixels((0.2, 0.4, 0.8))
    assert apply_tone(image, ToneParams(brightness=1, contrast=1, saturation=1)) is image


# --- Grain ----------------------------------------------------------------------------------


def reference_grain(height, width, grain: GrainParams) -> torch.Tensor:
    """The node written plainly over the whole noise image (F.pad reflect is BORDER_REFLECT_101)."""
    rows, cols = noise_size(height, width, grain.scale)
    noise = torch.rand(1, rows, cols, 3, generator=torch.Generator().manual_seed(grain.seed))
    ycc = (noise @ torch.tensor(RGB_TO_YCC).T).permute(0, 3, 1, 2)
    planes = []
    for channel, ksize in enumerate(BLUR_SIZES):
        kernel, pad = opencv_gaussian_kernel(ksize).float(), ksize // 2
        plane = F.pad(ycc[:, channel : channel + 1], (pad,) * 4, mode="reflect")
        plane = F.conv2d(F.conv2d(plane, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
        planes.append(plane[:, 0])
    y, c1, c2 = planes
    rgb = torch.stack([y + 1.5748 * c2, y - 0.1873 * c1 - 0.4681 * c2, y + 1.8556 * c1], 1)
    g = (rgb - 0.5) * grain.power
    g[:, 0] *= 2
    g[:, 2] *= 3
    g += 1
    g = g * grain.saturation + g[:, 1:2] * (1 - grain.saturation)
    return F.interpolate(g, size=(height, width), mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize(
    "height, width, scale, strip_rows",
    [(37, 53, 0.4, 5), (64, 48, 0.4, 11), (40, 30, 1.0, 16), (30, 41, 2.5, 9), (24, 20, 0.1, 64)],
)
def test_grain_field_built_in_strips_matches_the_whole_image_node(height, width, scale, strip_rows):
    grain = GrainParams(enabled=True, power=0.3, scale=scale, saturation=0.6, seed=7)
    base = grain_base(height, width, scale, grain.seed, strip_rows=strip_rows)
    got = grain_field(base, grain.power, grain.saturation)
    assert torch.allclose(got, reference_grain(height, width, grain), atol=2e-6)


def test_grain_on_noise_smaller_than_the_kernels():
    # 12 // 10 = 1 noise row and column: reflect-101 folds every tap onto it, so the field is flat.
    flat = grain_field(grain_base(12, 9, 10.0, 1), 0.5, 1.0)
    assert flat.shape == (3, 12, 9) and torch.allclose(flat, flat[:, :1, :1].expand_as(flat))
    # 64 // 10 = 6 rows, fewer than the 15-tap kernel needs on each side.
    grain = GrainParams(enabled=True, power=0.5, scale=10.0, saturation=1.0, seed=2)
    assert torch.isfinite(grain_fields(1, 64, 64, grain)).all()


def test_opencv_kernels_and_reflect_101():
    assert opencv_gaussian_kernel(3).tolist() == [0.25, 0.5, 0.25]  # OpenCV's fixed small kernel
    k15 = opencv_gaussian_kernel(15)
    sigma = 0.3 * ((15 - 1) * 0.5 - 1) + 0.8
    weights = [math.exp(-(i**2) / (2 * sigma**2)) for i in range(-7, 8)]
    assert k15.tolist() == pytest.approx([w / sum(weights) for w in weights], abs=1e-12)
    assert reflect101_index(-3, 8, 5).tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    assert noise_size(2048, 2048, 0.4) == (5119, 5119)  # Python's float floor division


def test_grain_step_eight_with_a_given_field():
    image = pixels((0.5, 0.1, 0.0))
    field = pixels((1.2, 0.5, 1.5))
    expected = pixels((1 - 0.5 * 1.2, 1 - 0.9 * 0.5, 0.0))  # 1 - 1 * 1.5 clips to 0
    assert torch.allclose(apply_grain(image, field), expected, atol=1e-7)


def test_grain_is_seeded_and_power_zero_is_identity():
    image = sample_image(24, 32)
    grain = GrainParams(enabled=True, power=0.5, scale=1.0, saturation=1.0, seed=3)
    first = add_grain(image, grain)
    assert torch.equal(first, add_grain(image, grain))
    assert not torch.allclose(first, add_grain(image, dataclasses.replace(grain, seed=4)))
    assert add_grain(image, dataclasses.replace(grain, power=0.0)) is image
    assert add_grain(image, dataclasses.replace(grain, enabled=False)) is image


def test_batch_image_i_uses_seed_plus_i():
    grain = GrainParams(enabled=True, power=0.4, scale=0.5, saturation=0.5, seed=10)
    both = grain_fields(2, 16, 20, grain)
    alone = grain_fields(1, 16, 20, dataclasses.replace(grain, seed=11))
    assert torch.equal(both[1], alone[0])


# --- LUT files ------------------------------------------------------------------------------


def test_identity_cube_leaves_the_image_unchanged(tmp_path):
    header = ("# a comment", 'TITLE "Identity"', "DOMAIN_MIN 0 0 0", "DOMAIN_MAX 1 1 1")
    lut = load_cube(write_cube(tmp_path / "id.cube", table_rows(5), 5, header))
    assert lut.title == "Identity" and lut.size == 5
    image = sample_image()
    assert (apply_lut(image, lut, 100) - image).abs().max() <= 1e-5
    assert (apply_lut(image, lut, 100, "log") - image).abs().max() <= 1e-5


def test_constant_lut_at_strength_50_gives_the_midpoint(tmp_path):
    rows = table_rows(3, lambda r, g, b: (0.2, 0.4, 0.6))
    lut = load_cube(write_cube(tmp_path / "flat.cube", rows, 3))
    image = sample_image(8, 8)
    expected = (image + torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)) / 2
    assert torch.allclose(apply_lut(image, lut, 50), expected, atol=1e-6)
    assert torch.equal(apply_lut(image, lut, 0), image)


def test_lut_domain_maps_in_and_back_out(tmp_path):
    # A table that doubles its input, declared on [0, 2]: the image maps in and back unchanged.
    rows = table_rows(9, lambda r, g, b: (2 * r, 2 * g, 2 * b))
    header = ("DOMAIN_MIN 0.0 0.0 0.0", "DOMAIN_MAX 2.0 2.0 2.0")
    lut = load_cube(write_cube(tmp_path / "wide.cube", rows, 9, header))
    image = sample_image()
    assert (apply_lut(image, lut, 100) - image).abs().max() <= 1e-5
    # On the default domain the same table is clipped to [0, 1] first (as LUT Apply does).
    clipped = load_cube(write_cube(tmp_path / "clip.cube", rows, 9))
    assert torch.allclose(apply_lut(image, clipped, 100), (2 * image).clamp(0, 1), atol=1e-5)


def test_tab_separated_rows_and_latin1_title(tmp_path):
    rows = [row.replace(" ", "\t") for row in table_rows(2)]
    path = tmp_path / "tabs.cube"
    path.write_bytes(('TITLE "Caf\xe9"\nLUT_3D_SIZE 2\n' + "\n".join(rows)).encode("latin-1"))
    lut = load_cube(path)
    assert lut.title == "Café" and torch.allclose(lut.table[1, 1, 1], torch.ones(3))


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\x00\xff\x10garbage\x00", "no LUT_3D_SIZE"),
        (b"LUT_3D_SIZE 2\n" + b"0 0 0\n" * 7, "7 colour rows"),
        (b"TITLE x\n" + b"0 0 0\n" * 8, "no LUT_3D_SIZE"),
        (b"LUT_3D_SIZE 2\n" + b"0 0 0\n" * 7 + b"0 zero 0\n", "not a number"),
        (b"LUT_3D_SIZE 2\n" + b"0 0\n" * 8, "wrong number"),
        (b"LUT_3D_SIZE 200\n0 0 0\n", "outside 2..129"),
        (b"LUT_3D_SIZE two\n", "whole number"),
        (b"LUT_1D_SIZE 4\n0 0 0\n", "1D LUT"),
        (b"LUT_3D_SIZE 2\nDOMAIN_MIN 0 0\n" + b"0 0 0\n" * 8, "DOMAIN_MIN needs 3"),
        (b"LUT_3D_SIZE 2\n" + b"nan 0 0\n" * 8, "finite"),
        (b"", "no LUT_3D_SIZE"),
    ],
)
def test_broken_cube_files_are_refused_with_the_file_name(tmp_path, content, problem):
    path = tmp_path / "broken_look.cube"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_cube(path)
    message = str(info.value)
    assert "broken_look.cube" in message and problem.lower() in message.lower()


@pytest.mark.parametrize(
    "name", ["../x.cube", "/etc/x.cube", "sub/x.cube", "..\\x.cube", "..", "", ".hidden.cube"]
)
def test_lut_names_must_be_plain_file_names(tmp_path, name):
    (tmp_path / "x.cube").write_text("LUT_3D_SIZE 2\n")
    with pytest.raises(InputError, match="not a plain .cube file name") as info:
        resolve_lut(name, [tmp_path / "luts"])
    assert str(tmp_path / "luts") in str(info.value)


def test_lut_lookup_lists_folders_and_names(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for folder, name in ((first, "Warm.cube"), (second, "Warm.cube"), (second, "cool.CUBE")):
        (folder / name).write_text("LUT_3D_SIZE 2\n")
    (second / "notes.txt").write_text("")
    found = list_luts([tmp_path / "missing", first, second])
    assert list(found) == ["cool.CUBE", "Warm.cube"] and found["Warm.cube"].parent == first
    assert resolve_lut("Warm.cube", [first, second]) == first / "Warm.cube"
    with pytest.raises(InputError, match="No LUT named 'gone.cube'") as info:
        resolve_lut("gone.cube", [first, second])
    assert str(first) in str(info.value) and str(second) in str(info.value)


def test_project_luts_load_and_are_reproducible(tmp_path):
    spec = importlib.util.spec_from_file_location("make_luts", ASSET_LUTS / "make_luts.py")
    make_luts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_luts)
    make_luts.main(tmp_path)
    for name in make_luts.LUTS:
        committed = ASSET_LUTS / name
        assert committed.read_bytes() == (tmp_path / name).read_bytes()
        assert committed.stat().st_size < 1.5 * 2**20
        assert load_cube(committed).size == make_luts.SIZE


# --- The grader -----------------------------------------------------------------------------


def suite_params(**lut_changes) -> ColorParams:
    return ColorParams(
        exposure=ExposureParams(enabled=True, exposure=-12),
        grain=GrainParams(enabled=True, power=0.2, scale=0.4, saturation=0.75, seed=5),
        tone=ToneParams(brightness=1.05, contrast=1.15, saturation=0.95),
        lut=LutParams(
            **({"enabled": True, "file": "teal_orange.cube", "strength": 50} | lut_changes)
        ),
    )


def test_disabled_colour_returns_the_input():
    image = sample_image()
    params = dataclasses.replace(suite_params(), enabled=False)
    assert ColorGrader([ASSET_LUTS]).grade(image, params) is image


def test_exact_grade_is_the_composition_of_the_steps():
    image = sample_image()
    params = suite_params()
    grader = ColorGrader([ASSET_LUTS])
    x = apply_exposure(image, params.exposure.exposure)
    x = add_grain(x, params.grain)
    x = apply_tone(x, params.tone)
    x = apply_lut(x, grader.load_lut(params.lut.file), params.lut.strength)
    assert torch.allclose(grader.grade(image, params, exact=True), x, atol=1e-6)


@pytest.mark.parametrize("color_space", ["linear", "log"])
def test_fast_path_stays_within_two_levels_of_the_exact_chain(color_space):
    image = sample_image(96, 80)
    before = image.clone()
    grader = ColorGrader([ASSET_LUTS])
    params = suite_params(color_space=color_space)
    fast = grader.grade(image, params)
    assert grader.last_routes == ["baked"]
    exact = grader.grade(image, params, exact=True)
    assert torch.equal(image, before)  # the input is never written
    assert fast.shape == image.shape and fast.dtype == torch.float32
    assert (fast - exact).abs().max() <= 2 * LEVEL
    assert (fast - exact).abs().mean() <= 0.6 * LEVEL


def test_a_grid_too_coarse_for_the_chain_is_caught(monkeypatch):
    image = sample_image(40, 40)
    params = suite_params()
    grader = ColorGrader([ASSET_LUTS])
    exact = grader.grade(image, params, exact=True)
    monkeypatch.setattr(baked, "BAKE_SIZE", 3)
    # Unchecked, a 3^3 grid misses the chain by far more than the bound above ...
    monkeypatch.setattr(baked, "MAX_GRID_ERROR_LEVELS", math.inf)
    assert (grader.grade(image, params) - exact).abs().max() > 4 * LEVEL
    # ... and the probe of the image's own colours sends it to the float path instead.
    monkeypatch.setattr(baked, "MAX_GRID_ERROR_LEVELS", 1.0)
    fast = grader.grade(image, params)
    assert grader.last_routes[0].startswith("float")
    assert (fast - exact).abs().max() <= 1e-5


def test_steep_log_grades_fall_back_to_float():
    params = suite_params(color_space="log", strength=100)
    harsh = ToneParams(brightness=1.2, contrast=1.6, saturation=1.5)
    params = dataclasses.replace(
        params, tone=harsh, lut=dataclasses.replace(params.lut, file="mono_silver.cube")
    )
    grader = ColorGrader([ASSET_LUTS])
    image = sample_image(64, 64)
    fast = grader.grade(image, params)
    assert grader.last_routes[0].startswith("float")
    assert (fast - grader.grade(image, params, exact=True)).abs().max() <= 1e-5


def test_grain_and_luts_are_cached_and_contrast_moves_reuse_them(monkeypatch, tmp_path):
    calls = []
    real = grader_module.grain_base
    monkeypatch.setattr(
        grader_module, "grain_base", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    grader = ColorGrader([ASSET_LUTS])
    image = sample_image(2 * 24, 32).view(2, 3, 24, 32)
    params = suite_params()
    first = grader.grade(image, params)
    assert len(calls) == 2  # one base per image: seeds 5 and 6
    moved = dataclasses.replace(params, tone=dataclasses.replace(params.tone, contrast=1.3))
    assert not torch.equal(grader.grade(image, moved), first)
    power = dataclasses.replace(params, grain=dataclasses.replace(params.grain, power=0.5))
    grader.grade(image, power)
    assert len(calls) == 2  # contrast and grain power reuse the cached noise
    assert grader.load_lut("teal_orange.cube") is grader.load_lut("teal_orange.cube")


def test_batch_grades_each_image_with_its_own_seed():
    grader = ColorGrader([ASSET_LUTS])
    image = sample_image(2 * 24, 32).view(2, 3, 24, 32)
    params = suite_params()
    both = grader.grade(image, params, exact=True)
    second = dataclasses.replace(params, grain=dataclasses.replace(params.grain, seed=6))
    alone = grader.grade(image[1:], second, exact=True)
    assert torch.allclose(both[1], alone[0], atol=1e-6)


def test_edited_lut_file_is_read_again(tmp_path):
    path = write_cube(tmp_path / "edit.cube", table_rows(2), 2)
    grader = ColorGrader([tmp_path])
    assert grader.list_luts() == ["edit.cube"]
    first = grader.load_lut("edit.cube")
    write_cube(path, table_rows(2, lambda r, g, b: (1 - r, 1 - g, 1 - b)), 2, ("# v2",))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = grader.load_lut("edit.cube")
    assert second is not first and second.table[0, 0, 0].tolist() == [1.0, 1.0, 1.0]


def test_lut_switched_on_without_a_file_says_what_to_do():
    params = dataclasses.replace(suite_params(), lut=LutParams(enabled=True, file=""))
    with pytest.raises(InputError, match="no LUT file is chosen"):
        ColorGrader([ASSET_LUTS]).grade(sample_image(8, 8), params)
