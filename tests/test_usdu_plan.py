"""Ultimate SD Upscale planning: target size, grid, job order, crops and masks, checked
against values worked out by hand from the ComfyUI port's rules (see engine/upscale/usdu_plan)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from engine.upscale.usdu_masks import Rect, job_alpha, job_mask, render_mask
from engine.upscale.usdu_plan import (
    UsduSettings,
    grid,
    job_count,
    plan_jobs,
    redraw_jobs,
    redraw_order,
    redraw_processing_size,
    seam_fix_jobs,
    target_size,
)

GREY = 1 / 255  # one 8-bit level


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _redraw(width: int, height: int, **changes) -> dict:
    """The redraw jobs by (xi, yi), each as (crop box, processing size), and the jobs."""
    jobs = {j.grid_index: j for j in redraw_jobs(UsduSettings(**changes), width, height)}
    return {i: (j.crop.box, j.processing_size) for i, j in jobs.items()}, jobs


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        ((1024, 1024), 2, (2048, 2048)),
        ((2048, 2048), 2, (4096, 4096)),
        # 1500 / 8 = 187.5 → 188 and 2100 / 8 = 262.5 → 262: Python rounds half to even.
        ((1000, 1400), 1.5, (1504, 2096)),
        ((832, 1216), 2, (1664, 2432)),
        ((1000, 1000), 1.15, (1152, 1152)),  # 1149.99… / 8 = 143.75 → 144
        ((100, 100), 0.05, (8, 8)),
    ],
)
def test_target_size_rounds_to_multiples_of_8(size, scale, expected):
    assert target_size(*size, scale) == expected


@pytest.mark.parametrize(
    ("canvas", "tile", "expected"),
    [
        ((2048, 2048), (512, 512), (4, 4)),
        ((1504, 2096), (512, 512), (5, 3)),  # 2096 / 512 = 4.09 → 5 rows
        ((4096, 4096), (1024, 1024), (4, 4)),
        ((1504, 2096), (512, 768), (3, 3)),
        ((1000, 1400), (2048, 2048), (1, 1)),
    ],
)
def test_grid_is_rows_then_cols_rounded_up(canvas, tile, expected):
    settings = UsduSettings(tile_width=tile[0], tile_height=tile[1])
    assert grid(*canvas, settings) == expected


def test_redraw_processing_size_rounds_tile_plus_padding_to_8():
    assert redraw_processing_size(UsduSettings()) == (544, 544)
    assert redraw_processing_size(UsduSettings(tile_width=1024, tile_height=768)) == (1056, 800)
    assert redraw_processing_size(UsduSettings(tile_padding=24)) == (536, 536)


def test_linear_order_is_row_major():
    jobs = redraw_jobs(UsduSettings(), 1536, 1024)
    assert [j.grid_index for j in jobs] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    assert all(j.pass_name == "redraw" for j in jobs)


def test_chess_order_runs_even_squares_first():
    jobs = redraw_jobs(UsduSettings(mode="chess"), 2048, 2048)
    white = [(0, 0), (2, 0), (1, 1), (3, 1), (0, 2), (2, 2), (1, 3), (3, 3)]
    black = [(1, 0), (3, 0), (0, 1), (2, 1), (1, 2), (3, 2), (0, 3), (2, 3)]
    assert [j.grid_index for j in jobs] == white + black
    assert redraw_order(3, 3, "none") == []
    assert redraw_jobs(UsduSettings(mode="none"), 2048, 2048) == []


# Default settings on 2048²: the white rectangle reaches x2 + 1 (PIL draws inclusive), padding
# 32, one pixel back off inner edges, then grown to the 1:1 processing ratio: right by half the
# shortfall, left by the rest, right again.
@pytest.mark.parametrize(
    ("index", "crop"),
    [
        ((0, 0), (0, 0, 544, 544)),  # corner: (0, 0, 513+32, …) − 1
        ((1, 1), (480, 480, 1056, 1056)),  # centre: 512 − 32, 1025 + 32 − 1
        ((1, 0), (480, 0, 1056, 576)),  # top edge: 576×544 grown down 16, up 0, down 16
        ((0, 1), (0, 480, 576, 1056)),  # left edge: grown right 16, left 0, right 16
        ((3, 1), (1472, 480, 2048, 1056)),  # right edge: blocked on the right, shifts left 32
        ((3, 3), (1504, 1504, 2048, 2048)),  # far corner: canvas edges keep their pixel
    ],
)
def test_uniform_redraw_crops(index, crop):
    crops, jobs = _redraw(2048, 2048)
    assert crops[index] == (crop, (544, 544))
    assert jobs[index].tile == Rect(index[0] * 512, index[1] * 512, *(i * 512 + 512 for i in index))


def test_partial_last_column_crop():
    # Tile 1024..1536 clipped at 1504: (992, 0, 1504, 544), then grown left to 544 wide.
    assert _redraw(1504, 2096)[0][(2, 0)] == ((960, 0, 1504, 544), (544, 544))
    loose = _redraw(1504, 2096, force_uniform_tiles=False)[0]
    assert loose[(2, 0)] == ((992, 0, 1504, 544), (512, 544))


def test_non_uniform_crops_round_up_to_8():
    crops = _redraw(2048, 2048, force_uniform_tiles=False, tile_padding=24)[0]
    # Centre: (488, 488, 1048, 1048) is 560 wide, already a multiple of 8; corner 536.
    assert crops[(1, 1)] == ((488, 488, 1048, 1048), (560, 560))
    assert crops[(0, 0)] == ((0, 0, 536, 536), (536, 536))
    # No padding: the inclusive pixel is taken back off, so every tile is 512.
    unpadded = _redraw(2048, 2048, force_uniform_tiles=False, tile_padding=0)[0]
    assert {size for _, size in unpadded.values()} == {(512, 512)}


@pytest.mark.parametrize("canvas", [(2048, 2048), (1504, 2096), (4096, 4096), (1000, 1400)])
@pytest.mark.parametrize("tile", [(512, 512), (1024, 1024), (512, 768), (2048, 2048)])
def test_uniform_crops_share_ratio_and_stay_inside(canvas, tile):
    settings = UsduSettings(tile_width=tile[0], tile_height=tile[1])
    jobs = redraw_jobs(settings, *canvas)
    processing = redraw_processing_size(settings)
    full = Rect(0, 0, *canvas)
    assert {j.processing_size for j in jobs} == {processing}
    for job in jobs:
        assert job.crop.intersect(full) == job.crop
        assert job.crop.intersect(job.tile) == job.tile.intersect(full)  # holds the tile
        if job.crop.width < canvas[0] and job.crop.height < canvas[1]:
            ratio = processing[0] / processing[1]
            assert abs(job.crop.width - job.crop.height * ratio) <= 1


def test_square_uniform_crops_are_square_and_equal_inside():
    crops = _redraw(2048, 2048)[0]
    widths = {i: (box[2] - box[0], box[3] - box[1]) for i, (box, _) in crops.items()}
    corners = {(0, 0), (3, 0), (0, 3), (3, 3)}
    assert {w for i, w in widths.items() if i not in corners} == {(576, 576)}
    assert {w for i, w in widths.items() if i in corners} == {(544, 544)}


def test_redraw_mask_without_blur_is_the_inclusive_rectangle():
    job = redraw_jobs(UsduSettings(mask_blur=0), 1024, 1024)[0]
    drawn = Image.new("L", (1024, 1024), "black")
    ImageDraw.Draw(drawn).rectangle((0, 0, 512, 512), fill="white")
    mask = job_mask(job)
    assert mask.dtype == np.float32 and mask.shape == (1024, 1024)
    assert np.array_equal(mask, np.asarray(drawn, dtype=np.float32) / 255)
    assert mask[512, 512] == 1 and mask[513, 512] == 0


def test_redraw_mask_is_blurred_symmetrically():
    job = _redraw(2048, 2048)[1][(1, 1)]
    mask = job_mask(job)
    assert job.blur == 8
    assert mask[768, 768] == 1.0 and mask[600, 900] == 1.0  # tile interior
    assert mask[100, 100] == 0 and mask[768, 1100] == 0 and mask[2000, 768] == 0
    # White spans 512..1024 inclusive: centre 768, edges at 511.5 and 1024.5.
    row = mask[768]
    assert np.abs(row[768 - np.arange(300)] - row[768 + np.arange(300)]).max() <= GREY
    assert np.abs(mask[:, 768] - row).max() <= GREY
    for inside, outside in ((1024, 1025), (512, 511)):
        assert row[inside] == pytest.approx(_phi(0.5 / 8), abs=0.02)
        assert row[outside] == pytest.approx(_phi(-0.5 / 8), abs=0.02)


def test_mask_matches_pil_blur_of_the_full_canvas():
    job = redraw_jobs(UsduSettings(mask_blur=12), 1024, 1024)[3]
    drawn = Image.new("L", (1024, 1024), "black")
    ImageDraw.Draw(drawn).rectangle((512, 512, 1024, 1024), fill="white")
    expected = np.asarray(drawn.filter(ImageFilter.GaussianBlur(12)), dtype=np.float32) / 255
    assert np.array_equal(job_mask(job), expected)


def test_windowed_alpha_equals_the_full_mask_in_the_crop():
    settings = UsduSettings(seam_fix_mode="half_tile_intersections", seam_fix_mask_blur=16)
    for job in plan_jobs(settings, 1536, 1536)[::3]:
        crop = job.crop
        assert np.array_equal(job_alpha(job), job_mask(job)[crop.y1 : crop.y2, crop.x1 : crop.x2])
    window = Rect(100, 200, 300, 260)
    job = plan_jobs(settings, 1536, 1536)[4]
    assert np.array_equal(render_mask(job.mask, window), job_mask(job)[200:260, 100:300])


@pytest.mark.parametrize(("canvas", "rows", "cols"), [((2048, 1536), 3, 4), ((512, 512), 1, 1)])
@pytest.mark.parametrize(
    ("mode", "count"),
    [
        ("none", lambda r, c: 0),
        ("band_pass", lambda r, c: r + c - 2),
        ("half_tile", lambda r, c: r * (c - 1) + (r - 1) * c),
        ("half_tile_intersections", lambda r, c: r * (c - 1) + (r - 1) * c + (r - 1) * (c - 1)),
    ],
)
def test_seam_fix_job_counts(canvas, rows, cols, mode, count):
    settings = UsduSettings(seam_fix_mode=mode)
    assert grid(*canvas, settings) == (rows, cols)
    assert len(seam_fix_jobs(settings, *canvas)) == count(rows, cols)
    assert job_count(settings, *canvas) == len(plan_jobs(settings, *canvas))


def test_seam_fix_order_and_pass_settings():
    settings = UsduSettings(seam_fix_mode="half_tile_intersections", denoise=0.35)
    jobs = seam_fix_jobs(settings, 2048, 1536)
    assert [j.mask.kind for j in jobs] == ["horizontal_seam"] * 8 + ["vertical_seam"] * 9 + [
        "corner"
    ] * 6
    assert {j.denoise for j in jobs} == {0.35}  # the port samples seam fixes at `denoise`
    assert {(j.pass_name, j.padding, j.blur, j.processing_size) for j in jobs} == {
        ("half_tile", 16, 8, (512, 512)),
        ("intersection", 0, 8, (512, 512)),
    }
    bands = seam_fix_jobs(UsduSettings(seam_fix_mode="band_pass"), 2048, 1536)
    assert [j.mask.kind for j in bands] == ["vertical_band"] * 3 + ["horizontal_band"] * 2
    assert [j.tile.box for j in bands][::3] == [(480, 0, 544, 1536), (0, 480, 2048, 544)]
    assert {j.blur for j in bands} == {0}
    assert [j.processing_size for j in bands][2:4] == [(96, 1536), (2048, 96)]


def test_half_tile_gradients_by_hand():
    settings = UsduSettings(seam_fix_mode="half_tile", seam_fix_mask_blur=0)
    across_row, _, across_col, _ = seam_fix_jobs(settings, 1024, 1024)
    assert across_row.tile.box == (0, 256, 512, 768)
    # A 256-level ramp resized only in width keeps its rows: row 256 + k is k, row 512 + k is
    # 255 − k (the rotated ramp).
    mask = job_mask(across_row) * 255
    assert [mask[y, 10] for y in (255, 256, 300, 511, 512, 700, 767, 768)] == [
        0, 0, 44, 255, 255, 67, 0, 0,
    ]  # fmt: skip
    assert mask[400, 600] == 0
    # Bounding box (0, 257, 512, 767) ± 16 → (0, 241, 528, 783) − 1 → 527×541, then grown to
    # 541 wide: right 7, left 0 (blocked), right 7.
    assert across_row.crop.box == (0, 241, 541, 782)
    mask = job_mask(across_col) * 255
    assert across_col.tile.box == (256, 0, 768, 512)
    assert [mask[10, x] for x in (256, 300, 511, 512, 700)] == [0, 44, 255, 255, 67]
    assert across_col.crop.box == (241, 0, 782, 541)


def test_half_tile_gradient_is_blurred_by_the_seam_blur():
    settings = UsduSettings(seam_fix_mode="half_tile", seam_fix_mask_blur=8)
    mask = job_mask(seam_fix_jobs(settings, 1024, 1024)[0])
    # A linear ramp is unchanged by a symmetric blur away from its peak and ends.
    assert mask[300, 100] * 255 == pytest.approx(44, abs=1)
    # The peak (255 on rows 511 and 512 unblurred) is rounded off, the far rows stay black.
    assert mask[480, 100] < mask[512, 100] < 1 and mask[100, 100] == 0


def test_band_pass_gradient_by_hand():
    settings = UsduSettings(seam_fix_mode="band_pass")
    vertical = seam_fix_jobs(settings, 1024, 1024)[0]
    assert vertical.tile.box == (480, 0, 544, 1024)
    row = job_mask(vertical)[700] * 255
    # Each half of the band is a 0→255 ramp sampled at 32 pixel centres: 8u + 3.5 ≈ 4 + 8u.
    for u in (0, 1, 16, 31):
        assert row[480 + u] == pytest.approx(4 + 8 * u, abs=1)
        assert row[543 - u] == pytest.approx(4 + 8 * u, abs=1)
    assert row[479] == 0 and row[544] == 0
    # Box (480, 544) ± 16 − 1 = 95 wide × the full height; 96:1024 asks for 96: left 1.
    assert vertical.crop.box == (463, 0, 559, 1024)
    assert vertical.processing_size == (96, 1024)


def test_intersection_gradient_by_hand():
    settings = UsduSettings(
        tile_width=256, tile_height=256, seam_fix_mode="half_tile_intersections",
        seam_fix_mask_blur=0,
    )  # fmt: skip
    (corner,) = [j for j in seam_fix_jobs(settings, 512, 512) if j.pass_name == "intersection"]
    assert corner.tile.box == (128, 128, 384, 384) and corner.padding == 0
    mask = job_mask(corner) * 255

    def inverted_radial(dx: int, dy: int) -> int:  # PIL: min(255, ⌊√(2·(dx² + dy²))⌋)
        return 255 - min(255, math.isqrt(2 * (dx * dx + dy * dy)))

    for dx, dy in ((0, 0), (8, 0), (0, -28), (-128, 0), (-127, -127), (-128, -128), (60, 70)):
        assert mask[256 + dy, 256 + dx] == inverted_radial(dx, dy)
    assert [mask[256, 128], mask[256, 127], mask[128, 128]] == [74, 0, 0]
    assert corner.crop.box == (128, 128, 383, 383) and corner.processing_size == (256, 256)


INVALID = [
    {"tile_width": 500}, {"tile_height": 32}, {"tile_width": True}, {"tile_padding": 12},
    {"mask_blur": 65}, {"seam_fix_mask_blur": -1}, {"denoise": 1.5}, {"seam_fix_denoise": -0.1},
    {"upscale_by": 0}, {"upscale_by": float("nan")}, {"upscale_by": 5}, {"mode": "spiral"},
    {"seam_fix_mode": "bogus"}, {"seam_fix_mode": "band_pass", "seam_fix_width": 0},
    {"seam_fix_width": 60}, {"force_uniform_tiles": "yes"},
]  # fmt: skip


@pytest.mark.parametrize("changes", INVALID)
def test_invalid_settings_are_refused(changes):
    with pytest.raises(ValueError):
        UsduSettings(**changes)


@pytest.mark.parametrize(
    "call", [lambda: target_size(0, 1024, 2), lambda: grid(9, 0, UsduSettings())]
)
def test_invalid_sizes_are_refused(call):
    with pytest.raises(ValueError):
        call()
