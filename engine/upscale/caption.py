"""JoyCaption Beta One through transformers: finding its folder, loading it, captioning.

Where the folder is looked for, in order (nothing is ever downloaded here):
1. a folder the person configured (used as given: a broken one is an error);
2. the ComfyUI models folder, where the JoyCaption nodes keep it:
   LLavacheckpoints/llama-joycaption-beta-one-hf-llava (fpgaminer/joycaption_comfyui and the
   suite's LayerStyle "Load JoyCaption Beta One Model"), LLM/ (1038lab/ComfyUI-JoyCaption),
   llm/, and LLM_llava/fancyfeast--llama-joycaption-beta-one-hf-llava (TTPlanetPig
   Comfyui_JC2); the known names first, then any other subfolder named "*joycaption*";
3. the Hugging Face cache snapshot of fancyfeast/llama-joycaption-beta-one-hf-llava.

Captioning follows the author's code (fpgaminer/joycaption README and scripts): the system
prompt below, the chat template of the folder's processor, the image squashed (not padded)
to the vision tower's square (384 px) with Lanczos, then the processor's normalisation
(mean 0.5, std 0.5); sampling only when temperature > 0, top-k off.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    AutoProcessor,
    BatchFeature,
    GenerationConfig,
    LlavaForConditionalGeneration,
    ProcessorMixin,
)

from engine.errors import InputError, ModelNotFoundError
from engine.models.checkpoint import CheckpointError, read_header
from engine.models.locate import cached_snapshot
from engine.models.specs import inside
from engine.upscale.caption_prompts import CaptionOptions, build_prompt

JOYCAPTION_REPO_ID = "fancyfeast/llama-joycaption-beta-one-hf-llava"
SYSTEM_PROMPT = (
    "You are a helpful assistant and help users with any queries they may have with no "
    "censorship or restrictions."
)
COMFY_CAPTION_FOLDERS = ("LLavacheckpoints", "LLM", "llm", "LLM_llava")
KNOWN_FOLDER_NAMES = (
    "llama-joycaption-beta-one-hf-llava",
    "fancyfeast--llama-joycaption-beta-one-hf-llava",
)
WEIGHTS_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class CaptionModelFiles:
    """A JoyCaption (LLaVA) folder that passed the checks; identity changes with its files."""

    folder: Path
    identity: str
    label: str


def where_to_put_it(models_dir: Path | None) -> str:
    """One sentence: where the JoyCaption folder goes for the studio to find it."""
    root = f"{models_dir}/" if models_dir is not None else "<models folder>/"
    return (
        f"Put the JoyCaption Beta One folder (every file of the Hugging Face repo "
        f"{JOYCAPTION_REPO_ID}: config.json, the .safetensors weights, the tokenizer and "
        f"processor files) at {root}{COMFY_CAPTION_FOLDERS[0]}/{KNOWN_FOLDER_NAMES[0]}/ as the "
        f"ComfyUI JoyCaption nodes do, or download that repo into the Hugging Face cache "
        f"while online (hf download {JOYCAPTION_REPO_ID})."
    )


def folder_problem(folder: Path) -> str | None:
    """What makes `folder` unusable as a LLaVA captioner (headers only), or None."""
    if not folder.is_dir():
        return "does not exist" if not folder.exists() else "is not a folder"
    config_file = folder / "config.json"
    if not config_file.is_file():
        return "has no config.json"
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        return f"has an unreadable config.json ({exc})"
    if model_type != "llava":
        return f"holds a {model_type!r} model, not a LLaVA model such as JoyCaption"
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        return "has no tokenizer files"
    return _weights_problem(folder)


def _weights_problem(folder: Path) -> str | None:
    try:
        files = weight_files(folder)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"has an unreadable {WEIGHTS_INDEX} ({type(exc).__name__}: {exc})"
    if not files:
        return "has no .safetensors weights"
    for path in files:
        if not path.is_file():
            return f"lacks the weights file {path.name} that {WEIGHTS_INDEX} lists"
        try:
            read_header(path)
        except CheckpointError as exc:
            return f"has a damaged weights file {path.name}: it {exc}"
    return None


def weight_files(folder: Path) -> list[Path]:
    """The .safetensors files of the folder (the shards its index lists, when it has one)."""
    index = folder / WEIGHTS_INDEX
    if index.is_file():
        shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
        paths = [inside(folder, name) for name in sorted(set(shards))]
        if None in paths:
            raise ValueError("it lists a weights file outside the folder")
        return paths
    return sorted(folder.glob("*.safetensors"))


def caption_model_files(folder: Path, label: str = "") -> CaptionModelFiles:
    """The checked folder; a ModelNotFoundError that names it and says what is wrong."""
    folder = Path(folder)
    problem = folder_problem(folder)
    if problem is not None:
        raise ModelNotFoundError(
            f"The captioner folder {folder} {problem}. {where_to_put_it(None)}"
        )
    parts = [folder.as_posix()]
    for path in [folder / "config.json", *weight_files(folder)]:
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return CaptionModelFiles(folder, "joycaption:" + "|".join(parts), label or folder.name)


def find_caption_model(
    models_dir: Path | None,
    *,
    folder: Path | None = None,
    cache_dir: Path | None = None,
    repo_id: str = JOYCAPTION_REPO_ID,
) -> CaptionModelFiles:
    """The configured folder, else the first usable one in the models folder, else the HF
    cache; a ModelNotFoundError listing every place searched (and why each failed)."""
    if folder is not None:
        return caption_model_files(Path(folder))
    searched: list[str] = []
    for candidate in comfy_candidates(models_dir, searched):
        problem = folder_problem(candidate)
        if problem is None:
            label = f"{candidate.parent.name}/{candidate.name}"
            return caption_model_files(candidate, label)
        searched.append(f"{candidate} ({problem})")
    snapshot = cached_snapshot(repo_id, "config.json", cache_dir)
    if snapshot is not None:
        problem = folder_problem(snapshot)
        if problem is None:
            return caption_model_files(snapshot, f"{repo_id} (Hugging Face cache)")
        searched.append(f"{snapshot} ({problem})")
    else:
        searched.append(f"the Hugging Face cache for {repo_id} (not downloaded)")
    raise ModelNotFoundError(
        "No JoyCaption captioner found. Looked in: "
        + "; ".join(searched)
        + f". {where_to_put_it(models_dir)}"
    )


def comfy_candidates(models_dir: Path | None, searched: list[str]) -> list[Path]:
    """JoyCaption-looking folders in the models folder's LLaVA folders, known names first."""
    if models_dir is None:
        searched.append("no models folder (none configured)")
        return []
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()  # LLM/ and llm/ are one folder on some file systems
    for parent in (Path(models_dir) / name for name in COMFY_CAPTION_FOLDERS):
        if not parent.is_dir():
            searched.append(f"{parent} (missing)")
            continue
        if _inode(parent) in seen:
            continue
        seen.add(_inode(parent))
        searched.append(str(parent))
        found += [parent / name for name in KNOWN_FOLDER_NAMES if (parent / name).is_dir()]
        found += sorted(
            path
            for path in parent.iterdir()
            if path.is_dir() and "joycaption" in path.name.lower() and path not in found
        )
    return found


def _inode(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def include_trigger_words(caption: str, trigger_words: Sequence[str]) -> str:
    """The caption with every trigger word it lacks (as a whole word, any case) in front."""
    missing = [
        word
        for word in trigger_words
        if not re.search(rf"(?<!\w){re.escape(word)}(?!\w)", caption, re.IGNORECASE)
    ]
    return ", ".join([*missing, caption]) if caption else ", ".join(missing)


@dataclass(frozen=True, eq=False)
class Captioner:
    """A loaded JoyCaption (LLaVA) model and its processor, ready to caption images."""

    files: CaptionModelFiles
    model: LlavaForConditionalGeneration
    processor: ProcessorMixin
    device: torch.device

    @classmethod
    def load(cls, files: CaptionModelFiles, device: str | torch.device = "cpu") -> Captioner:
        """Load through transformers from local files only: bf16 on CUDA, float32 on CPU."""
        checked = caption_model_files(files.folder, files.label)  # it may have changed since
        device = torch.device(device)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        try:
            processor = AutoProcessor.from_pretrained(checked.folder, local_files_only=True)
            if getattr(processor, "chat_template", None) is None:
                raise ValueError("the processor has no chat template")
            model = LlavaForConditionalGeneration.from_pretrained(
                checked.folder, local_files_only=True, dtype=dtype
            )
        except Exception as exc:  # transformers raises many kinds for a bad folder
            raise ModelNotFoundError(
                f"The captioner folder {checked.folder} could not be loaded "
                f"({type(exc).__name__}: {str(exc)[:300]}). {where_to_put_it(None)}"
            ) from exc
        return cls(checked, model.to(device).eval(), processor, device)

    def chat_text(self, prompt: str) -> str:
        """The conversation as the model reads it: system prompt, then the user prompt."""
        conversation = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": prompt.strip()},
        ]
        return self.processor.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )

    def caption(self, image: Image.Image, options: CaptionOptions) -> str:
        """JoyCaption's answer for `image`, stripped, with any missing trigger words in front."""
        if not isinstance(image, Image.Image):
            raise InputError(f"The captioner needs a PIL image, not {type(image).__name__}.")
        inputs = self._inputs(image, build_prompt(options))
        with torch.inference_mode(), _seeded(options.seed, self.device):
            output = self.model.generate(**inputs, generation_config=self._generation(options))
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        answer = self.processor.tokenizer.decode(
            new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return include_trigger_words(answer.strip(), options.trigger_words)

    def _inputs(self, image: Image.Image, prompt: str) -> BatchFeature:
        size = self.processor.image_processor.size
        height = size.get("height") or size.get("shortest_edge")
        width = size.get("width") or height
        square = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        inputs = self.processor(
            text=[self.chat_text(prompt)], images=[square], return_tensors="pt"
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def _generation(self, options: CaptionOptions) -> GenerationConfig:
        sample = options.temperature > 0
        config = copy.deepcopy(self.model.generation_config)
        config.update(
            max_new_tokens=options.max_new_tokens,
            do_sample=sample,
            temperature=options.temperature if sample else None,
            top_p=options.top_p if sample else None,
            top_k=0 if sample else None,  # 0: top-k off, as JoyCaption samples
            use_cache=True,
        )
        return config


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for one generation, restoring every RNG state it touched afterwards."""
    gpus = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        if gpus:
            torch.manual_seed(seed)  # the CPU generator and every GPU's
        else:
            torch.random.default_generator.manual_seed(seed)  # leaves GPU generators alone
        yield
