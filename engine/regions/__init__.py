"""Regional prompting: a base prompt plus N ≥ 2 regions, each with its own prompt and mask,
in one FLUX.1 image (issue 14).

`masks` builds the region masks (split or painted), their blur, per-token weights and owners,
and a preview; `attention` turns them into the additive joint-attention mask and per-token
LoRA weights. Neither imports gradio.
"""
