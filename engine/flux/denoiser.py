"""The Flux transformer as a denoiser x0(x, sigma) for the samplers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.flux.prompt import PromptEmbeddings


@dataclass
class FluxDenoiser:
    """Calls the transformer with sigma as timestep and distilled guidance; returns x0."""

    transformer: torch.nn.Module
    embeddings: PromptEmbeddings
    img_ids: torch.Tensor
    guidance: float
    dtype: torch.dtype
    calls: int = 0

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        emb = self.embeddings
        tokens = emb.tokens.expand(batch, -1, -1)
        txt_ids = torch.zeros(tokens.shape[1], 3, device=x.device, dtype=self.img_ids.dtype)
        guidance = None
        if getattr(self.transformer.config, "guidance_embeds", False):
            guidance = torch.full((batch,), self.guidance, device=x.device, dtype=torch.float32)
        self.calls += 1
        out = self.transformer(
            hidden_states=x.to(self.dtype),
            timestep=sigma.to(x.device, torch.float32).expand(batch).to(self.dtype),
            guidance=guidance,
            pooled_projections=emb.pooled.expand(batch, -1),
            encoder_hidden_states=tokens,
            txt_ids=txt_ids,
            img_ids=self.img_ids,
            return_dict=False,
        )[0]
        return out.float()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x - sigma.to(x.device, x.dtype) * self.velocity(x, sigma)
