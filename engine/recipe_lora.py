"""Recipe pieces shared by several sections: a LoRA slot, the sampler and scheduler ids, the
largest seed (kept apart so that the section modules need not import engine.recipe)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.fields import bounded, file_ref
from engine.input_limits import RELATIVE_NAME

# Seeds stay below 2**53 so that a browser (JavaScript numbers) never rounds them.
MAX_SEED = 2**53 - 1
SAMPLERS = ("euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_sde")
SCHEDULERS = ("simple", "sgm_uniform", "beta", "karras", "exponential")


@dataclass(frozen=True, kw_only=True)
class LoraSlot:
    """One slot of the LoRA stack (Power LoRA Loader)."""

    file: str = file_ref(RELATIVE_NAME)
    strength_model: float = bounded(1.0, -4.0, 4.0, 0.01)
    strength_clip: float = bounded(1.0, -4.0, 4.0, 0.01)
    enabled: bool = True
    trigger: str = ""
