"""The Upscale stages (suite groups 8-9, specs §6): for each pass, "first" (Upscale 1) and
"final" (Upscale final), three stages in a row after the Refine chin pass:

- `<pass>_upscale`: the trained upscale model (or nothing), then LANCZOS to the target size;
- `<pass>_tiles`: Ultimate SD Upscale's redraw, tile by tile with the warm Flux model;
- `<pass>_seams`: its seam fix over the redrawn image.

Each is keyed by only what changes its output, so a new denoise re-samples the tiles and
seams without upscaling again, and a new seam fix re-runs the seams alone. A stage that is
off (pass off, redraw "none", seam fix "none") forwards its input. PuLID acts on every tile
and seam job when `identity.pulid.finishing` is on (engine/identity/pulid_passes.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import StudioError
from engine.faces.crop_stitch import resize_image
from engine.flux.guidance import needs_uncond
from engine.flux.prompt import encode_prompt, text_encoders_on_device
from engine.flux.sampling import Conditioning
from engine.graph import StageContext
from engine.identity.pulid_passes import pulid_finishing, pulid_pass, with_identity_embed
from engine.identity.pulid_sampling import PulidSampling
from engine.lora import LoraParams
from engine.recipe import LoraSlot, Recipe, SettingsParams
from engine.recipe_upscale import UsduParams
from engine.refine.result import images_of
from engine.stages.text import apply_loras
from engine.stages.upscale_caption import CAPTION_STAGE, Captions, captioning
from engine.upscale.models import upscale_models
from engine.upscale.passes import PASS_LABELS, PASS_NAMES, usdu_settings
from engine.upscale.tiled import upscale_image
from engine.upscale.usdu_plan import (
    MAX_SIZE,
    TileJob,
    UsduSettings,
    redraw_jobs,
    seam_fix_jobs,
    target_size,
)
from engine.upscale.usdu_run import flux_tile_render, pass_settings, run_jobs

PASS_INPUT = {"first": "refine_chin", "final": "first_seams"}


def pass_params(recipe: Recipe, pass_name: str) -> UsduParams:
    return getattr(recipe.upscale, pass_name)


def pass_active(recipe: Recipe, pass_name: str) -> bool:
    return pass_name in recipe.upscale.active_passes()


def pass_slots(recipe: Recipe, pass_name: str) -> tuple[LoraSlot, ...]:
    """The LoRAs acting in a pass: the main stack in Upscale 1, only its own in the final."""
    return recipe.prompt.loras if pass_name == "first" else recipe.upscale.final_loras


# The model upscale ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelUpscaleParams:
    model: str  # the file under <models>/upscale_models/; "" = LANCZOS only
    identity: str  # the file's version ("" without a model)
    upscale_by: float


class ModelUpscaleStage:
    version = 1
    uses_models = True

    def __init__(self, pass_name: str) -> None:
        self.pass_name, self.label = pass_name, PASS_LABELS[pass_name]
        self.name = f"{pass_name}_upscale"

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return (PASS_INPUT[self.pass_name],)

    def enabled(self, recipe: Recipe) -> bool:
        return pass_active(recipe, self.pass_name)

    def select(self, recipe: Recipe, env: Any) -> ModelUpscaleParams:
        usdu = pass_params(recipe, self.pass_name)
        identity = upscale_models(env).upscaler_identity(usdu.model)
        return ModelUpscaleParams(usdu.model, identity, usdu.upscale_by)

    def run(self, ctx: StageContext, p: ModelUpscaleParams, upstream: dict) -> torch.Tensor:
        images = images_of(next(iter(upstream.values())))
        _, _, height, width = images.shape
        target = self._target(width, height, p.upscale_by)
        upscaler = upscale_models(ctx.services).upscaler(p.model) if p.model else None
        if upscaler is not None:
            self._check_model_size(upscaler.label, width * upscaler.scale, height * upscaler.scale)
        out = []
        for index, image in enumerate(images):
            ctx.step(self.name, index, len(images), f"upscaling image {index + 1}")
            pixels = image[None].float()
            if upscaler is not None:
                pixels = upscale_image(upscaler, pixels, progress=self._progress(ctx))
            if tuple(pixels.shape[2:]) != (target[1], target[0]):
                pixels = resize_image(pixels, *target, "lanczos")
            out.append(pixels[0])
        return torch.stack(out).to(images.device)

    def _progress(self, ctx: StageContext):
        return lambda done, total: ctx.step(self.name, done, total, "upscale model tiles")

    def _target(self, width: int, height: int, upscale_by: float) -> tuple[int, int]:
        target = target_size(width, height, upscale_by)
        if max(target) > MAX_SIZE:
            largest = math.floor(MAX_SIZE / max(width, height) * 100) / 100
            raise StudioError(
                f"{self.label}: {width}×{height} px upscaled by {upscale_by} would be "
                f"{target[0]}×{target[1]} px, over the {MAX_SIZE} px a side Ultimate SD Upscale "
                f"allows. Lower upscale_by to at most {largest:.2f} (or upscale less earlier)."
            )
        return target

    def _check_model_size(self, label: str, width: int, height: int) -> None:
        if max(width, height) > MAX_SIZE:
            raise StudioError(
                f"{self.label}: the upscale model {label} would make a {width}×{height} px "
                f"image, over the {MAX_SIZE} px a side Ultimate SD Upscale allows. Choose a "
                "model with a smaller scale, or upscale less in an earlier pass."
            )


# Tiles and seams ------------------------------------------------------------------------


@dataclass(frozen=True)
class PassSampling:
    """What every sampled job of a pass shares; the tiles and the seams both key on it."""

    settings: SettingsParams  # the main settings with the pass's own (usdu_run.pass_settings)
    seed: int  # one seed for every tile, plus the batch index
    prompt: str  # as encoded; unused when `caption_prompt`
    caption_prompt: bool  # each image's caption is its prompt (Upscale 1 without a prompt)
    negative_prompt: str | None  # None: no true CFG, nothing to encode
    flux: tuple[str, str, str, str]  # transformer, vae, weight dtype, precision
    loras: LoraParams  # the pass's LoRAs on the transformer
    clip_loras: LoraParams  # and on the text encoders
    pulid: PulidSampling | None = None  # PuLID's weight and window, when it acts here


@dataclass(frozen=True)
class PassJobsParams:
    sampling: PassSampling
    usdu: UsduSettings  # only what these jobs read (see usdu_settings)


def pass_sampling(recipe: Recipe, pass_name: str, env: Any) -> PassSampling:
    """A pass's sampling: its settings, prompt, LoRAs and the Flux files."""
    usdu, files, stack = pass_params(recipe, pass_name), env.flux_files(), env.loras()
    slots = pass_slots(recipe, pass_name)
    settings = pass_settings(recipe.settings, usdu)
    caption_prompt = not usdu.prompt.strip() and pass_name == "first" and captioning(recipe)
    prompt = usdu.prompt.strip()
    if not prompt and not caption_prompt:
        prompt = stack.prompt_with_triggers(recipe.prompt.prompt, slots)
    negative = recipe.prompt.negative_prompt if needs_uncond(settings.cfg) else None
    return PassSampling(
        settings, recipe.settings.seed, prompt, caption_prompt, negative,
        (files.transformer, files.vae, files.weight_dtype, files.precision),
        stack.stage_params(slots, "transformer"), stack.stage_params(slots, "text"),
        pulid_finishing(recipe, env),
    )  # fmt: skip


class PassJobsStage:
    """A pass's redraw ("tiles") or seam fix ("seams"): every job of the plan rendered with
    Flux img2img and composited into the image, one after the other. The prompt is encoded
    here from text alone (the suite's upscale groups use a CLIP Text Encode of their own, no
    Redux), with the pass's LoRAs on the text encoders."""

    version = 1
    uses_models = True

    def __init__(self, pass_name: str, part: str) -> None:
        self.pass_name, self.part, self.label = pass_name, part, PASS_LABELS[pass_name]
        self.name = f"{pass_name}_{part}"
        self.previous = f"{pass_name}_upscale" if part == "tiles" else f"{pass_name}_tiles"

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        # The caption hangs here, where Upscale 1 samples, so the captioner runs when it is on.
        inputs: tuple[str, ...] = (self.previous,)
        if self.pass_name == "first" and captioning(recipe):
            inputs = (self.previous, CAPTION_STAGE)
        return with_identity_embed(inputs, recipe.identity.pulid_finishing())

    def enabled(self, recipe: Recipe) -> bool:
        usdu = pass_params(recipe, self.pass_name)
        wanted = usdu.mode != "none" if self.part == "tiles" else usdu.seam_fix != "none"
        return wanted and pass_active(recipe, self.pass_name)

    def select(self, recipe: Recipe, env: Any) -> PassJobsParams:
        usdu = pass_params(recipe, self.pass_name)
        settings = usdu_settings(usdu, self.part, f"{self.label} (upscale.{self.pass_name})")
        return PassJobsParams(pass_sampling(recipe, self.pass_name, env), settings)

    def run(self, ctx: StageContext, p: PassJobsParams, upstream: dict) -> torch.Tensor:
        images = images_of(next(iter(upstream.values())))
        _, _, height, width = images.shape
        jobs = self.jobs(p.usdu, width, height)
        bundle = ctx.services.flux_bundle()
        prompts = image_prompts(p.sampling, upstream.get(CAPTION_STAGE), len(images))
        conds = self.conditionings(ctx, bundle, p.sampling, prompts)
        apply_loras(ctx, bundle, p.sampling.loras, "transformer")
        pulid = pulid_pass(ctx, p.sampling.pulid, upstream)
        out = []
        for index, image in enumerate(images):
            settings, seed = p.sampling.settings, p.sampling.seed + index
            render = flux_tile_render(ctx, self.name, bundle, conds[index], settings, seed, pulid)
            pixels = image.permute(1, 2, 0).float().cpu().numpy()
            done = run_jobs(pixels, jobs, render, self._progress(ctx, index, len(images)))
            out.append(torch.from_numpy(done).permute(2, 0, 1))
        return torch.stack(out).to(images.device, images.dtype)

    def jobs(self, settings: UsduSettings, width: int, height: int) -> list[TileJob]:
        if self.part == "tiles":
            return redraw_jobs(settings, width, height)
        return seam_fix_jobs(settings, width, height)

    def conditionings(
        self, ctx: StageContext, bundle, s: PassSampling, prompts: list[str]
    ) -> list[Conditioning]:
        """Each image's prompt encoded once, after the pass's LoRAs are set on the text
        encoders (the text stage sets its own again whenever it runs)."""
        apply_loras(ctx, bundle, s.clip_loras, "text")
        encoded: dict[str, Conditioning] = {}
        with text_encoders_on_device(bundle):
            negative = None
            if s.negative_prompt is not None:
                negative, _ = encode_prompt(bundle, s.negative_prompt)
            for prompt in dict.fromkeys(prompts):
                positive, notes = encode_prompt(bundle, prompt)
                for note in notes:
                    ctx.note(f"{self.label}: {note}")
                encoded[prompt] = Conditioning(positive, negative)
        return [encoded[prompt] for prompt in prompts]

    def _progress(self, ctx: StageContext, index: int, batch: int):
        prefix = f"image {index + 1}: " if batch > 1 else ""

        def step(done: int, total: int) -> None:
            ctx.step(self.name, done, total, f"{prefix}tile {done + 1}/{total}")

        return step


def image_prompts(s: PassSampling, captions: Any, batch: int) -> list[str]:
    """The prompt of each batch image: its caption when the caption is the prompt."""
    if not s.caption_prompt:
        return [s.prompt] * batch
    if not isinstance(captions, Captions) or len(captions.texts) != batch:
        raise RuntimeError("the caption stage did not hand over one caption per image")
    return list(captions.texts)


def build_upscale_stages() -> list:
    """The six Upscale stages in pipeline order."""
    stages: list = []
    for pass_name in PASS_NAMES:
        stages.append(ModelUpscaleStage(pass_name))
        stages += [PassJobsStage(pass_name, part) for part in ("tiles", "seams")]
    return stages
