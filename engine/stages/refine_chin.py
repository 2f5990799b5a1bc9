"""The chin pass, after the region detailers: for each face, its jaw masked from the 68
landmarks or a GroundingDINO text prompt (engine/refine/jaw.py), re-rendered at size² and
stitched back (engine/refine/chin.py); the identity guard compares each face before and
after. PuLID acts on the chin pass when `identity.pulid.finishing` is on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.faces.boxes import FaceBox
from engine.graph import StageContext
from engine.identity.pulid_passes import pulid_finishing, pulid_pass, with_identity_embed
from engine.identity.pulid_sampling import PulidSampling
from engine.lora import LoraParams
from engine.recipe import Recipe, SettingsParams
from engine.recipe_refine import ChinParams, IdentityGuardParams
from engine.refine.chin import chin_settings, refine_chin
from engine.refine.identity_guard import check_face, guard_note, to_uint8
from engine.refine.jaw import JawMasks
from engine.refine.models import refine_models
from engine.refine.result import RefinedImages, images_of
from engine.stages.base import conditioning
from engine.stages.refine import REFINE_STAGES, fill_model, region_conditioning
from engine.stages.text import apply_loras


@dataclass(frozen=True)
class ChinStageParams:
    chin: ChinParams
    prompt: str
    settings: SettingsParams
    seed: int
    flux: tuple[str, str, str, str]
    loras: LoraParams
    faces: str  # identity of the face detector
    guard: IdentityGuardParams | None
    identity_backend: str
    fill: str = ""  # the FLUX.1 Fill file's identity when the chin pass uses it
    jaw: str = ""  # GroundingDINO's and SAM's identities when the jaw mask comes from text
    pulid: PulidSampling | None = None  # PuLID's weight and window, when it acts here


class RefineChinStage:
    name = "refine_chin"
    version = 1
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return with_identity_embed((REFINE_STAGES[-1], "redux"), recipe.identity.pulid_finishing())

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.refine.enabled and recipe.refine.chin.enabled

    def select(self, recipe: Recipe, env: Any) -> ChinStageParams:
        chin, files, models = recipe.refine.chin, env.flux_files(), refine_models(env)
        stack, slots = env.loras(), recipe.prompt.loras
        prompt = ""
        if chin.prompt:
            prompt = f"{stack.prompt_with_triggers(recipe.prompt.prompt, slots)}, {chin.prompt}"
        guard = recipe.refine.identity if recipe.refine.identity.enabled else None
        return ChinStageParams(
            chin, prompt, chin_settings(recipe.settings, chin), recipe.settings.seed,
            (files.transformer, files.vae, files.weight_dtype, files.precision),
            stack.stage_params(slots, "transformer"), models.source("face").identity,
            guard, models.identity_identity() if guard else "",
            env.fill_identity() if chin.fill_model else "",
            _jaw_identity(models) if chin.mask_source == "text" else "",
            pulid_finishing(recipe, env),
        )  # fmt: skip

    def run(self, ctx: StageContext, p: ChinStageParams, upstream: dict) -> RefinedImages:
        images = images_of(next(iter(upstream.values())))
        bundle = ctx.services.flux_bundle()
        apply_loras(ctx, bundle, p.loras, "transformer")
        cond = region_conditioning(bundle, conditioning(upstream), p.prompt)
        models = refine_models(ctx.services)
        fill = fill_model(ctx, "chin", p.chin.fill_model, p.fill)
        jaws = JawMasks(models, p.chin, ctx.note)
        pulid = pulid_pass(ctx, p.pulid, upstream)
        out, found = [], []
        for index, image in enumerate(images):
            rgb = to_uint8(image.permute(1, 2, 0).float().cpu().numpy())
            faces = [f for f in models.detect(models.source("face"), rgb) if f.box.score >= 0.5]
            if not faces:
                ctx.note(f"Chin pass: no face found in image {index + 1}; left as it was.")
            current, checks = image[None].float().cpu(), []
            masks = jaws.for_image(rgb, [face.box for face in faces])
            for number, (face, mask) in enumerate(zip(faces, masks, strict=True)):
                ctx.step(self.name, number, len(faces), f"re-rendering chin {number + 1}")
                seed = p.seed + index + number
                after = refine_chin(
                    ctx, self.name, bundle, cond, current, mask, p.chin, p.settings, seed, fill,
                    pulid,
                )  # fmt: skip
                if p.guard is not None:
                    check = self._check(models, p, f"chin {number + 1}", face.box, current, after)
                    checks.append(check)
                    if check.below and p.guard.keep_below:
                        continue
                current = after
            if checks:
                ctx.note(guard_note(models.identity_encoder(), checks))
            out.append(current[0])
            found.append([_box(face.box, "chin") for face in faces])
        return RefinedImages(torch.stack(out).to(images.device, images.dtype), found)

    @staticmethod
    def _check(models, p: ChinStageParams, label: str, box: FaceBox, before, after):
        assert p.guard is not None
        pixels = [t[0].permute(1, 2, 0).numpy() for t in (before, after)]
        return check_face(models.identity_encoder(), p.guard, label, box, *pixels, None)


def _jaw_identity(models) -> str:
    return f"{models.grounding_identity()}|{models.sam_identity()}"


def _box(box: FaceBox, label: str) -> dict:
    corners = [round(float(v), 1) for v in (box.x1, box.y1, box.x2, box.y2)]
    return {"label": label, "box": corners, "score": round(float(box.score), 3)}
