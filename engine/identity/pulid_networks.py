"""Our PuLID-FLUX networks: the IDFormer that turns a face into ID tokens, and the
cross-attention modules (PerceiverAttentionCA) that add those tokens to Flux's image stream.

Built from `REAL_PULID`, `PulidModules.state_dict()` equals pulid_flux_v0.9.1.safetensors key
for key (names, order, shapes; bf16 when built in bf16; engine/identity/manifests/). The
forward passes follow PuLID's own (specs/weights/pulid_notes.md). `TINY_PULID` keeps every
interface at a few channels and fits the tiny Flux (hidden 32) for tests and the demo mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

# IDFormer reads EVA-CLIP hidden states at five depths; each feeds an equal share of layers.
NUM_VIT_SCALES = 5
DOUBLE, SINGLE = "double", "single"


@dataclass(frozen=True)
class IDFormerConfig:
    """IDFormer widths; the defaults are PuLID's (the published file's)."""

    dim: int = 1024
    depth: int = 10
    dim_head: int = 64
    heads: int = 16
    num_id_token: int = 5
    num_queries: int = 32
    output_dim: int = 2048
    ff_mult: int = 4
    id_cond_dim: int = 1280  # antelopev2 embedding (512) + EVA-CLIP embedding (768)
    vit_width: int = 1024  # EVA02-CLIP-L hidden width
    mapping_width: int = 1024  # hidden width of the mapping MLPs


@dataclass(frozen=True)
class CrossAttentionConfig:
    """PerceiverAttentionCA widths: `dim` is Flux's hidden size, `kv_dim` the ID tokens'."""

    dim: int = 3072
    dim_head: int = 128
    heads: int = 16
    kv_dim: int = 2048


@dataclass(frozen=True)
class CaPlacement:
    """Where one cross-attention module acts: after block `block` of the `stream` blocks."""

    stream: str  # DOUBLE or SINGLE
    block: int


@dataclass(frozen=True)
class PulidConfig:
    """The encoder, the CA modules and the transformer they attach to (block counts)."""

    encoder: IDFormerConfig
    ca: CrossAttentionConfig
    double_blocks: int = 19
    single_blocks: int = 38
    double_interval: int = 2
    single_interval: int = 4

    def __post_init__(self) -> None:
        if self.encoder.depth % NUM_VIT_SCALES:
            raise ValueError(f"IDFormer depth must be a multiple of {NUM_VIT_SCALES}")
        if self.ca.kv_dim != self.encoder.output_dim:
            raise ValueError("the CA modules' kv_dim must equal the IDFormer's output_dim")

    def with_blocks(self, double_blocks: int, single_blocks: int) -> PulidConfig:
        """The same widths for a transformer with other block counts."""
        return replace(self, double_blocks=double_blocks, single_blocks=single_blocks)

    @property
    def placements(self) -> tuple[CaPlacement, ...]:
        return ca_placements(
            self.double_blocks, self.single_blocks, self.double_interval, self.single_interval
        )


REAL_PULID = PulidConfig(encoder=IDFormerConfig(), ca=CrossAttentionConfig())
TINY_PULID = PulidConfig(
    encoder=IDFormerConfig(
        dim=16,
        depth=5,
        dim_head=8,
        heads=2,
        num_id_token=2,
        num_queries=4,
        output_dim=16,
        ff_mult=2,
        id_cond_dim=1280,  # the ID embedder gives 512 + 768 values in tiny mode too
        vit_width=16,
        mapping_width=16,
    ),
    ca=CrossAttentionConfig(dim=32, dim_head=8, heads=2, kv_dim=16),  # tiny Flux: 2 x 16
    double_blocks=1,
    single_blocks=1,
)


def ca_placements(
    double_blocks: int, single_blocks: int, double_interval: int = 2, single_interval: int = 4
) -> tuple[CaPlacement, ...]:
    """CA index -> block, as PuLID counts: after every `interval`-th block from block 0,
    double blocks first (19 double / 38 single blocks give 10 + 10 = 20 modules)."""
    doubles = [CaPlacement(DOUBLE, i) for i in range(0, double_blocks, double_interval)]
    singles = [CaPlacement(SINGLE, i) for i in range(0, single_blocks, single_interval)]
    return tuple(doubles + singles)


# Attention ------------------------------------------------------------------------------


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(b, n, heads·d) -> (b, heads, n, d)."""
    batch, length, _ = x.shape
    return x.reshape(batch, length, heads, -1).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(b, heads, n, d) -> (b, n, heads·d)."""
    batch, heads, length, dim_head = x.shape
    return x.permute(0, 2, 1, 3).reshape(batch, length, heads * dim_head)


def perceiver_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dim_head: int
) -> torch.Tensor:
    """PuLID's attention: q and k each scaled by dim_head^-1/4 before the product (steadier
    in half precision than scaling after), softmax in float32."""
    scale = 1 / math.sqrt(math.sqrt(dim_head))
    weight = (q * scale) @ (k * scale).transpose(-2, -1)
    weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
    return weight @ v


class _AttentionLayers(nn.Module):
    """The layers both attention modules share (their state_dict keys, in order)."""

    def __init__(self, dim: int, dim_head: int, heads: int, kv_dim: int) -> None:
        super().__init__()
        self.dim_head = dim_head
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(kv_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(kv_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def attend(self, queries: torch.Tensor, keys_values: torch.Tensor) -> torch.Tensor:
        """Normalised `queries` attend over normalised `keys_values`; back to `dim`."""
        q = _split_heads(self.to_q(queries), self.heads)
        k, v = (_split_heads(t, self.heads) for t in self.to_kv(keys_values).chunk(2, dim=-1))
        return self.to_out(_merge_heads(perceiver_attention(q, k, v, self.dim_head)))


class PerceiverAttention(_AttentionLayers):
    """IDFormer's attention: the latents attend over the context and themselves."""

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        context = self.norm1(context)
        latents = self.norm2(latents)
        return self.attend(latents, torch.cat((context, latents), dim=-2))


class PerceiverAttentionCA(_AttentionLayers):
    """Flux image tokens (`dim`) attend over the ID tokens (`kv_dim`)."""

    def __init__(self, config: CrossAttentionConfig) -> None:
        super().__init__(config.dim, config.dim_head, config.heads, config.kv_dim)

    def forward(self, id_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.attend(self.norm2(image_tokens), self.norm1(id_tokens))


class FeedForward(nn.Sequential):
    """LayerNorm, Linear up, GELU, Linear down (keys .0, .1, .3; no biases on the Linears)."""

    def __init__(self, dim: int, mult: int) -> None:
        inner = int(dim * mult)
        super().__init__(
            nn.LayerNorm(dim),
            nn.Linear(dim, inner, bias=False),
            nn.GELU(),
            nn.Linear(inner, dim, bias=False),
        )


def _mapping(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Linear, LN, LeakyReLU, Linear, LN, LeakyReLU, Linear (keys .0, .1, .3, .4, .6)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.LayerNorm(hidden),
        nn.LeakyReLU(),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
        nn.LeakyReLU(),
        nn.Linear(hidden, out_dim),
    )


class IDFormer(nn.Module):
    """Perceiver resampler: learned queries plus the ID tokens attend over the ID tokens and
    EVA-CLIP features of five depths (each depth feeds depth/5 layers, in order)."""

    def __init__(self, config: IDFormerConfig) -> None:
        super().__init__()
        self.config = config
        scale = config.dim**-0.5
        self.latents = nn.Parameter(torch.randn(1, config.num_queries, config.dim) * scale)
        self.proj_out = nn.Parameter(scale * torch.randn(config.dim, config.output_dim))
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PerceiverAttention(config.dim, config.dim_head, config.heads, config.dim),
                    FeedForward(config.dim, config.ff_mult),
                ]
            )
            for _ in range(config.depth)
        )
        for index in range(NUM_VIT_SCALES):
            mapping = _mapping(config.vit_width, config.mapping_width, config.dim)
            self.add_module(f"mapping_{index}", mapping)
        self.id_embedding_mapping = _mapping(
            config.id_cond_dim, config.mapping_width, config.dim * config.num_id_token
        )

    def forward(self, id_cond: torch.Tensor, vit_hidden: Sequence[torch.Tensor]) -> torch.Tensor:
        """id_cond [B, id_cond_dim] (or [B, images, id_cond_dim]) and five [B, tokens,
        vit_width] hidden states -> ID tokens [B, num_queries, output_dim]."""
        if len(vit_hidden) != NUM_VIT_SCALES:
            got = len(vit_hidden)
            raise ValueError(f"IDFormer takes {NUM_VIT_SCALES} hidden states, not {got}")
        config = self.config
        images = id_cond.shape[1] if id_cond.ndim == 3 else 1
        id_tokens = self.id_embedding_mapping(id_cond)
        id_tokens = id_tokens.reshape(-1, config.num_id_token * images, config.dim)
        latents = torch.cat((self.latents.repeat(id_cond.size(0), 1, 1), id_tokens), dim=1)
        per_scale = config.depth // NUM_VIT_SCALES
        for scale, hidden in enumerate(vit_hidden):
            features = getattr(self, f"mapping_{scale}")(hidden)
            context = torch.cat((id_tokens, features), dim=1)
            for attention, feed_forward in self.layers[scale * per_scale : (scale + 1) * per_scale]:
                latents = attention(context, latents) + latents
                latents = feed_forward(latents) + latents
        return latents[:, : config.num_queries] @ self.proj_out


class PulidModules(nn.Module):
    """The encoder and the CA modules; state_dict keys `pulid_encoder.*`, `pulid_ca.N.*`."""

    def __init__(self, config: PulidConfig) -> None:
        super().__init__()
        self.config = config
        self.pulid_encoder = IDFormer(config.encoder)
        self.pulid_ca = nn.ModuleList(PerceiverAttentionCA(config.ca) for _ in config.placements)

    @property
    def encoder(self) -> IDFormer:
        return self.pulid_encoder

    @property
    def ca(self) -> nn.ModuleList:
        return self.pulid_ca

    @property
    def placements(self) -> tuple[CaPlacement, ...]:
        return self.config.placements


def build_pulid_modules(
    config: PulidConfig = REAL_PULID,
    *,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> PulidModules:
    """PuLID modules in eval mode without grads, PyTorch's default initialisation.

    `device="meta"` builds shapes only (for loading with assign=True, or key checks). With a
    seed two builds are bit-identical and torch's global RNG is left as it was.
    """
    seeded = seed is not None and torch.device(device).type != "meta"
    with torch.random.fork_rng(devices=[], enabled=seeded), torch.device(device):
        if seeded:
            torch.manual_seed(seed)
        modules = PulidModules(config)
    modules.to(dtype=dtype)
    modules.requires_grad_(False)
    return modules.eval()
