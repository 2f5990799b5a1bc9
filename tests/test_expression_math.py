"""The Expression editor's formulas against specs/algorithms.md §7: slider -> keypoint table,
rotation convention, target keypoints, crop-box rules, the paste-back mask, the presets."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from engine.errors import InputError
from engine.expression import editor, presets
from engine.expression.crop import (
    CropSquare,
    choose_face,
    crop_square,
    find_face,
    plan_crop,
)
from engine.expression.editor import EditParams, apply_stitching, is_neutral, target_keypoints
from engine.expression.keypoints import KeypointInfo, bins_to_degrees, rotation_matrix
from engine.expression.paste import mask_template, paste_face, warp_to_frame
from engine.expression.sliders import PoseDelta, SliderValues, expression_delta, slider_pose
from engine.faces.boxes import FaceBox
from engine.recipe import ExpressionParams

X, Y, Z = 0, 1, 2

# The spec's table, one slider at a time: value -> {(row, axis): delta}.
SLIDER_TABLE = {
    "smile": {(20, Y): -0.01, (14, Y): -0.02, (17, Y): 0.0065, (17, Z): 0.003,
              (13, Y): -0.00275, (16, Y): -0.00275, (3, Y): -0.0035, (7, Y): -0.0035},
    "aaa": {(19, Y): 0.001, (19, Z): 0.0001, (17, Y): -0.0001},
    "eee": {(20, Z): -0.001, (20, Y): -0.001, (14, Y): -0.001},
    "woo": {(14, Y): 0.001, (3, Y): -0.0005, (7, Y): -0.0005, (17, Z): -0.0005},
    "wink": {(11, Y): 0.001, (13, Y): -0.0003, (17, X): 0.0003, (17, Y): 0.0003,
             (3, Y): -0.0003},
    "blink": {(11, Y): -0.001, (13, Y): 0.0003, (15, Y): -0.001, (16, Y): 0.0003,
              (1, Y): -0.00025, (2, Y): 0.00025},
}  # fmt: skip


def expected_delta(terms: dict[tuple[int, int], float], value: float) -> torch.Tensor:
    out = torch.zeros(1, 21, 3)
    for (row, axis), coefficient in terms.items():
        out[0, row, axis] += coefficient * value
    return out


@pytest.mark.parametrize("name", sorted(SLIDER_TABLE))
@pytest.mark.parametrize("value", [-3.0, 0.5, 12.0])
def test_each_linear_slider_moves_exactly_its_table_rows(name: str, value: float) -> None:
    got = expression_delta(SliderValues(**{name: value}))
    torch.testing.assert_close(got, expected_delta(SLIDER_TABLE[name], value), atol=1e-9, rtol=0)


@pytest.mark.parametrize("value", [-7.0, 4.0])
def test_pupil_x_uses_different_weights_per_side(value: float) -> None:
    got = expression_delta(SliderValues(pupil_x=value))
    eleven, fifteen = (0.0007, 0.001) if value > 0 else (0.001, 0.0007)
    expected = expected_delta({(11, X): eleven, (15, X): fifteen}, value)
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)


def test_pupil_y_moves_the_pupils_and_half_of_it_blinks() -> None:
    q = 6.0
    got = expression_delta(SliderValues(pupil_y=q))
    expected = expected_delta({(11, Y): -0.001, (15, Y): -0.001}, q)
    expected += expected_delta(SLIDER_TABLE["blink"], -q / 2)
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("value", [-8.0, 9.0])
def test_eyebrow_raises_on_y_and_frowns_on_x(value: float) -> None:
    got = expression_delta(SliderValues(eyebrow=value))
    if value > 0:
        terms = {(1, Y): 0.001, (2, Y): -0.001}
    else:
        terms = {(1, X): -0.001, (2, X): 0.001, (1, Y): 0.0003, (2, Y): -0.0003}
    torch.testing.assert_close(got, expected_delta(terms, value), atol=1e-9, rtol=0)


def test_mouth_and_wink_sliders_also_turn_the_head() -> None:
    assert slider_pose(SliderValues(aaa=40)) == PoseDelta(pitch=-2.0)
    pose = slider_pose(SliderValues(wink=10))
    assert pose.roll == pytest.approx(-1.0) and pose.yaw == pytest.approx(-1.0)
    assert pose.pitch == 0


def test_head_pose_bins_to_degrees() -> None:
    logits = torch.full((2, 66), -1e4)
    logits[0, 0] = 0  # all mass on bin 0 -> -97.5 degrees
    logits[1, 40] = 0  # bin 40 -> 22.5 degrees
    torch.testing.assert_close(bins_to_degrees(logits), torch.tensor([-97.5, 22.5]))
    uniform = bins_to_degrees(torch.zeros(1, 66))  # expected bin 32.5 -> 0 degrees
    torch.testing.assert_close(uniform, torch.tensor([0.0]), atol=1e-4, rtol=0)


def test_rotation_is_rz_ry_rx_transposed_for_row_vectors() -> None:
    pitch, yaw, roll = 10.0, -25.0, 40.0
    got = rotation_matrix(torch.tensor([pitch]), torch.tensor([yaw]), torch.tensor([roll]))[0]
    a, b, c = (math.radians(v) for v in (pitch, yaw, roll))
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = torch.tensor([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    torch.testing.assert_close(got, (rz @ ry @ rx).T, atol=1e-6, rtol=0)
    # pure yaw of 90 degrees: the row vector x-axis goes to -z (right-multiplied)
    quarter = rotation_matrix(torch.tensor([0.0]), torch.tensor([90.0]), torch.tensor([0.0]))
    torch.testing.assert_close(
        torch.tensor([[1.0, 0, 0]]) @ quarter[0], torch.tensor([[0.0, 0, -1]]), atol=1e-6, rtol=0
    )


def source_info(seed: int = 0) -> KeypointInfo:
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.1  # noqa: E731
    return KeypointInfo(
        pitch=torch.tensor([3.0]), yaw=torch.tensor([-5.0]), roll=torch.tensor([2.0]),
        t=r(1, 3), exp=r(1, 21, 3), scale=torch.tensor([[1.3]]), kp=r(1, 21, 3),
    )  # fmt: skip


def spec_target(info: KeypointInfo, params: ExpressionParams) -> torch.Tensor:
    """The spec's formula written out independently of engine.expression.editor."""
    sliders = {f.name: getattr(params, f.name) for f in dataclasses.fields(SliderValues)}
    delta = expression_delta(SliderValues(**sliders))
    pose = slider_pose(SliderValues(**sliders))
    exp = info.exp * params.src_ratio
    exp[0, 5] = info.exp[0, 5]
    pitch = info.pitch + params.rotate_pitch + pose.pitch
    yaw = info.yaw - params.rotate_yaw + pose.yaw
    roll = info.roll + params.rotate_roll + pose.roll
    rotation = rotation_matrix(pitch, yaw, roll)
    return info.scale * ((info.kp + exp + delta) @ rotation) + info.t


def test_target_keypoints_follow_the_spec_formula() -> None:
    info = source_info()
    params = ExpressionParams(
        smile=0.8, aaa=30, wink=5, rotate_yaw=7, rotate_pitch=-4, rotate_roll=3, src_ratio=0.6
    )
    got = target_keypoints(info, EditParams.from_recipe(params))
    torch.testing.assert_close(got, spec_target(info, params), atol=1e-6, rtol=0)


def test_all_three_translation_components_are_added_to_the_target() -> None:
    info = source_info()
    moved = dataclasses.replace(info, t=info.t + torch.tensor([[0.0, 0.0, 0.5]]))
    edit = EditParams.from_recipe(ExpressionParams(smile=0.3))
    shift = target_keypoints(moved, edit) - target_keypoints(info, edit)
    torch.testing.assert_close(shift[..., 2], torch.full((1, 21), 0.5), atol=1e-6, rtol=0)


def driving_info() -> KeypointInfo:
    info = source_info(seed=7)
    return dataclasses.replace(
        info, pitch=torch.tensor([6.0]), yaw=torch.tensor([-9.0]), roll=torch.tensor([1.5])
    )


@pytest.mark.parametrize("parts", editor.SAMPLE_PARTS)
def test_driving_parts_choose_rows_and_pose(parts: str) -> None:
    driving = driving_info()
    edit = EditParams.from_recipe(ExpressionParams(sample_parts=parts, sample_ratio=0.5))
    delta, pose = editor.driving_deltas(edit, driving)
    exp = driving.exp.clone()
    exp[0, 5, :2] = 0  # the driving face's row 5 x and y are zeroed
    rows = {
        "OnlyExpression": range(21), "All": range(21), "OnlyRotation": (),
        "OnlyMouth": (14, 17, 19, 20), "OnlyEyes": (1, 2, 11, 13, 15, 16),
    }[parts]  # fmt: skip
    expected = torch.zeros(1, 21, 3)
    for row in rows:
        expected[0, row] = exp[0, row] * 0.5
    torch.testing.assert_close(delta, expected)
    turns = parts in ("OnlyRotation", "All")
    assert pose == (PoseDelta(3.0, -4.5, 0.75) if turns else PoseDelta())


def test_stitching_adds_63_deltas_then_tx_ty() -> None:
    x_s, x_d = torch.zeros(1, 21, 3), torch.ones(1, 21, 3)
    delta = torch.arange(65, dtype=torch.float32)[None] / 100
    got = apply_stitching(x_s, x_d, delta)
    expected = x_d + delta[:, :63].reshape(1, 21, 3)
    expected[..., 0] += 0.63
    expected[..., 1] += 0.64
    torch.testing.assert_close(got, expected)


def test_neutral_means_off() -> None:
    assert is_neutral(ExpressionParams())
    assert not is_neutral(ExpressionParams(smile=0.01))
    assert not is_neutral(ExpressionParams(rotate_roll=-1))
    assert not is_neutral(ExpressionParams(src_ratio=0.9))
    assert not is_neutral(ExpressionParams(sample_image="sha256:" + "0" * 64))
    assert is_neutral(ExpressionParams(crop_factor=2.0, sample_ratio=0.3))


# -- crop rules ------------------------------------------------------------------------------


def box(x1: float, y1: float, x2: float, y2: float) -> FaceBox:
    return FaceBox(x1, y1, x2, y2, 0.9)


def test_the_face_nearest_the_horizontal_centre_wins_and_narrow_ones_are_dropped() -> None:
    left, centre_high, narrow = box(10, 10, 110, 110), box(300, 0, 400, 90), box(495, 0, 520, 30)
    assert choose_face([left, centre_high, narrow], 1000) == centre_high  # only x counts
    assert choose_face([narrow], 1000) is None  # 25 px wide
    assert choose_face([box(0, 0, 30, 30)], 1000) == box(0, 0, 30, 30)  # 30 px is enough


def test_crop_square_is_centred_and_uses_the_larger_side() -> None:
    # box 100 x 150 at centre (250, 275): side 1.7 * 150 = 255
    square = crop_square(box(200, 200, 300, 350), 1.7, 1000, 1000)
    assert square == CropSquare(int(250 - 127.5), int(275 - 127.5), int(250 + 127.5), 402)


def test_crop_square_is_shifted_inside_the_image() -> None:
    near_left = crop_square(box(0, 400, 100, 500), 2.0, 1000, 1000)  # would start at -50
    assert (near_left.x1, near_left.x2) == (0, 200)
    near_right = crop_square(box(900, 400, 1000, 500), 2.0, 1000, 1000)
    assert (near_right.x1, near_right.x2) == (800, 1000)


def test_a_square_larger_than_the_image_is_cut_by_the_smaller_overshoot() -> None:
    # 300 x 200 image, face 100 x 100 in the middle, factor 2.5 -> 250 square
    square = crop_square(box(100, 50, 200, 150), 2.5, 300, 200)
    # x: 25..275 fits; y: -25..225 -> 0..250, overshoots by 50; only y sticks out: no cut
    assert square == CropSquare(25, 0, 275, 250)
    plan = plan_crop(box(100, 50, 200, 150), 2.5, 300, 200)
    assert plan.clipped and plan.region == CropSquare(25, 0, 275, 200)
    assert plan.face_scale == (250 / 512, 250 / 512)  # the face keeps the square's scale
    assert plan.mask_scale == (250 / 512, 200 / 512)  # the mask is fitted to the region
    # 200 x 150 image: the 250 square overshoots by 50 (x) and 100 (y): both cut by 50
    assert crop_square(box(50, 25, 150, 125), 2.5, 200, 150) == CropSquare(0, 0, 200, 200)


def test_no_face_and_tiny_face_messages() -> None:
    with pytest.raises(InputError, match="No face was found in the image"):
        find_face([], 640, 480, "the image")
    with pytest.raises(InputError, match=r"too small to edit \(20 px wide.*at least 30 px"):
        find_face([box(0, 0, 20, 20)], 640, 480, "the image")


# -- paste-back -------------------------------------------------------------------------------


def test_mask_template_matches_the_published_file() -> None:
    mask = mask_template()
    assert mask.shape == (512, 512) and mask.dtype == torch.uint8
    assert (mask[16:497, 16:497] == 255).all()
    assert (mask[0] == 0).all() and (mask[:, 0] == 0).all()
    assert mask[511, 256] == 15 and mask[256, 511] == 15  # one pixel off-centre
    assert mask[8, 256] == 127  # half way through the 16 px feather
    assert mask[4, 4] == 0 and mask[5, 5] == 7  # rounded corners: Euclidean distance
    assert abs(mask.float().mean().item() / 255 - 0.938) < 0.001
    assert abs((mask == 255).float().mean().item() - 0.883) < 0.001
    assert abs((mask == 0).float().mean().item() - 0.0045) < 0.0005


def test_warp_puts_the_patch_at_the_crop_square() -> None:
    patch = torch.zeros(1, 512, 512)
    patch[0, 256, 256] = 1.0
    # square at (100, 50), side 256: patch pixel 256 lands on frame 100 + 128 = 228
    warped = warp_to_frame(patch, (100, 50), (0.5, 0.5), (0, 0, 400, 400))
    assert warped.shape == (1, 400, 400)
    assert warped[0, 50 + 128, 100 + 128] == pytest.approx(1.0)


def test_paste_keeps_everything_outside_the_square_and_blends_inside() -> None:
    source = torch.rand(3, 300, 400)
    face = torch.zeros(3, 512, 512)
    plan = plan_crop(box(150, 100, 250, 200), 1.5, 400, 300)
    out = paste_face(source, face, plan, mask_template())
    square = plan.square
    inside = out[:, square.y1 + 20 : square.y2 - 20, square.x1 + 20 : square.x2 - 20]
    torch.testing.assert_close(inside, torch.zeros_like(inside), atol=1e-5, rtol=0)  # all face
    outside = torch.ones(300, 400, dtype=torch.bool)
    outside[square.y1 : square.y2, square.x1 : square.x2] = False
    assert torch.equal(out[:, outside], source[:, outside])


# -- presets ----------------------------------------------------------------------------------


def test_the_24_presets_of_the_documentation() -> None:
    library = presets.load_presets()
    assert len(library) == 24 and len({p.label for p in library}) == 24
    assert library[0].label == "Eyes Closed + Gentle Smile" and library[-1].label.startswith(
        "Side Glance Right"
    )
    neutral = next(p for p in library if p.label == presets.NEUTRAL)
    assert is_neutral(ExpressionParams(**presets.node_values(neutral)))
    for preset in library:  # every value lies in the node's range (the recipe accepts it)
        ExpressionParams(**presets.node_values(preset))


def test_preset_mapping_to_node_units() -> None:
    by_label = {p.label: p for p in presets.load_presets()}
    closed = presets.node_values(by_label["Eyes Closed + Gentle Smile"])
    assert closed["blink"] == -20.0 and closed["smile"] == 0.3 and closed["eyebrow"] == 3.0
    frown = presets.node_values(by_label["Angry Frown"])
    assert frown["eyebrow"] == -10.0  # -1 -> the node's -10 (its raise side goes to +15)
    up_left = presets.node_values(by_label["Eyes Up Left"])
    assert up_left["pupil_x"] == -15.0 and up_left["pupil_y"] == 15.0  # doc -1 = up
    assert up_left["rotate_pitch"] == -8.0 and up_left["rotate_yaw"] == -15.0
    wink_left = presets.node_values(by_label["Side Wink Left"])
    wink_right = presets.node_values(by_label["Side Wink Right"])
    assert wink_left["wink"] == wink_right["wink"] == 25.0
    o_mouth = presets.node_values(by_label["O-Shape Mouth"])
    assert (o_mouth["aaa"], o_mouth["woo"], o_mouth["eee"]) == (30.0, 15.0, 0.0)
    yawn = presets.node_values(by_label["Big Yawn"])
    assert yawn["aaa"] == 120.0 and yawn["blink"] == -4.0
