"""The captioner stage before Upscale 1 (suite group 8, seed 000 §9.2): JoyCaption Beta One
describes each refined image of the batch; the captions are shown in the run report and,
when Upscale 1 has no prompt of its own, each becomes its image's prompt there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import ModelNotFoundError
from engine.graph import StageContext
from engine.images import tensor_to_pil
from engine.recipe import LoraSlot, Recipe
from engine.recipe_upscale import CaptionParams
from engine.refine.result import images_of
from engine.upscale.caption_prompts import CaptionOptions
from engine.upscale.models import upscale_models

CAPTION_STAGE = "caption"


@dataclass(frozen=True)
class CaptionStageParams:
    options: CaptionOptions
    model: str  # the captioner folder's identity (its files' sizes and times)


@dataclass(frozen=True, eq=False)
class Captions:
    """The caption of each batch image, in batch order."""

    texts: tuple[str, ...]

    def text(self) -> str:
        """All captions as one text: one paragraph per batch image."""
        return "\n\n".join(self.texts)


def captioning(recipe: Recipe) -> bool:
    """Whether the captioner runs: the Upscale tab on, Upscale 1 on and the captioner on."""
    return "first" in recipe.upscale.active_passes() and recipe.upscale.caption.enabled


def slot_trigger_words(slots: Sequence[LoraSlot], stack: Any) -> tuple[str, ...]:
    """The trigger words of the slots that are on: typed ones (comma-separated), else the
    file's own, as the prompt puts them in front (LoraStack.prompt_with_triggers)."""
    words: list[str] = []
    for slot in slots:
        if not (slot.enabled and slot.file):
            continue
        typed = [word.strip() for word in slot.trigger.split(",") if word.strip()]
        words += typed or stack.trigger_words(slot.file)
    return tuple(dict.fromkeys(words))


def caption_options(caption: CaptionParams, trigger_words: tuple[str, ...]) -> CaptionOptions:
    """The recipe's captioner settings as JoyCaption options (CaptionOptionsError, naming the
    field, for a combination it cannot use)."""
    return CaptionOptions(
        caption_type=caption.caption_type,
        caption_length=caption.caption_length,
        max_new_tokens=caption.max_new_tokens,
        top_p=caption.top_p,
        temperature=caption.temperature,
        user_prompt=caption.user_prompt,
        extra_options=caption.extra_options,
        name=caption.name,
        trigger_words=trigger_words,
        seed=caption.seed,
    )


class CaptionStage:
    name = CAPTION_STAGE
    version = 1
    uses_models = True

    def inputs(self, recipe: Recipe) -> tuple[str, ...]:
        return ("refine_chin",)

    def enabled(self, recipe: Recipe) -> bool:
        return captioning(recipe)

    def select(self, recipe: Recipe, env: Any) -> CaptionStageParams:
        words = slot_trigger_words(recipe.prompt.loras, env.loras())
        options = caption_options(recipe.upscale.caption, words)
        try:
            files = upscale_models(env).caption_files()
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(
                f"The captioner is on in the Upscale tab, but it cannot be used. {exc} "
                "Or switch the captioner off."
            ) from None
        return CaptionStageParams(options, files.identity)

    def run(self, ctx: StageContext, p: CaptionStageParams, upstream: dict) -> Captions:
        images = tensor_to_pil(images_of(next(iter(upstream.values()))))
        models = upscale_models(ctx.services)
        ctx.step(self.name, 0, len(images), "loading the captioner")
        captioner = models.captioner(models.caption_files())
        texts = []
        for index, image in enumerate(images):
            ctx.step(self.name, index, len(images), f"captioning image {index + 1}")
            texts.append(captioner.caption(image, p.options))
        return Captions(tuple(texts))
