"""The one table between recipe field paths and UI components.

Each row names a recipe field and says how the page shows it: label, help text and widget.
The Redux tab's rows live in `studio.bindings_redux`, the row type in `studio.binding_row`.
This table is the only place that knows both sides; `studio.controls` turns the rows into
components and component values back into a Recipe. Ranges, steps and choices come from
the recipe's field metadata, never from here.
"""

from __future__ import annotations

import dataclasses

from engine.recipe import PromptParams
from studio.binding_row import Binding
from studio.bindings_expression import EXPRESSION_BINDINGS
from studio.bindings_identity import IDENTITY_BINDINGS
from studio.bindings_redux import REDUX_BINDINGS
from studio.bindings_refine import REFINE_BINDINGS
from studio.bindings_regions import REGIONS_BINDINGS
from studio.bindings_upscale import UPSCALE_BINDINGS

BINDINGS: tuple[Binding, ...] = (
    *REDUX_BINDINGS,
    # Size / LoRA / Prompt (suite group 2)
    Binding(
        "prompt.prompt",
        "Prompt",
        "CLIP reads about 75 tokens, the rest goes to T5: concrete nouns and photographic "
        "terms first, LoRA trigger words at the very front.",
        widget="textbox",
        lines=4,
    ),
    Binding(
        "prompt.width", "Width", "Pixels. Flux works in multiples of 16; 1024 suits portraits."
    ),
    Binding("prompt.height", "Height", "Keep it equal to the width for square portrait frames."),
    Binding(
        "prompt.resolution",
        "Resolution multiplier",
        "Scales width and height before rendering; 1.0 renders the size as set.",
    ),
    Binding("prompt.batch_size", "Batch", "Images per run, 1 to 4; each one costs GPU memory."),
    Binding(
        "prompt.negative_prompt",
        "Negative prompt",
        "What to steer away from. Used only when true CFG (Settings) is above 1, and then "
        "every step runs the model twice: about double the time.",
        widget="textbox",
        lines=2,
    ),
    Binding(
        "source.kind",
        "Start from this image (img2img)",
        "Flux starts from the uploaded picture instead of pure noise; Settings > Denoise sets "
        "how much of it is repainted.",
        widget="switch",
        on="img2img",
        off="generate",
    ),
    # Settings (suite group 3)
    Binding("settings.sampler", "Sampler", "Euler is robust and forgiving for faces."),
    Binding(
        "settings.scheduler",
        "Scheduler",
        "How the noise level falls over the steps. Beta balances sharpness and colour; "
        "Karras decays more smoothly.",
    ),
    Binding("settings.steps", "Steps", "20 to 28 for finished portraits; fewer for previews."),
    Binding(
        "settings.guidance",
        "Flux guidance (distilled)",
        "A conditioning value Flux dev was distilled with, fed to the model as an input: "
        "this is not CFG and costs nothing extra. The suite's portrait range is 1.6 to 2.1.",
        widget="number",
    ),
    Binding(
        "settings.cfg",
        "True CFG scale",
        "1 = off: one model call per step. Above 1 the model also runs on the negative "
        "prompt at every step, which doubles the work. The Turbo tier uses 2.0.",
    ),
    Binding(
        "settings.denoise",
        "Denoise",
        "img2img only (Size / LoRA / Prompt > start from this image): 0.45 to 0.60 keeps the "
        "face, 1.0 ignores the picture. Text-to-image always uses 1.",
    ),
    Binding(
        "settings.seed",
        "Seed",
        "Same recipe and seed give the same image: keep it fixed while you adjust the rest.",
        widget="number",
    ),
    Binding(
        "settings.max_shift",
        "Max shift",
        "ModelSamplingFlux: schedule shift at large sizes (default 1.15; above 1.5 can blur "
        "fine detail).",
        widget="number",
    ),
    Binding(
        "settings.base_shift",
        "Base shift",
        "ModelSamplingFlux: schedule shift at small sizes (default 0.5).",
        widget="number",
    ),
    # Micro-sampler controls (suite group 2); their windows are on the Latent tab.
    Binding("settings.detail_daemon.enabled", "Detail Daemon"),
    Binding(
        "settings.detail_daemon.amount",
        "Detail amount",
        "Shows the model a slightly lower noise level mid-schedule, which adds micro-detail. "
        "0.03-0.07 subtle, 0.08-0.12 pronounced pores; 0.05-0.10 recommended at 1024², "
        "above 0.15 risks speckling.",
        widget="number",
    ),
    Binding("settings.lying_sigma.enabled", "Lying Sigma"),
    Binding(
        "settings.lying_sigma.dishonesty",
        "Dishonesty factor",
        "The model sees noise level σ·(1 + factor) inside the window. -0.02 to -0.06 reduces "
        "haloing; -0.05 to -0.06 recommended for photoreal faces; below -0.08 turns cinematic.",
        widget="number",
    ),
    # First-block cache (specs §3)
    Binding(
        "settings.first_block_cache.enabled",
        "First-block cache",
        "Skips most of the model on steps where its first block barely changed: faster, "
        "slightly less exact.",
    ),
    Binding(
        "settings.first_block_cache.threshold",
        "Threshold",
        "Relative change of the first block below which a step reuses the last full "
        "result. 0.08 is the suite's setting; higher is faster; 0 never skips.",
    ),
    Binding(
        "settings.first_block_cache.start",
        "Start",
        "Skipping is allowed from this point of the schedule (0 = first step).",
    ),
    Binding(
        "settings.first_block_cache.end",
        "End",
        "... up to this point (1 = last step).",
    ),
    Binding(
        "settings.first_block_cache.max_consecutive_hits",
        "Max consecutive hits",
        "After this many skipped steps in a row, run the full model once. -1 = no limit.",
    ),
    # Latent tab (suite group 4): Detail Daemon and Lying Sigma windows, then the panel.
    Binding(
        "settings.detail_daemon.start",
        "Detail start",
        "Where the detail ramp begins, as a fraction of the steps (the suite uses 0.10).",
    ),
    Binding(
        "settings.detail_daemon.end",
        "Detail end",
        "Where it ends (the suite uses 0.90).",
    ),
    Binding(
        "settings.detail_daemon.bias",
        "Bias",
        "Where the peak sits between start and end: 0.5 in the middle, lower is earlier.",
    ),
    Binding(
        "settings.detail_daemon.exponent",
        "Exponent",
        "Ramp shape: 1 linear, above 1 a sharper peak, 0 a flat plateau.",
    ),
    Binding(
        "settings.detail_daemon.start_offset",
        "Start offset",
        "Detail amount before the window (the ramp starts from it).",
    ),
    Binding(
        "settings.detail_daemon.end_offset",
        "End offset",
        "Detail amount after the window (the ramp ends at it).",
    ),
    Binding("settings.detail_daemon.fade", "Fade", "Scales the whole schedule down; 1 = off."),
    Binding(
        "settings.detail_daemon.smooth",
        "Smooth",
        "Cosine-shaped ramps instead of straight ones; avoids ringing on cheeks.",
    ),
    Binding(
        "settings.detail_daemon.cfg_scale_override",
        "CFG override",
        "The strength is multiplied by this; 0 = automatic (the true CFG scale).",
        widget="number",
    ),
    Binding(
        "settings.lying_sigma.start_percent",
        "Lying Sigma start",
        "Lying Sigma acts from this point of the schedule (0.10 default) ...",
    ),
    Binding(
        "settings.lying_sigma.end_percent",
        "Lying Sigma end",
        "... to this one (0.90). A narrower window, e.g. 0.25-0.75, keeps highlight roll-off.",
    ),
    Binding(
        "latent.enabled",
        "Second pass",
        "Runs the base latent through a second img2img pass with the values below.",
    ),
    Binding(
        "latent.upscale",
        "Latent upscale",
        "u: the unpacked latent is resized bicubically ×u, then the second img2img pass runs "
        "at the new size with μ (the schedule shift) recomputed. 1.0 keeps the size; "
        "1.25-1.5 adds micro-detail.",
    ),
    Binding(
        "latent.guidance",
        "Flux guidance (second pass)",
        "The second pass's distilled guidance (not CFG); 1.8-2.0 for portraits.",
    ),
    Binding(
        "latent.denoise",
        "Denoise",
        "d: the second pass runs on the 'simple' schedule truncated ComfyUI-style (built for "
        "int(N/d) steps, the last N+1 kept). 0.3-0.4 keeps texture; above 0.7 drifts.",
    ),
    Binding(
        "latent.speed_accuracy",
        "Speed ↔ accuracy",
        "q: second-pass steps = round(16 + 24q) and first-block cache threshold "
        "0.12·(1 − q), so q = 1 switches the cache off. 0.6-0.8 for previews.",
    ),
    Binding(
        "latent.sharpen",
        "Sharpen",
        "α: ImageSharpen (radius 1, σ 1) on the decoded image; 0.1-0.2 accents irises and lips.",
    ),
    Binding(
        "latent.rough_smooth",
        "Rough ↔ smooth",
        "r: Detail Daemon on the second pass with amount 0.5·(0.5 − r): 0.5 is neutral, "
        "higher is smoother, lower rougher. 0.65-0.75 gives a glossy editorial finish.",
    ),
    Binding(
        "latent.noise_strength",
        "Noise strength",
        "n: z ← z + n·ε (ε seeded by the noise seed), added before re-noising. 0.3-0.4 for "
        "dataset variety; above 0.5 stylises.",
    ),
    Binding(
        "latent.noise_seed",
        "Noise seed",
        "Seed of ε; image i of a batch uses seed + i.",
        widget="number",
    ),
    *IDENTITY_BINDINGS,
    *REGIONS_BINDINGS,
    *EXPRESSION_BINDINGS,
    *REFINE_BINDINGS,
    *UPSCALE_BINDINGS,
    # Color (suite group 10): pure RGB work, never re-runs diffusion.
    Binding(
        "color.enabled",
        "Colour chain",
        "Off shows the decoded image untouched; changes here never re-run diffusion.",
    ),
    Binding("color.exposure.enabled", "Exposure"),
    Binding(
        "color.exposure.exposure",
        "Exposure",
        "32 units are one stop. Leave at 0 unless the render is clearly under or over.",
    ),
    Binding("color.grain.enabled", "Grain"),
    Binding("color.grain.power", "Grain power", "Strength of the film grain (suite: 0.20)."),
    Binding("color.grain.scale", "Grain scale", "Size of the grain (suite: 0.40)."),
    Binding(
        "color.grain.saturation",
        "Grain saturation",
        "0 gives monochrome grain, 1 fully coloured grain (suite: 0.75).",
    ),
    Binding(
        "color.grain.seed",
        "Grain seed",
        "The grain pattern; the same seed gives the same grain.",
        widget="number",
    ),
    Binding("color.tone.enabled", "Brightness / contrast / saturation"),
    Binding("color.tone.brightness", "Brightness", "1.00 leaves the image as it is."),
    Binding("color.tone.contrast", "Contrast", "Around the image's mean luma (suite: 1.10)."),
    Binding("color.tone.saturation", "Saturation", "0 is greyscale (suite: 0.95)."),
    Binding("color.lut.enabled", "LUT"),
    Binding("color.lut.file", "LUT file", "A .cube film look from the LUT folders."),
    Binding("color.lut.strength", "LUT strength", "Percent of the LUT blended in (suite: 50)."),
    Binding(
        "color.lut.color_space",
        "LUT colour space",
        "log applies the LUT to gamma-encoded values (x^(1/2.2)); linear as they are.",
        widget="radio",
    ),
)

# The LoRA stack: one set of these per slot row, at "prompt.loras.<row>.<field>" (row from 0).
# A row whose file is empty is not in the recipe.
SLOT_BINDINGS: tuple[Binding, ...] = (
    Binding("enabled", "On"),
    Binding("file", "LoRA {n}"),
    Binding("strength_model", "Model", widget="number"),
    Binding("strength_clip", "CLIP", widget="number"),
    Binding("trigger", "Trigger words", widget="textbox"),
)
LORAS = "prompt.loras"
LORAS_LABEL = "LoRA stack"  # the whole stack, as a list of changed fields names it
LORA_FIELDS: tuple[str, ...] = tuple(b.path for b in SLOT_BINDINGS)
MAX_LORAS: int = next(f for f in dataclasses.fields(PromptParams) if f.name == "loras").metadata[
    "max_items"
]

PATHS: tuple[str, ...] = tuple(b.path for b in BINDINGS)


def slot_path(row: int, name: str) -> str:
    """The path of one field of a LoRA slot row, e.g. 'prompt.loras.0.file'."""
    return f"{LORAS}.{row}.{name}"


def slot_of(path: str) -> tuple[int, str] | None:
    """(row, field name) for a LoRA slot path; None for an ordinary field path."""
    if not path.startswith(LORAS + "."):
        return None
    row, _, name = path[len(LORAS) + 1 :].partition(".")
    return int(row), name
