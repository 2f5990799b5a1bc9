"""The pipeline's stages in their order, and which of them hand on images.

conditioning (text, Redux, regions) -> base -> latent -> decode (or an upload) -> expression
-> refine -> captioner -> Upscale 1 -> Upscale final -> identity score -> color.
"""

from __future__ import annotations

from engine.graph import Stage
from engine.recipe_refine import REFINE_REGIONS
from engine.recipe_regions import MAX_REGIONS
from engine.stages.base import BaseStage
from engine.stages.color import ColorStage
from engine.stages.decode import DecodeStage
from engine.stages.expression import ExpressionStage
from engine.stages.expression_driving import ExpressionDrivingStage
from engine.stages.expression_face import ExpressionFaceStage
from engine.stages.identity_embed import IdentityEmbedStage
from engine.stages.identity_score import IdentityScoreStage
from engine.stages.image import ImageStage
from engine.stages.latent import LatentStage
from engine.stages.redux import ReduxStage
from engine.stages.refine import REFINE_STAGES, RefineRegionStage
from engine.stages.refine_chin import RefineChinStage
from engine.stages.region_text import RegionTextStage
from engine.stages.regions import RegionsStage
from engine.stages.text import TextStage
from engine.stages.upscale import build_upscale_stages
from engine.stages.upscale_caption import CaptionStage
from engine.stages.vision import VisionStage
from engine.upscale.passes import UPSCALE_STAGES

IMAGE_STAGES = (
    "image",
    "decode",
    "expression",
    *REFINE_STAGES,
    "refine_chin",
    *UPSCALE_STAGES,
    "color",
)
FINAL_STAGE = "color"


def build_stages() -> list[Stage]:
    """Every stage, in pipeline order (the run report lists them in this order)."""
    regions = [*(RegionTextStage(i) for i in range(1, MAX_REGIONS + 1)), RegionsStage()]
    conditioning = [TextStage(), VisionStage(), ReduxStage(), *regions, IdentityEmbedStage()]
    sampling = [BaseStage(), LatentStage(), DecodeStage(), ImageStage()]
    expression = [ExpressionFaceStage(), ExpressionDrivingStage(), ExpressionStage()]
    refine = [*(RefineRegionStage(region) for region in REFINE_REGIONS), RefineChinStage()]
    upscale = [CaptionStage(), *build_upscale_stages()]
    finish = [IdentityScoreStage(), ColorStage()]
    return [*conditioning, *sampling, *expression, *refine, *upscale, *finish]
