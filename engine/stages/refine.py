"""Refine stages, one per region (face -> eyes -> hands -> hair -> skin), after Expression
and before Color. Each detects its region, builds Impact-Pack segments (SAM-refined when
asked), re-renders every segment with the warm Flux model and the LoRA stack through a
latent noise mask, pastes it back, and (face, skin) checks the identity. A region's change
re-runs that region and the ones after it, never the ones before. PuLID acts on every
segment's pass when `identity.pulid.finishing` is on (engine/identity/pulid_passes.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.errors import StudioError
from engine.faces.boxes import FaceBox
from engine.faces.segments import Segment, SegmentParams, refine_with_sam, segments_from_detections
from engine.flux.prompt import encode_prompt, text_encoders_on_device
from engine.flux.sampling import Conditioning
from engine.graph import StageContext
from engine.identity.pulid_passes import (
    PulidPass,
    pulid_finishing,
    pulid_pass,
    with_identity_embed,
)
from engine.identity.pulid_sampling import PulidSampling
from engine.lora import LoraParams
from engine.recipe import Recipe, SettingsParams
from engine.recipe_refine import REFINE_REGIONS, DetailerParams, IdentityGuardParams
from engine.refine.detailer import detailer_settings, refine_segment
from engine.refine.identity_guard import GUARDED_REGIONS, check_face, guard_note, to_uint8
from engine.refine.models import refine_models
from engine.refine.result import RefinedImages, images_of
from engine.regions.characters import Characters, character_params, main_conditioning
from engine.stages.text import apply_loras

REFINE_STAGES = tuple(f"refine_{region}" for region in REFINE_REGIONS)


@dataclass(frozen=True)
class RefineStageParams:
    detailer: DetailerParams
    prompt: str  # the main prompt (with triggers) plus the region's words; "" = main as is
    settings: SettingsParams
    seed: int
    flux: tuple[str, str, str, str]  # transformer, vae, weight dtype, precision
    loras: LoraParams
    source: str  # the detector's identity
    sam: str  # the SAM file's identity ("" without SAM)
    guard: IdentityGuardParams | None
    identity_backend: str
    reference: str  # the reference photo's digest ("" without one)
    fill: str = ""  # the FLUX.1 Fill file's identity when the region uses it
    pulid: PulidSampling | None = None  # PuLID's weight and window, when it acts here
    characters: tuple[LoraParams, ...] | None = None  # the regions' LoRAs, with regions on


class RefineRegionStage:
    version = 1
    uses_models = True

    def __init__(self, region: str) -> None:
        self.region = region
        self.name = f"refine_{region}"
        index = REFINE_REGIONS.index(region)
        self.previous = REFINE_STAGES[index - 1] if index else "expression"

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        inputs = (self.previous, "redux", *(("regions",) if recipe.regions.active() else ()))
        return with_identity_embed(inputs, recipe.identity.pulid_finishing())

    def enabled(self, recipe: Recipe) -> bool:
        return self.region in recipe.refine.active_regions()

    def select(self, recipe: Recipe, env: Any) -> RefineStageParams:
        detailer, files, models = (
            recipe.refine.region(self.region),
            env.flux_files(),
            refine_models(env),
        )
        stack, slots = env.loras(), recipe.prompt.loras
        prompt = ""
        if detailer.prompt:
            prompt = f"{stack.prompt_with_triggers(recipe.prompt.prompt, slots)}, {detailer.prompt}"
        guard = recipe.refine.identity
        guarded = guard.enabled and self.region in GUARDED_REGIONS
        photo = guard.reference or next(iter(recipe.identity.references), "")
        reference = env.images.require(photo) if guarded and photo else ""
        return RefineStageParams(
            detailer, prompt, detailer_settings(recipe.settings, detailer), recipe.settings.seed,
            (files.transformer, files.vae, files.weight_dtype, files.precision),
            stack.stage_params(slots, "transformer"),
            models.source(self.region, detailer.detector).identity,
            models.sam_identity() if detailer.sam else "",
            guard if guarded else None,
            models.identity_identity() if guarded else "", reference,
            env.fill_identity() if detailer.fill_model else "", pulid_finishing(recipe, env),
            character_params(recipe, env),
        )  # fmt: skip

    def run(self, ctx: StageContext, p: RefineStageParams, upstream: dict) -> RefinedImages:
        images = images_of(next(iter(upstream.values())))  # the first input (maybe forwarded)
        bundle = ctx.services.flux_bundle()
        apply_loras(ctx, bundle, p.loras, "transformer")
        cond = region_conditioning(bundle, main_conditioning(upstream), p.prompt)
        work = RegionWork(self, ctx, p, bundle, cond, pulid_pass(ctx, p.pulid, upstream))
        if p.characters is not None:
            work.characters = Characters(upstream["regions"], p.characters)
        refined, found = [], []
        for index, image in enumerate(images):
            pixels, boxes = work.image(index, image.permute(1, 2, 0).float().cpu().numpy())
            refined.append(torch.from_numpy(pixels).permute(2, 0, 1))
            found.append(boxes)
        out = torch.stack(refined).to(images.device, images.dtype)
        return RefinedImages(out, found)


def fill_model(ctx: StageContext, what: str, wanted: bool, identity: str) -> Any:
    """The warm FLUX.1 Fill transformer when the pass asks for it and the models folder has
    it; asked for without the file, a note says so and the base model renders."""
    if not wanted:
        return None
    if identity:
        return ctx.services.fill_transformer()
    ctx.note(
        f"Refine {what}: no FLUX.1 Fill file in the models folder's diffusion_models/ "
        "(e.g. flux1-fill-dev.safetensors); rendered with the base model."
    )
    return None


def region_conditioning(bundle, main: Conditioning, prompt: str) -> Conditioning:
    """The main conditioning, or the prompt with the region's words encoded anew."""
    if not prompt:
        return main
    with text_encoders_on_device(bundle):
        positive, _ = encode_prompt(bundle, prompt)
    return Conditioning(positive, main.negative)


class RegionWork:
    """One region's work on each image of a run."""

    def __init__(
        self, stage: RefineRegionStage, ctx: StageContext, p: RefineStageParams, bundle, cond,
        pulid: PulidPass | None = None,
    ) -> None:  # fmt: skip
        self.stage, self.ctx, self.p, self.bundle, self.cond = stage, ctx, p, bundle, cond
        self.pulid = pulid
        self.models = refine_models(ctx.services)
        self.reference = self._reference_embedding() if p.reference else None
        self.fill = fill_model(ctx, stage.region, p.detailer.fill_model, p.fill)
        self.characters: Characters | None = None

    def image(self, index: int, pixels: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """The refined (H, W, 3) pixels of one image and what was found in it."""
        region, what = self.stage.region, f"image {index + 1}"
        try:
            segments = self.segments(pixels)
        except StudioError as exc:  # a broken detector or SAM file: left as it was
            self.ctx.note(f"Refine {region}: {exc} The image is left unrefined.")
            return pixels, []
        if not segments:
            self.ctx.note(f"Refine {region}: nothing found in {what}; left as it was.")
        empty = sum(segment.is_empty for segment in segments)
        if empty:
            self.ctx.note(f"Refine {region}: {empty} mask(s) in {what} cover nothing; skipped.")
        checks = []
        for number, segment in enumerate(segments):
            self.ctx.step(self.stage.name, number, len(segments), f"refining {region} {number + 1}")
            seed = self.p.seed + index + number  # Impact: seed + i per segment
            outcome = refine_segment(
                self.ctx, self.stage.name, self.bundle, self._cond(segment, pixels, number), pixels,
                segment, self.p.detailer, self.p.settings, seed, self.fill, self.pulid,
            )  # fmt: skip
            if outcome.refined and self.p.guard is not None:
                check = self._check(f"{region} {number + 1}", segment, pixels, outcome.image)
                checks.append(check)
                if check.below and self.p.guard.keep_below:
                    continue  # kept as it was before this segment
            pixels = outcome.image
        if checks:
            self.ctx.note(guard_note(self.models.identity_encoder(), checks))
        return pixels, [_found(segment) for segment in segments]

    def _cond(self, segment: Segment, pixels: np.ndarray, number: int) -> Conditioning:
        """The segment's conditioning (its region's character with regions on), its LoRAs
        put on the transformer."""
        if self.characters is None:
            return self.cond
        height, width = pixels.shape[:2]
        owner = self.characters.owner(segment.bbox, width, height)
        apply_loras(
            self.ctx, self.bundle, self.characters.loras(self.p.loras, owner), "transformer"
        )
        label = f"Refine {self.stage.region} {number + 1}"
        if owner is None:
            self.ctx.note(f"{label}: between regions; rendered with the base prompt only.")
            return self.cond
        self.ctx.note(f"{label}: rendered as region {owner + 1}'s character.")
        return self.characters.conditioning(self.cond, owner)

    def segments(self, pixels: np.ndarray) -> list[Segment]:
        d, rgb = self.p.detailer, to_uint8(pixels)
        source = self.models.source(self.stage.region, d.detector)
        if source.kind == "none":
            raise _NoDetector(source.label)
        found = self.models.detect(source, rgb)
        params = SegmentParams(d.bbox_threshold, d.dilation, d.crop_factor, d.drop_size)
        segments = segments_from_detections(found, *rgb.shape[:2], params)
        sam = self.models.sam() if d.sam and segments else None
        if d.sam and segments and sam is None:
            self.ctx.note(
                f"Refine {self.stage.region}: SAM is on but the models folder's sams/ has no "
                "SAM file (e.g. sam_vit_b_01ec64.pth); the detector's masks were used."
            )
        if sam is not None:
            predictions = sam.segment(rgb, [s.bbox for s in segments])
            segments = refine_with_sam(segments, predictions, d.sam_threshold, 0, rgb.shape[:2])
        return segments

    def _check(self, label: str, segment: Segment, before: np.ndarray, after: np.ndarray):
        assert self.p.guard is not None
        box = FaceBox(*segment.bbox, segment.confidence)
        encoder = self.models.identity_encoder()
        return check_face(encoder, self.p.guard, label, box, before, after, self.reference)

    def _reference_embedding(self) -> np.ndarray | None:
        photo = np.asarray(self.ctx.services.images.load(self.p.reference).convert("RGB"))
        faces = self.models.detect(self.models.source("face"), photo)
        faces = sorted(faces, key=lambda f: f.box.width * f.box.height, reverse=True)
        if not faces:
            self.ctx.note("Identity reference: no face found in the reference photo.")
            return None
        return self.models.identity_encoder().embed(photo, faces[0].box)


class _NoDetector(StudioError):
    """A region without a detector file and no packaged one."""

    def __init__(self, label: str) -> None:
        super().__init__(f"{label[0].upper()}{label[1:]}.")


def _found(segment: Segment) -> dict:
    return {
        "label": segment.label,
        "box": [round(v, 1) for v in segment.bbox],
        "score": round(segment.confidence, 3),
    }
