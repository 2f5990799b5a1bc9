"""Our PuLID-FLUX modules: state_dicts equal to the published manifest, strict loading with
useful errors, the forward math, and the hooks on tiny diffusers Flux transformers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel
from safetensors.torch import save_file

from engine.errors import ModelNotFoundError
from engine.flux.latents import image_ids
from engine.identity.pulid_inject import PulidHandle, StepWindow, attach_pulid
from engine.identity.pulid_networks import (
    REAL_PULID,
    TINY_PULID,
    PulidModules,
    build_pulid_modules,
    ca_placements,
)
from engine.identity.pulid_weights import (
    PREFERRED_FILES,
    find_pulid_file,
    load_pulid,
    pulid_dtype,
    pulid_folders,
    read_manifest,
)
from engine.models.tiny import TINY_TRANSFORMER, build_tiny_transformer, seeded

# specs/weights/pulid_counts.json (made from PuLID's classes at commit 1aa2fc7).
KEYS = {"all": 312, "pulid_encoder": 172, "pulid_ca": 140}
PARAMETERS = {"encoder": 151_398_400, "ca": 419_635_200, "one_ca": 20_981_760, "all": 571_033_600}
ZERO_FILE_BYTES = 1_142_099_520  # bf16 zeros, no metadata: the published file's size
CA_INDEX_TO_BLOCK = [
    *[("double", i) for i in (0, 2, 4, 6, 8, 10, 12, 14, 16, 18)],
    *[("single", i) for i in (0, 4, 8, 12, 16, 20, 24, 28, 32, 36)],
]
REAL_FILE = PREFERRED_FILES[0]


def layout_of(module: torch.nn.Module) -> list[tuple[str, tuple[tuple[int, ...], str]]]:
    return [
        (key, (tuple(t.shape), str(t.dtype).removeprefix("torch.")))
        for key, t in module.state_dict().items()
    ]


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# The real layout ----------------------------------------------------------------------------


def test_real_modules_equal_the_manifest() -> None:
    modules = build_pulid_modules(REAL_PULID, device="meta", dtype=torch.bfloat16)
    assert layout_of(modules) == list(read_manifest().items())  # keys, order, shapes, dtypes
    keys = list(modules.state_dict())
    assert len(keys) == KEYS["all"] and len(modules.ca) == 20
    for group in ("pulid_encoder", "pulid_ca"):
        assert sum(k.startswith(group + ".") for k in keys) == KEYS[group]
    assert parameters(modules.encoder) == PARAMETERS["encoder"]
    assert parameters(modules.ca) == PARAMETERS["ca"]
    assert parameters(modules.ca[0]) == PARAMETERS["one_ca"]
    assert parameters(modules) == PARAMETERS["all"]
    float32 = build_pulid_modules(REAL_PULID, device="meta")
    assert [k for k, _ in layout_of(float32)] == keys
    assert {t.dtype for t in float32.state_dict().values()} == {torch.float32}


def test_ca_index_to_block_for_flux_dev() -> None:
    placements = ca_placements(19, 38, 2, 4)
    assert [(p.stream, p.block) for p in placements] == CA_INDEX_TO_BLOCK
    assert REAL_PULID.placements == placements
    assert len(ca_placements(4, 8)) == 4 and len(ca_placements(1, 1)) == 2


def test_real_forward_shapes_on_meta() -> None:
    modules = build_pulid_modules(REAL_PULID, device="meta", dtype=torch.bfloat16)
    meta = {"device": "meta", "dtype": torch.bfloat16}
    hidden = [torch.empty(2, 577, 1024, **meta) for _ in range(5)]
    id_tokens = modules.encoder(torch.empty(2, 1280, **meta), hidden)
    assert id_tokens.shape == (2, 32, 2048)
    image = torch.empty(2, 4096, 3072, **meta)
    assert modules.ca[0](id_tokens, image).shape == image.shape


@pytest.fixture()
def zero_real_file(tmp_path: Path) -> Iterator[Path]:
    """A zero-filled file with the published layout (1.1 GB, bf16), deleted afterwards."""
    path = tmp_path / "pulid" / REAL_FILE
    path.parent.mkdir()
    tensors = {k: torch.zeros(s, dtype=getattr(torch, d)) for k, (s, d) in read_manifest().items()}
    save_file(tensors, str(path))
    del tensors
    yield path
    path.unlink()


def test_zero_real_file_loads_strictly(zero_real_file: Path) -> None:
    assert zero_real_file.stat().st_size == ZERO_FILE_BYTES
    file = find_pulid_file(pulid_folders(zero_real_file.parents[1]))
    assert file.path == zero_real_file
    modules = load_pulid(file, dtype=torch.bfloat16)
    assert layout_of(modules) == list(read_manifest().items())
    assert all(t.device.type == "cpu" for t in modules.state_dict().values())
    assert not any(t.any() for t in modules.state_dict().values())
    assert not modules.training


# Finding and loading (tiny files: the checks are the same, the files 1000x smaller) ---------


def tiny_state(seed: int = 3) -> dict[str, torch.Tensor]:
    return dict(build_pulid_modules(TINY_PULID, seed=seed).state_dict())


def write(folder: Path, tensors: dict[str, torch.Tensor], name: str = REAL_FILE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / name))
    return folder / name


def load_tiny(path: Path) -> PulidModules:
    return load_pulid(find_pulid_file([path.parent]), config=TINY_PULID)


def test_tiny_file_round_trip_in_float32_on_cpu(tmp_path: Path) -> None:
    state = tiny_state()
    loaded = load_tiny(write(tmp_path, {k: v.to(torch.bfloat16) for k, v in state.items()}))
    assert pulid_dtype("cpu") == torch.float32 and pulid_dtype("cuda") == torch.bfloat16
    for key, value in loaded.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, state[key].to(torch.bfloat16).float()), key


def test_find_prefers_v091_then_v090_then_other_flux_files(tmp_path: Path) -> None:
    folder = tmp_path / "pulid"
    folder.mkdir()
    for name in ("pulid_flux_v0.9.0.safetensors", "my_pulid_flux.safetensors", REAL_FILE):
        (folder / name).write_bytes(b"x")
    assert find_pulid_file([folder]).path.name == REAL_FILE
    (folder / REAL_FILE).unlink()
    assert find_pulid_file([folder]).path.name == "pulid_flux_v0.9.0.safetensors"
    (folder / "pulid_flux_v0.9.0.safetensors").unlink()
    assert find_pulid_file([folder]).path.name == "my_pulid_flux.safetensors"


def test_missing_file_names_the_places_and_the_sdxl_file(tmp_path: Path) -> None:
    folder = tmp_path / "pulid"
    folder.mkdir()
    (folder / "pulid_v1.1.safetensors").write_bytes(b"x")  # PuLID for SDXL
    with pytest.raises(ModelNotFoundError) as caught:
        find_pulid_file([folder, tmp_path / "nowhere"])
    message = str(caught.value)
    assert str(folder) in message and "nowhere (missing)" in message
    assert "pulid_v1.1.safetensors" in message and REAL_FILE in message
    assert pulid_folders(None) == []
    with pytest.raises(ModelNotFoundError, match="no models folder"):
        find_pulid_file([])


@pytest.mark.parametrize(
    ("edit", "says"),  # key -> new tensor (None: drop the key); what the message must say
    [
        ({"pulid_ca.1.to_out.weight": None}, "lacks 1 of the 14 pulid_ca tensors"),
        ({"pulid_ca.2.norm1.weight": torch.ones(16)}, "1 unexpected tensors"),
        ({"lora_unet.down.weight": torch.ones(4)}, "outside pulid_encoder and pulid_ca"),
        ({"pulid_encoder.latents": torch.zeros(1, 5, 16)}, "of shape [1, 5, 16] where [1, 4, 16]"),
    ],
)
def test_a_file_that_does_not_match_names_itself_and_the_problem(
    tmp_path: Path, edit: dict[str, torch.Tensor | None], says: str
) -> None:
    state = tiny_state()
    for key, tensor in edit.items():
        state.pop(key) if tensor is None else state.update({key: tensor})
    path = write(tmp_path, state)
    with pytest.raises(ModelNotFoundError) as caught:
        load_tiny(path)
    message = str(caught.value)
    for text in [str(path), *edit, says, "guozinan/PuLID"]:
        assert text in message


def test_a_truncated_file_names_itself(tmp_path: Path) -> None:
    path = write(tmp_path, tiny_state())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelNotFoundError, match="truncated") as caught:
        load_tiny(path)
    assert str(path) in str(caught.value)


# The forward math ---------------------------------------------------------------------------


def sdpa(layers: torch.nn.Module, queries: torch.Tensor, keys_values: torch.Tensor):
    """Standard attention with the layers' weights: PuLID's q·k scaling equals 1/sqrt(d)."""

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (layers.heads, -1)).transpose(1, 2)

    k, v = layers.to_kv(keys_values).chunk(2, dim=-1)
    out = F.scaled_dot_product_attention(heads(layers.to_q(queries)), heads(k), heads(v))
    return layers.to_out(out.transpose(1, 2).flatten(2))


def reference_idformer(encoder, id_cond: torch.Tensor, hidden: list[torch.Tensor]):
    """PuLID's loop written out: ID tokens join the queries; mapping_i's features join the
    ID tokens as context for layers [i·d, (i+1)·d); the first num_queries leave via proj_out."""
    cfg = encoder.config
    ids = encoder.id_embedding_mapping(id_cond).reshape(id_cond.shape[0], -1, cfg.dim)
    latents = torch.cat((encoder.latents.expand(id_cond.shape[0], -1, -1), ids), dim=1)
    per = cfg.depth // 5
    for i in range(5):
        context = torch.cat((ids, getattr(encoder, f"mapping_{i}")(hidden[i])), dim=1)
        for attention, ff in encoder.layers[i * per : (i + 1) * per]:
            normed = attention.norm2(latents)
            kv = torch.cat((attention.norm1(context), normed), dim=1)
            latents = sdpa(attention, normed, kv) + latents
            latents = ff(latents) + latents
    return latents[:, : cfg.num_queries] @ encoder.proj_out


def test_idformer_shapes_and_math() -> None:
    rng = torch.random.get_rng_state()
    modules, again = (build_pulid_modules(TINY_PULID, seed=5) for _ in range(2))
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG is left alone
    assert all(map(torch.equal, modules.state_dict().values(), again.state_dict().values()))
    gen = torch.Generator().manual_seed(0)
    id_cond = torch.randn(2, TINY_PULID.encoder.id_cond_dim, generator=gen)
    hidden = [torch.randn(2, 17, 16, generator=gen) for _ in range(5)]
    out = modules.encoder(id_cond, hidden)
    assert out.shape == (2, 4, 16)
    torch.testing.assert_close(out, reference_idformer(modules.encoder, id_cond, hidden))
    assert modules.encoder(torch.randn(2, 3, TINY_PULID.encoder.id_cond_dim), hidden).shape == (
        2,
        4,
        16,
    )  # 3 images each
    with pytest.raises(ValueError, match="5 hidden states"):
        modules.encoder(id_cond, hidden[:4])


def test_ca_is_scaled_attention_of_image_tokens_over_id_tokens() -> None:
    ca = build_pulid_modules(TINY_PULID, seed=6).ca[0]
    gen = torch.Generator().manual_seed(1)
    id_tokens, image = torch.randn(2, 4, 16, generator=gen), torch.randn(2, 9, 32, generator=gen)
    expected = sdpa(ca, ca.norm2(image), ca.norm1(id_tokens))
    torch.testing.assert_close(ca(id_tokens, image), expected)


# Hooks on the tiny Flux ---------------------------------------------------------------------


def flux_with(double: int, single: int) -> FluxTransformer2DModel:
    config = {**TINY_TRANSFORMER, "num_layers": double, "num_single_layers": single}
    with seeded(11):
        return FluxTransformer2DModel(**config).eval()


def flux_inputs(batch: int = 1) -> dict[str, torch.Tensor]:
    """64x64 px (16 image tokens), 8 text tokens; a batch repeats the same image."""
    gen = torch.Generator().manual_seed(2)
    one = {
        "hidden_states": torch.randn(1, 16, 64, generator=gen),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=gen),
        "pooled_projections": torch.randn(1, 32, generator=gen),
        "timestep": torch.full((1,), 0.7),
        "guidance": torch.full((1,), 3.5),
    }
    ids = {"txt_ids": torch.zeros(8, 3), "img_ids": image_ids(64, 64, torch.device("cpu"))}
    return {**{k: v.repeat(batch, *[1] * (v.ndim - 1)) for k, v in one.items()}, **ids}


def run(model: FluxTransformer2DModel, batch: int = 1) -> torch.Tensor:
    with torch.inference_mode():
        return model(**flux_inputs(batch), return_dict=False)[0]


def id_tokens(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, 16, generator=torch.Generator().manual_seed(4)) * 3


@pytest.fixture(scope="module")
def flux_4_8() -> FluxTransformer2DModel:
    return flux_with(4, 8)


def named_blocks(model: FluxTransformer2DModel) -> list[tuple[str, int, torch.nn.Module]]:
    double = [("double", i, b) for i, b in enumerate(model.transformer_blocks)]
    return double + [("single", i, b) for i, b in enumerate(model.single_transformer_blocks)]


def attached(model: FluxTransformer2DModel, seed: int = 8) -> PulidHandle:
    double, single = len(model.transformer_blocks), len(model.single_transformer_blocks)
    modules = build_pulid_modules(TINY_PULID.with_blocks(double, single), seed=seed)
    return attach_pulid(model, modules)


def test_hooks_fire_after_exactly_the_expected_blocks(flux_4_8) -> None:
    events: list[str] = []
    recorders = [
        block.register_forward_hook(lambda *_, name=f"{kind[0]}{i}": events.append(name))
        for kind, i, block in named_blocks(flux_4_8)
    ]
    handle = attached(flux_4_8)
    recorders += [
        ca.register_forward_hook(lambda *_, name=f"ca{i}": events.append(name))
        for i, ca in enumerate(handle.ca)
    ]
    handle.set(id_tokens(), 1.0)
    try:
        run(flux_4_8)
    finally:
        handle.remove()
        for recorder in recorders:
            recorder.remove()
    assert " ".join(events) == "d0 ca0 d1 d2 ca1 d3 s0 ca2 s1 s2 s3 s4 ca3 s5 s6 s7"


def test_placements_on_a_19_38_transformer_match_the_counts() -> None:
    model = flux_with(19, 38)
    handle = attached(model)
    assert [(p.stream, p.block) for p in handle.placements] == CA_INDEX_TO_BLOCK
    hooked = [(kind, i) for kind, i, block in named_blocks(model) if block._forward_hooks]
    assert hooked == CA_INDEX_TO_BLOCK
    handle.remove()
    assert not any(block._forward_hooks for *_, block in named_blocks(model))


def test_weight_zero_window_and_gate_are_bit_identical_and_remove_restores(flux_4_8) -> None:
    base = run(flux_4_8)
    handle = attached(flux_4_8)
    try:
        assert torch.equal(run(flux_4_8), base)  # nothing set yet
        handle.set(id_tokens(), 0.0)
        assert torch.equal(run(flux_4_8), base)
        handle.set(id_tokens(), 1.0)
        changed = run(flux_4_8)
        assert not torch.allclose(changed, base)
        handle.set_window(0.5, 1.0)
        handle.set_progress(0.25)
        assert torch.equal(run(flux_4_8), base)
        handle.set_progress(0.75)
        assert torch.equal(run(flux_4_8), changed)
        handle.set_gate(lambda: False)
        assert torch.equal(run(flux_4_8), base)
        handle.set_gate(None)
        pair = run(flux_4_8, batch=2)  # one set of ID tokens for two images
        torch.testing.assert_close(pair, torch.cat((changed, changed)))
    finally:
        handle.remove()
    assert torch.equal(run(flux_4_8), base)
    with pytest.raises(ValueError):
        StepWindow(0.6, 0.4)


def block_call(block: torch.nn.Module, model: FluxTransformer2DModel):
    gen = torch.Generator().manual_seed(9)
    ids = torch.cat((torch.zeros(8, 3), image_ids(64, 64, torch.device("cpu"))))
    with torch.inference_mode():
        return block(
            hidden_states=torch.randn(1, 16, 32, generator=gen),
            encoder_hidden_states=torch.randn(1, 8, 32, generator=gen),
            temb=torch.randn(1, 32, generator=gen),
            image_rotary_emb=model.pos_embed(ids),
        )


@pytest.mark.parametrize(
    ("stream", "index"), [("transformer_blocks", 0), ("single_transformer_blocks", 2)]
)
def test_weight_one_adds_ca_to_the_image_tokens_only(flux_4_8, stream: str, index: int) -> None:
    block = getattr(flux_4_8, stream)[0]
    text, image = block_call(block, flux_4_8)
    handle = attached(flux_4_8)
    handle.set(id_tokens(), 0.6)
    try:
        hooked_text, hooked_image = block_call(block, flux_4_8)
        with torch.inference_mode():
            expected = image + 0.6 * handle.ca[index](id_tokens(), image)
    finally:
        handle.remove()
    assert torch.equal(hooked_text, text)
    assert torch.equal(hooked_image, expected) and not torch.allclose(hooked_image, image)


def test_ca_count_must_fit_the_transformer() -> None:
    modules = build_pulid_modules(TINY_PULID, seed=1)  # 2 modules: 1 double + 1 single block
    assert len(attach_pulid(build_tiny_transformer(), modules).placements) == 2
    with pytest.raises(ModelNotFoundError, match="needs 4"):
        attach_pulid(flux_with(4, 8), modules)
