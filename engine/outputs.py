"""Saving outputs: each PNG carries the recipe that reproduces exactly that image."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image

from engine.files import atomic_write
from engine.metadata import png_bytes
from engine.recipe import Recipe

# Choosing a free name and writing it must not interleave between two sessions' saves.
_NAMING_LOCK = threading.Lock()


def per_image_recipe(recipe: Recipe, index: int) -> Recipe:
    """Image i of a batch was rendered with seed + i: its own recipe is batch 1 at that seed."""
    if recipe.source.kind != "generate":
        return recipe
    settings = dataclasses.replace(recipe.settings, seed=recipe.settings.seed + index)
    prompt = dataclasses.replace(recipe.prompt, batch_size=1)
    return dataclasses.replace(recipe, settings=settings, prompt=prompt)


def save_outputs(
    images: list[Image.Image],
    recipe: Recipe,
    folder: Path,
    model_label: str = "",
    extras: Sequence[Mapping[str, str]] = (),
) -> list[Path]:
    """Write the images atomically as PNGs with metadata (`extras[i]`: image i's own fields);
    never overwrite an earlier file."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = []
    for i, image in enumerate(images):
        own = per_image_recipe(recipe, i)
        data = png_bytes(image, own, model_label, _extra(extras, i))
        with _NAMING_LOCK:
            path = _free_name(folder, f"portrait-{stamp}-{own.settings.seed}")
            atomic_write(path, data)
        paths.append(path)
    return paths


def write_over(
    images: list[Image.Image],
    recipe: Recipe,
    paths: list[Path],
    model_label: str = "",
    extras: Sequence[Mapping[str, str]] = (),
) -> list[Path]:
    """Rewrite a result's own PNGs in place (a re-grade of that result), atomically."""
    if len(paths) != len(images):
        raise ValueError(f"{len(images)} images for {len(paths)} files")
    for i, (image, path) in enumerate(zip(images, paths, strict=True)):
        own = per_image_recipe(recipe, i)
        atomic_write(path, png_bytes(image, own, model_label, _extra(extras, i)))
    return list(paths)


def _extra(extras: Sequence[Mapping[str, str]], index: int) -> Mapping[str, str] | None:
    return extras[index] if index < len(extras) else None


def _free_name(folder: Path, stem: str) -> Path:
    path, n = folder / f"{stem}.png", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}.png"
    return path
