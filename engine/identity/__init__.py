"""Keeping a reference person's identity in a render. PuLID for FLUX: our IDFormer and
cross-attention modules (pulid_networks), strict loading of a person's pulid_flux file
(pulid_weights) and the hooks that add the identity to a diffusers FluxTransformer2DModel's
image stream (pulid_inject)."""
