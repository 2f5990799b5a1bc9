"""The Flux transformer as a denoiser x0(x, sigma) for the samplers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from engine.flux.prompt import PromptEmbeddings
from engine.models.attention import AttentionChoice

# PyTorch's memory-efficient SDPA kernel copies (pads) a mask at every attention call unless
# its row stride is a multiple of 8 elements (aten/src/ATen/native/transformers/attention.cpp,
# preprocess_mask); rows padded to 16 cover that.
MASK_ROW_ALIGN = 16


def attention_bias_mask(
    token_bias: torch.Tensor, image_tokens: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The additive joint-attention mask (1, 1, L, L), L = S + image_tokens.

    Ordered [text; image], as diffusers' Flux attention concatenates the two streams in both
    block types. Column j < S holds token_bias[j] for the query rows of the unbiased text
    tokens and of every image token; the rows of the biased tokens (non-zero bias) and the
    image columns are 0. A -inf bias hides token j from every other token: nothing it carries
    reaches the text or image stream.
    """
    text = token_bias.shape[0]
    size = text + image_tokens
    bias = token_bias.to(device=device, dtype=torch.float32)
    columns = torch.cat([bias, bias.new_zeros(image_tokens)]).to(dtype)
    sees_bias = torch.cat([bias == 0, torch.ones(image_tokens, dtype=torch.bool, device=device)])
    padded = -(-size // MASK_ROW_ALIGN) * MASK_ROW_ALIGN
    mask = torch.zeros(size, padded, dtype=dtype, device=device)[:, :size]
    mask[sees_bias] = columns
    return mask[None, None]


@dataclass
class FluxDenoiser:
    """Calls the transformer with sigma as timestep and distilled guidance; returns x0.

    When the embeddings carry a token bias, every call passes the additive mask built from it
    as joint_attention_kwargs={"attention_mask": ...}; without one, no mask and no kwargs, so
    attention keeps its mask-free kernels.
    """

    transformer: torch.nn.Module
    embeddings: PromptEmbeddings
    img_ids: torch.Tensor
    guidance: float
    dtype: torch.dtype
    calls: int = 0
    attention: AttentionChoice = field(default_factory=AttentionChoice)  # SDPA kernel ranking
    # FLUX.1 Fill's extra inputs (1, L, 320), appended to every call's tokens (flux/fill.py)
    concat: torch.Tensor | None = None
    # (the call's transformer inputs, sigma) -> more inputs, e.g. a ControlNet's residuals
    control: Callable[[dict, torch.Tensor], dict] | None = None
    # (sigma_lo, sigma_hi]: where the embeddings' regional mask acts (None: never)
    region_window: tuple[float, float] | None = None
    # (token_bias, image tokens, device) -> mask; not an init field, so replace() starts afresh
    _mask: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def attention_mask(
        self, image_tokens: int, device: torch.device, sigma: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The additive attention mask: the regional one inside its sigma window (with the
        token bias added), else the token bias's; None without either."""
        biased = self._bias_mask(image_tokens, device)
        regional = self._regional_mask(image_tokens, device, sigma)
        if regional is None or biased is None:
            return biased if regional is None else regional
        return regional + biased

    def _regional_mask(
        self, image_tokens: int, device: torch.device, sigma: torch.Tensor | None
    ) -> torch.Tensor | None:
        layout, window = self.embeddings.regions, self.region_window
        if layout is None or window is None or sigma is None:
            return None
        if not window[0] < float(sigma.reshape(-1)[0]) <= window[1]:
            return None
        if layout.image_tokens != image_tokens:
            raise ValueError(
                f"regions laid out over {layout.image_tokens} image tokens, sampling {image_tokens}"
            )
        return layout.attention_mask(self.dtype, device)

    def _bias_mask(self, image_tokens: int, device: torch.device) -> torch.Tensor | None:
        bias = self.embeddings.token_bias
        if bias is None:
            return None
        if bias.shape != (self.embeddings.tokens.shape[1],):
            raise ValueError(
                f"token bias of shape {tuple(bias.shape)} for "
                f"{self.embeddings.tokens.shape[1]} text tokens"
            )
        cached = self._mask
        if cached is None or cached[0] is not bias or cached[1:3] != (image_tokens, device):
            mask = attention_bias_mask(bias, image_tokens, self.dtype, device)
            cached = self._mask = (bias, image_tokens, device, mask)
        return cached[3]

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        emb = self.embeddings
        tokens = emb.tokens.expand(batch, -1, -1)
        hidden = x if self.concat is None else torch.cat([x, self._concat(x)], dim=-1)
        inputs = {
            "hidden_states": hidden.to(self.dtype),
            "timestep": sigma.to(x.device, torch.float32).expand(batch).to(self.dtype),
            "guidance": None,
            "pooled_projections": emb.pooled.expand(batch, -1),
            "encoder_hidden_states": tokens,
            "txt_ids": torch.zeros(tokens.shape[1], 3, device=x.device, dtype=self.img_ids.dtype),
            "img_ids": self.img_ids,
            "return_dict": False,
        }
        if getattr(self.transformer.config, "guidance_embeds", False):
            inputs["guidance"] = torch.full(
                (batch,), self.guidance, device=x.device, dtype=torch.float32
            )
        mask = self.attention_mask(x.shape[1], x.device, sigma)
        if mask is not None:
            inputs["joint_attention_kwargs"] = {"attention_mask": mask}
        if self.control is not None:
            inputs.update(self.control({**inputs, "hidden_states": x.to(self.dtype)}, sigma))
        self.calls += 1
        with self.attention.context():
            out = self.transformer(**inputs)[0]
        return out.float()

    def _concat(self, x: torch.Tensor) -> torch.Tensor:
        assert self.concat is not None
        return self.concat.to(x.device, x.dtype).expand(x.shape[0], -1, -1)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x - sigma.to(x.device, x.dtype) * self.velocity(x, sigma)
