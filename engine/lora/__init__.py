"""The LoRA stack: files from <models>/loras, every common key layout, strengths without reloads."""

from engine.lora.files import LoraFiles, metadata_triggers
from engine.lora.library import (
    LORA_LIBRARY,
    TURBO_LORA,
    LibraryLora,
    library_match,
    strength_warning,
)
from engine.lora.report import LoraMatch
from engine.lora.stack import LoraParams, LoraStack

__all__ = [
    "LORA_LIBRARY",
    "TURBO_LORA",
    "LibraryLora",
    "LoraFiles",
    "LoraMatch",
    "LoraParams",
    "LoraStack",
    "library_match",
    "metadata_triggers",
    "strength_warning",
]
