"""Upscaling: trained upscale models (spandrel), Ultimate SD Upscale over Flux, the captioner."""
