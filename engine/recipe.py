"""The Recipe: one frozen dataclass tree that describes a render completely.

One section per tab of the suite. Ranges and defaults follow the PortraitMaster FLUX1
documentation (seed 000) and, where it is silent, the original nodes (specs/algorithms.md).
JSON conversion and validation live in `engine.recipe_json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.fields import bounded, choice, file_ref, items, text
from engine.input_limits import DIGEST, MAX_PROMPT_CHARS, PLAIN_NAME, RELATIVE_NAME
from engine.recipe_identity import IdentityParams
from engine.recipe_lora import MAX_SEED, SAMPLERS, SCHEDULERS, LoraSlot
from engine.recipe_refine import RefineParams
from engine.recipe_regions import RegionsParams
from engine.recipe_upscale import UpscaleParams

# 2: one Refine detailer per region (engine/recipe_refine.py); 3: two Upscale passes and the
# captioner (engine/recipe_upscale.py)
SCHEMA_VERSION = 3

WEIGHT_DTYPES = ("default", "bf16", "fp16", "fp32", "fp8_e4m3fn", "fp8_e5m2")
# ReduxAdvanced's choices as stable ids; "nearest_exact" is torch's "nearest-exact".
DOWNSAMPLING_FUNCTIONS = ("nearest", "bilinear", "bicubic", "area", "nearest_exact")
REDUX_IMAGE_MODES = ("center_crop", "keep_aspect")


@dataclass(frozen=True, kw_only=True)
class ModelParams:
    """Which weights to use. Empty names mean "the first suitable file found"."""

    transformer: str = file_ref(RELATIVE_NAME)
    vae: str = file_ref(RELATIVE_NAME)
    clip_l: str = file_ref(RELATIVE_NAME)
    t5: str = file_ref(RELATIVE_NAME)
    weight_dtype: str = choice("default", WEIGHT_DTYPES)


@dataclass(frozen=True, kw_only=True)
class SourceParams:
    """Where the image comes from, by stable id:

    "generate": text-to-image; "img2img": Flux starts from the uploaded `image` at
    settings.denoise; "image": the uploaded picture goes straight to the post stages.
    """

    kind: str = choice("generate", ("generate", "img2img", "image"))
    image: str = file_ref(DIGEST)


@dataclass(frozen=True, kw_only=True)
class ReduxAdvancedParams:
    """One reference's ReduxAdvanced settings (specs §5) and its own attention bias.

    The defaults change nothing: no downsampling, weight 1, centre crop, no bias.
    """

    downsampling_factor: float = bounded(1.0, 1.0, 9.0, 0.1)
    downsampling_function: str = choice("area", DOWNSAMPLING_FUNCTIONS)
    weight: float = bounded(1.0, 0.0, 1.0, 0.01)
    image_mode: str = choice("center_crop", REDUX_IMAGE_MODES)
    attention_bias: float = bounded(0.0, -4.0, 2.0, 0.05)


@dataclass(frozen=True, kw_only=True)
class ReduxParams:
    """Group 1: two reference portraits blended through Redux."""

    enabled: bool = False
    image1: str = file_ref(DIGEST)
    image2: str = file_ref(DIGEST)
    strength1: int = bounded(70, 1, 100, 1)
    strength2: int = bounded(30, 1, 100, 1)
    mode: str = choice("average", ("average", "concat"))
    prompt_balance: float = bounded(0.5, 0.0, 1.0, 0.01)
    advanced1: ReduxAdvancedParams = field(default_factory=ReduxAdvancedParams)
    advanced2: ReduxAdvancedParams = field(default_factory=ReduxAdvancedParams)


@dataclass(frozen=True, kw_only=True)
class PromptParams:
    """Group 2: size, LoRA stack and prompt."""

    prompt: str = text(
        "close-up portrait photograph of a woman, natural window light, 85mm lens, "
        "detailed skin texture, shallow depth of field",
        MAX_PROMPT_CHARS,
    )
    negative_prompt: str = text("", MAX_PROMPT_CHARS)
    width: int = bounded(1024, 64, 4096, 16)
    height: int = bounded(1024, 64, 4096, 16)
    resolution: float = bounded(1.0, 0.25, 2.0, 0.05)
    batch_size: int = bounded(1, 1, 4, 1)
    loras: tuple[LoraSlot, ...] = items(tuple, max_items=16)


@dataclass(frozen=True, kw_only=True)
class DetailDaemonParams:
    """Detail Daemon sigma modifier (specs §1)."""

    enabled: bool = False
    amount: float = bounded(0.1, -5.0, 5.0, 0.01)
    start: float = bounded(0.2, 0.0, 1.0, 0.01)
    end: float = bounded(0.8, 0.0, 1.0, 0.01)
    bias: float = bounded(0.5, 0.0, 1.0, 0.01)
    exponent: float = bounded(1.0, 0.0, 10.0, 0.05)
    start_offset: float = bounded(0.0, -1.0, 1.0, 0.01)
    end_offset: float = bounded(0.0, -1.0, 1.0, 0.01)
    fade: float = bounded(0.0, 0.0, 1.0, 0.01)
    smooth: bool = True
    cfg_scale_override: float = bounded(0.0, 0.0, 100.0, 0.1)


@dataclass(frozen=True, kw_only=True)
class LyingSigmaParams:
    """Lying Sigma sigma modifier (specs §2)."""

    enabled: bool = False
    dishonesty: float = bounded(-0.05, -0.999, 1.0, 0.01)
    start_percent: float = bounded(0.1, 0.0, 1.0, 0.01)
    end_percent: float = bounded(0.9, 0.0, 1.0, 0.01)


@dataclass(frozen=True, kw_only=True)
class FirstBlockCacheParams:
    """First-block cache (specs §3); threshold 0.08 is the suite's setting."""

    enabled: bool = False
    threshold: float = bounded(0.08, 0.0, 1.0, 0.01)
    start: float = bounded(0.0, 0.0, 1.0, 0.01)
    end: float = bounded(1.0, 0.0, 1.0, 0.01)
    max_consecutive_hits: int = bounded(-1, -1, 100, 1)


@dataclass(frozen=True, kw_only=True)
class SettingsParams:
    """Group 3: sampler, scheduler, steps, guidance, seed and the model-sampling shift."""

    sampler: str = choice("euler", SAMPLERS)
    scheduler: str = choice("simple", SCHEDULERS)
    steps: int = bounded(25, 1, 150, 1)
    guidance: float = bounded(1.9, 0.0, 100.0, 0.1)
    cfg: float = bounded(1.0, 1.0, 30.0, 0.1)
    denoise: float = bounded(1.0, 0.0, 1.0, 0.01)
    seed: int = bounded(0, 0, MAX_SEED, 1)
    max_shift: float = bounded(1.15, 0.0, 100.0, 0.01)
    base_shift: float = bounded(0.5, 0.0, 100.0, 0.01)
    detail_daemon: DetailDaemonParams = field(default_factory=DetailDaemonParams)
    lying_sigma: LyingSigmaParams = field(default_factory=LyingSigmaParams)
    first_block_cache: FirstBlockCacheParams = field(default_factory=FirstBlockCacheParams)


@dataclass(frozen=True, kw_only=True)
class LatentParams:
    """Group 4: the latent second pass ("Latent Noise Injection" panel, seed 000 §3.5)."""

    enabled: bool = False
    upscale: float = bounded(1.25, 1.0, 2.0, 0.05)
    guidance: float = bounded(1.9, 0.0, 2.5, 0.05)
    denoise: float = bounded(0.45, 0.0, 1.0, 0.01)
    speed_accuracy: float = bounded(1.0, 0.0, 1.0, 0.05)
    sharpen: float = bounded(0.0, 0.0, 0.5, 0.01)
    rough_smooth: float = bounded(0.8, 0.0, 1.0, 0.05)
    noise_strength: float = bounded(0.3, 0.0, 0.8, 0.01)
    noise_seed: int = bounded(0, 0, MAX_SEED, 1)

    @property
    def steps(self) -> int:
        """The second pass's step count: speed<->accuracy q gives round(16 + 24q)."""
        return round(16 + 24 * self.speed_accuracy)


@dataclass(frozen=True, kw_only=True)
class ExpressionParams:
    """Group 6: AdvancedLivePortrait expression editor (specs §7 ranges).

    On by default: with every slider at zero, full source ratio and no driving image the
    editor changes nothing and the stage is skipped (engine.expression.editor.is_neutral).
    """

    enabled: bool = True
    rotate_pitch: float = bounded(0.0, -20.0, 20.0, 0.5)
    rotate_yaw: float = bounded(0.0, -20.0, 20.0, 0.5)
    rotate_roll: float = bounded(0.0, -20.0, 20.0, 0.5)
    blink: float = bounded(0.0, -20.0, 5.0, 0.5)
    eyebrow: float = bounded(0.0, -10.0, 15.0, 0.5)
    wink: float = bounded(0.0, 0.0, 25.0, 0.5)
    pupil_x: float = bounded(0.0, -15.0, 15.0, 0.5)
    pupil_y: float = bounded(0.0, -15.0, 15.0, 0.5)
    aaa: float = bounded(0.0, -30.0, 120.0, 1.0)
    eee: float = bounded(0.0, -20.0, 15.0, 0.1)
    woo: float = bounded(0.0, -20.0, 15.0, 0.1)
    smile: float = bounded(0.0, -0.3, 1.3, 0.01)
    src_ratio: float = bounded(1.0, 0.0, 1.0, 0.01)
    sample_image: str = file_ref(DIGEST)
    sample_ratio: float = bounded(1.0, -0.2, 1.2, 0.01)
    sample_parts: str = choice(
        "OnlyExpression", ("OnlyExpression", "OnlyRotation", "OnlyMouth", "OnlyEyes", "All")
    )
    crop_factor: float = bounded(1.7, 1.5, 2.5, 0.05)


@dataclass(frozen=True, kw_only=True)
class ExposureParams:
    """LayerStyle Exposure: 32 units = one stop (specs §9)."""

    enabled: bool = True
    exposure: int = bounded(0, -100, 100, 1)


@dataclass(frozen=True, kw_only=True)
class GrainParams:
    """LayerStyle Add Grain, made seedable (specs §9); defaults from the suite's dial-in."""

    enabled: bool = False
    power: float = bounded(0.2, 0.0, 1.0, 0.01)
    scale: float = bounded(0.4, 0.1, 10.0, 0.05)
    saturation: float = bounded(0.75, 0.0, 1.0, 0.01)
    seed: int = bounded(0, 0, MAX_SEED, 1)


@dataclass(frozen=True, kw_only=True)
class ToneParams:
    """LayerStyle Brightness Contrast V2 (specs §9); defaults from the suite's dial-in."""

    enabled: bool = True
    brightness: float = bounded(1.0, 0.0, 3.0, 0.01)
    contrast: float = bounded(1.1, 0.0, 3.0, 0.01)
    saturation: float = bounded(0.95, 0.0, 3.0, 0.01)


@dataclass(frozen=True, kw_only=True)
class LutParams:
    """LayerStyle LUT Apply: a .cube file by name, strength in percent (specs §9)."""

    enabled: bool = False
    file: str = file_ref(PLAIN_NAME)
    strength: int = bounded(50, 0, 100, 1)
    color_space: str = choice("linear", ("linear", "log"))


@dataclass(frozen=True, kw_only=True)
class ColorParams:
    """Group 10: Exposure -> Grain -> Brightness/Contrast/Saturation -> LUT."""

    enabled: bool = True
    exposure: ExposureParams = field(default_factory=ExposureParams)
    grain: GrainParams = field(default_factory=GrainParams)
    tone: ToneParams = field(default_factory=ToneParams)
    lut: LutParams = field(default_factory=LutParams)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Everything that determines a render; round-trips to JSON with a schema_version."""

    model: ModelParams = field(default_factory=ModelParams)
    source: SourceParams = field(default_factory=SourceParams)
    redux: ReduxParams = field(default_factory=ReduxParams)
    prompt: PromptParams = field(default_factory=PromptParams)
    regions: RegionsParams = field(default_factory=RegionsParams)
    settings: SettingsParams = field(default_factory=SettingsParams)
    latent: LatentParams = field(default_factory=LatentParams)
    expression: ExpressionParams = field(default_factory=ExpressionParams)
    refine: RefineParams = field(default_factory=RefineParams)
    upscale: UpscaleParams = field(default_factory=UpscaleParams)
    identity: IdentityParams = field(default_factory=IdentityParams)
    color: ColorParams = field(default_factory=ColorParams)
