"""fp8 compute: the scaled fp8 matmul against its dequantised reference, the path choice per
device (injected facts), the tiny transformer and LoRA on top, and the engine's report."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import save_file
from test_lora import apply_both, build_kohya, run_transformer, slot

from engine.lora import LoraStack
from engine.models.checkpoint import read_header, read_tensors
from engine.models.fp8_compute import (
    FP8,
    FP8_MAX,
    Fp8Linear,
    apply_fp8_compute,
    quantise_rows,
    quantise_weight,
)
from engine.models.manager import ModelConfig, ModelManager
from engine.models.precision import (
    FP8_COMPUTE,
    FP8_STORAGE,
    FULL,
    HIGH_PRECISION_PATTERNS,
    DeviceFacts,
    precision_path,
)
from engine.models.tiny import build_tiny_transformer
from engine.recipe import ModelParams

CPU = DeviceFacts("cpu", "cpu")
AMPERE = DeviceFacts("cuda", "NVIDIA A100", (8, 0))
ADA = DeviceFacts("cuda", "NVIDIA L40S", (8, 9))
HOPPER = DeviceFacts("cuda", "NVIDIA H100", (9, 0))
FP8_RELATIVE_STEP = 2.0**-3  # e4m3: 3 mantissa bits, so rounding is within half of this


def linear(fan_in: int = 64, out: int = 48, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(fan_in, out)


def reference(layer: Fp8Linear, x: torch.Tensor) -> torch.Tensor:
    """The same fp8 activations and weights, dequantised and multiplied in fp32."""
    values, scale = quantise_rows(x.reshape(-1, layer.in_features))
    out = (values.float() * scale) @ layer.dequantised_weight().float().t()
    if layer.bias is not None:
        out = out + layer.bias.float()
    return out.reshape(*x.shape[:-1], layer.out_features)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scaled_matmul_equals_the_dequantised_reference(dtype):
    layer = Fp8Linear.from_linear(linear().to(dtype), dtype)
    x = torch.randn(3, 20, 64).to(dtype)
    out = layer(x)
    assert out.dtype == dtype and out.shape == (3, 20, 48)
    tolerance = 1e-5 if dtype == torch.float32 else 2.0**-8  # bf16 output rounding
    expected = reference(layer, x)
    assert ((out.float() - expected).abs() <= tolerance * expected.abs().max()).all()


def test_fp8_output_stays_within_fp8_rounding_of_the_full_precision_layer():
    full = linear(256, 128)
    layer = Fp8Linear.from_linear(full, torch.float32)
    x = torch.randn(64, 256)
    error = (layer(x) - full(x)).norm() / full(x).norm()
    assert 0 < error < FP8_RELATIVE_STEP / 2  # two fp8 roundings, averaged over 256 terms


def test_rows_are_independent_whatever_their_count():
    """Row counts are padded to 16 for the kernels: a row's output never depends on others."""
    layer = Fp8Linear.from_linear(linear(), torch.float32)
    rows = torch.randn(17, 64)
    batch = layer(rows)
    for i in (0, 16):
        assert torch.allclose(layer(rows[i : i + 1]), batch[i : i + 1], atol=1e-6)
    assert torch.equal(layer(torch.zeros(1, 64)), layer.bias[None])  # zero input: bias only


def test_weights_already_in_fp8_keep_their_values_with_scale_one():
    """An fp8 file read into bf16 is used as stored, not quantised again."""
    stored = (torch.randn(48, 64) * 0.05).to(FP8)
    values, scales = quantise_weight(stored.to(torch.bfloat16))
    assert torch.equal(values.view(torch.uint8), stored.view(torch.uint8))
    assert torch.equal(scales, torch.ones(48))


def stored_fp8(per_row: bool) -> torch.Tensor:
    """fp8 values as a quantiser writes them: the largest magnitude of each row (per-row
    scales) or of the whole tensor (one scale) is 448."""
    values = torch.randn(48, 64, generator=torch.Generator().manual_seed(5))
    values = values * torch.linspace(0.1, 1.0, 48)[:, None]  # rows of different ranges
    amax = values.abs().amax(dim=1, keepdim=True) if per_row else values.abs().max()
    return (values / amax * FP8_MAX).to(FP8)


@pytest.mark.parametrize("per_row", [False, True])
def test_fp8_scaled_files_give_back_their_stored_values(per_row, tmp_path):
    """The loader dequantises fp8_scaled files (values x scale) into bf16; the fp8 compute
    path finds the stored values again instead of rounding a second time."""
    stored = stored_fp8(per_row)
    scale = torch.linspace(0.001, 0.02, 48) if per_row else torch.tensor(0.0123)
    path = tmp_path / "flux_fp8_scaled.safetensors"
    save_file(
        {"layer.weight": stored, "layer.scale_weight": scale, "scaled_fp8": torch.zeros(0)},
        str(path),
    )
    loaded = read_tensors(read_header(path), dtype=torch.bfloat16)["layer.weight"]
    values, scales = quantise_weight(loaded)
    assert torch.equal(values.view(torch.uint8), stored.view(torch.uint8))
    expected = scale.expand(48) if per_row else torch.full((48,), 0.0123)
    assert torch.allclose(scales, expected, rtol=2**-7)


def test_other_weights_get_one_scale_per_row_that_fills_the_fp8_range():
    weight = torch.randn(48, 64) * torch.linspace(0.01, 10, 48)[:, None]
    values, scales = quantise_weight(weight)
    assert values.dtype == FP8 and scales.shape == (48,)
    row_max = values.float().abs().amax(dim=1)
    assert torch.allclose(row_max, torch.full((48,), FP8_MAX))
    dequantised = values.float() * scales[:, None]
    assert ((dequantised - weight).abs() <= weight.abs() * FP8_RELATIVE_STEP / 2 + 1e-9).all()


@pytest.mark.parametrize(
    "facts, weight_dtype, mode, path",
    [
        (CPU, "fp8_e4m3fn", "auto", FP8_STORAGE),  # no CUDA
        (AMPERE, "fp8_e4m3fn", "auto", FP8_STORAGE),  # CUDA without fp8 tensor cores
        (ADA, "fp8_e4m3fn", "auto", FP8_COMPUTE),
        (HOPPER, "fp8_e4m3fn", "auto", FP8_COMPUTE),  # fp8 available
        (HOPPER, "fp8_e4m3fn", "off", FP8_STORAGE),
        (HOPPER, "fp8_e5m2", "auto", FP8_STORAGE),  # the matmul takes e4m3 weights
        (HOPPER, "bf16", "auto", FULL),
        (CPU, "fp32", "on", FULL),
        (CPU, "fp8_e4m3fn", "on", FP8_COMPUTE),  # forced: a CPU emulates it
    ],
)
def test_the_precision_path_follows_the_device(facts, weight_dtype, mode, path):
    assert precision_path(weight_dtype, facts, mode) == path


def test_device_facts_and_a_bad_mode():
    assert not CPU.fp8_matmul and not AMPERE.fp8_matmul and HOPPER.fp8_matmul
    assert DeviceFacts.of(torch.device("cpu")) == CPU
    with pytest.raises(ValueError, match="fp8 compute must be one of"):
        precision_path("fp8_e4m3fn", HOPPER, "fast")


def test_the_tiny_transformer_converts_every_linear_but_positions_and_norms():
    model = build_tiny_transformer()
    plain = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]
    count = apply_fp8_compute(model, torch.float32, HIGH_PRECISION_PATTERNS)
    converted = [n for n, m in model.named_modules() if isinstance(m, Fp8Linear)]
    assert count == len(plain) == len(converted) and converted == plain
    assert all(m.weight.dtype == FP8 for m in model.modules() if isinstance(m, Fp8Linear))
    norms = [
        m for m in model.modules() if isinstance(m, torch.nn.LayerNorm) and m.weight is not None
    ]
    assert all(m.weight.dtype == torch.float32 for m in norms)


def test_the_tiny_transformer_in_fp8_compute_stays_close_to_fp32():
    full = build_tiny_transformer()
    fp8 = build_tiny_transformer()
    apply_fp8_compute(fp8, torch.float32, HIGH_PRECISION_PATTERNS)
    expected = run_transformer(full)
    error = (run_transformer(fp8) - expected).norm() / expected.norm()
    assert 0 < error < 0.1


def lora_delta(bundle, stack: LoraStack, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(output with the LoRA at 0.8) - (output with it off), and the output with it on."""
    apply_both(stack, bundle, [slot(name, 0.0, 0.0)])
    base = run_transformer(bundle.transformer)
    apply_both(stack, bundle, [slot(name, 0.8, 0.8)])
    on = run_transformer(bundle.transformer)
    return on - base, on


def test_lora_on_the_fp8_compute_path_matches_lora_on_full_precision(tmp_path):
    loras = tmp_path / "loras"
    build_kohya().save(loras / "k.safetensors")
    manager = ModelManager(ModelConfig(tiny=True, device="cpu", fp8_compute="on"))
    full = manager.flux(ModelParams())
    full_delta, full_on = lora_delta(full, LoraStack(loras), "k.safetensors")
    fp8 = manager.flux(ModelParams(weight_dtype="fp8_e4m3fn"))
    assert fp8.files.precision == FP8_COMPUTE
    fp8_delta, fp8_on = lora_delta(fp8, LoraStack(loras), "k.safetensors")
    q = fp8.transformer.transformer_blocks[0].attn.to_q  # a peft wrapper over an Fp8Linear
    assert isinstance(q.base_layer, Fp8Linear)
    assert q.lora_A[next(iter(q.lora_A))].weight.dtype == torch.float32
    assert (fp8_delta - full_delta).norm() / full_delta.norm() < 0.1
    assert (fp8_on - full_on).norm() / full_on.norm() < 0.1


def test_an_adapter_loaded_before_conversion_keeps_working(tmp_path):
    """The manager converts after its before-casting hooks (LoRA) ran: base_layer converts."""
    loras = tmp_path / "loras"
    build_kohya().save(loras / "k.safetensors")
    stack = LoraStack(loras)
    manager = ModelManager(ModelConfig(tiny=True, device="cpu", fp8_compute="on"))
    reference = manager.flux(ModelParams())
    _, expected = lora_delta(reference, stack, "k.safetensors")
    manager.before_casting.append(
        lambda model, files: stack.apply(
            dataclasses.replace(reference, transformer=model), [slot("k.safetensors", 0.8)],
            part="transformer",
        )
    )  # fmt: skip
    fp8 = manager.flux(ModelParams(weight_dtype="fp8_e4m3fn"))
    q = fp8.transformer.transformer_blocks[0].attn.to_q
    assert isinstance(q.base_layer, Fp8Linear) and q.lora_A
    out = run_transformer(fp8.transformer)
    assert (out - expected).norm() / expected.norm() < 0.1
