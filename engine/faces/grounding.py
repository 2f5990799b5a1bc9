"""Text-prompted boxes with GroundingDINO: the detector half of storyicon's
comfyui_segment_anything GroundingDinoSAMSegment node (a prompt such as "chin" -> boxes).

Weights are the files people have: an original IDEA-Research checkpoint in
<models>/grounding-dino/ (see grounding_keys) with the bert-base-uncased tokenizer, or a
transformers folder (save_pretrained of IDEA-Research/grounding-dino-tiny / -base) there or in
the Hugging Face cache. detect() follows the node's groundingdino_predict: caption lower-cased,
stripped and ended with "."; short side resized to 800 (long side at most 1333, PIL bilinear),
ImageNet-normalised; a box kept when its best token's sigmoid > box_threshold; cxcywh -> xyxy
pixels (transformers' post-processing, which does exactly that), then clipped and sorted."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine.errors import InputError, ModelNotFoundError
from engine.faces.boxes import FaceBox, check_rgb
from engine.faces.grounding_keys import (
    ORIGINAL_FILES,
    ORIGINAL_URL,
    UNUSED_NORM,
    grounding_config_from_shapes,
    not_grounding_error,
    original_name,
    read_original_weights,
    some_keys,
    to_transformers_state_dict,
    unused_norm,
    variant_name,
)
from engine.load_errors import first_line

GROUNDING_FOLDERS = ("grounding-dino", "groundingdino")
HUB_REPOS = ("IDEA-Research/grounding-dino-tiny", "IDEA-Research/grounding-dino-base")
BERT_FOLDER = "bert-base-uncased"
BERT_REPOS = ("google-bert/bert-base-uncased", "bert-base-uncased")
BERT_URL = "https://huggingface.co/google-bert/bert-base-uncased"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
SHORT_SIDE, LONG_SIDE = 800, 1333
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# The tokens that end a phrase (the original asks its tokenizer for their ids).
PHRASE_ENDS = ("[CLS]", "[SEP]", ".", "?")
Format = Literal["original", "transformers"]


@dataclass(frozen=True)
class GroundingFiles:
    """What GroundingDino.load reads: a .pth file (format "original") or a folder (format
    "transformers"), and the tokenizer folder (None: not found, load() says where it goes)."""

    weights: Path
    tokenizer: Path | None
    format: Format
    identity: str  # path, size and mtime of the weights: changes when the file does
    label: str
    name: str  # the file, folder or hub repo


def find_grounding_dino(
    models_dir: Path | None, hub_cache: Path | None = None
) -> GroundingFiles | None:
    """The GroundingDINO to use, preferring what will load: an original checkpoint whose
    tokenizer is found (the node's own weights; Swin-T, its first entry, before Swin-B), then
    a transformers folder in <models>/grounding-dino/, then IDEA-Research/grounding-dino-tiny
    or -base in the HF cache, then an original checkpoint without its tokenizer."""
    originals = [p for p in _candidates(models_dir, ORIGINAL_FILES) if p.is_file()]
    bert = find_bert_tokenizer(models_dir, hub_cache)
    if originals and bert is not None:
        return _files(originals[0], bert, "original", originals[0].name)
    folders = [(f, f.name) for f in _candidates(models_dir, ("*",)) if _is_transformers(f)]
    folders += [
        (f, repo) for repo in HUB_REPOS if _is_transformers(f := _cached_repo(repo, hub_cache))
    ]
    if folders:
        folder, name = folders[0]
        tokenizer = folder if _has_tokenizer(folder) else bert
        return _files(folder, tokenizer, "transformers", name)
    return _files(originals[0], None, "original", originals[0].name) if originals else None


def find_bert_tokenizer(models_dir: Path | None, hub_cache: Path | None = None) -> Path | None:
    """bert-base-uncased's tokenizer: <models>/grounding-dino/bert-base-uncased/ (or
    groundingdino/), <models>/bert-base-uncased/ (where the node looks), then the HF cache."""
    cached = [
        _cached_repo(repo, hub_cache, name) for repo in BERT_REPOS for name in TOKENIZER_FILES
    ]
    return next((f for f in [*bert_folders(models_dir), *cached] if _has_tokenizer(f)), None)


def bert_folders(models_dir: Path | None) -> list[Path]:
    """Where a bert-base-uncased folder is looked for in the models folder."""
    return _candidates(models_dir, (BERT_FOLDER,)) + (
        [Path(models_dir) / BERT_FOLDER] if models_dir is not None else []
    )


def missing_tokenizer_message(weights: Path) -> str:
    models = weights.parent.parent
    return (
        f"GroundingDINO file {weights} needs the bert-base-uncased tokenizer, which is not in "
        f"{', '.join(str(f) for f in bert_folders(models))} nor in the Hugging Face cache. "
        f"Put vocab.txt, tokenizer.json, tokenizer_config.json and config.json from "
        f"{BERT_URL} in {models / GROUNDING_FOLDERS[0] / BERT_FOLDER}/."
    )


class GroundingDino:
    """A loaded GroundingDINO: detect(rgb, prompt) gives the prompt's boxes, best first."""

    def __init__(self, *, identity: str, label: str, model: Any, tokenizer: Any):
        from transformers import GroundingDinoProcessor
        from transformers.models.grounding_dino import GroundingDinoImageProcessorPil

        self.identity, self.label = identity, label
        self.model, self.tokenizer = model, tokenizer
        # For its post-processing only: preprocess() resizes exactly as the node does.
        self.processor = GroundingDinoProcessor(GroundingDinoImageProcessorPil(), tokenizer)

    @classmethod
    def load(cls, files: GroundingFiles, device: str = "cpu") -> GroundingDino:
        """The model on `device`, float16 on CUDA and float32 elsewhere. ModelNotFoundError
        names the file, what is wrong with it and what to do."""
        import torch

        if files.tokenizer is None:
            raise ModelNotFoundError(missing_tokenizer_message(files.weights))
        tokenizer = load_tokenizer(files.tokenizer)
        if files.format == "original":
            model = load_original(files.weights)
        else:
            model = load_transformers_folder(files.weights)
        ids = tokenizer.convert_tokens_to_ids(list(PHRASE_ENDS))
        model.model.special_tokens = torch.tensor(ids, dtype=torch.long)
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
        model = model.to(device=device, dtype=dtype).eval()
        label = f"{files.name} (GroundingDINO {variant_name(model.config)})"
        return cls(identity=files.identity, label=label, model=model, tokenizer=tokenizer)

    def detect(
        self, rgb: np.ndarray, prompt: str, box_threshold: float = 0.3, text_threshold: float = 0.25
    ) -> list[FaceBox]:
        """Boxes for `prompt` in image pixels, clipped to the image, highest score first.
        Like the node, only `box_threshold` decides which boxes are kept; `text_threshold`
        only picks the caption words that would label a box (GroundingDINO's predict())."""
        import torch
        from transformers.models.grounding_dino.modeling_grounding_dino import (
            GroundingDinoObjectDetectionOutput as Output,
        )

        rgb = check_rgb(rgb)
        caption = normalise_caption(prompt)
        weight = next(self.model.parameters())
        pixels = torch.from_numpy(preprocess(rgb)).to(weight.device, weight.dtype)
        text = self.tokenizer(caption, return_tensors="pt").to(weight.device)
        with torch.inference_mode():
            out = self.model(pixel_values=pixels, **text)
        height, width = rgb.shape[:2]
        found = self.processor.post_process_grounded_object_detection(
            Output(logits=out.logits.float().cpu(), pred_boxes=out.pred_boxes.float().cpu()),
            text["input_ids"].cpu(),
            threshold=box_threshold,
            text_threshold=text_threshold,
            target_sizes=[(height, width)],
        )[0]
        return _face_boxes(found["boxes"].numpy(), found["scores"].numpy(), width, height)


def normalise_caption(prompt: str) -> str:
    """The node's caption: lower case, stripped, ending with "."; InputError when empty."""
    caption = str(prompt).lower().strip()
    if not caption.strip(". "):
        raise InputError("GroundingDINO needs a text prompt naming what to find, e.g. 'chin'.")
    return caption if caption.endswith(".") else caption + "."


def resized_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) after the node's RandomResize([800], max_size=1333): short side 800, or less
    (rounded) when the long side would pass 1333; the long side is then truncated from the
    rounded short side, so it can end a pixel or two off 1333 (transformers' resize differs)."""
    size, short, long = SHORT_SIDE, min(height, width), max(height, width)
    if long / short * size > LONG_SIDE:
        size = int(round(LONG_SIDE * short / long))
    if short == size:
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """(1, 3, h, w) float32: resized with PIL bilinear, scaled to [0, 1], ImageNet-normalised."""
    from PIL import Image

    height, width = resized_size(*rgb.shape[:2])
    image = Image.fromarray(rgb)
    if (height, width) != rgb.shape[:2]:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    pixels = (np.asarray(image, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


def _face_boxes(boxes: np.ndarray, scores: np.ndarray, width: int, height: int) -> list[FaceBox]:
    clipped = np.clip(boxes, 0, [width, height, width, height])
    order = np.argsort(-scores, kind="stable")
    return [FaceBox(*(float(v) for v in clipped[i]), score=float(scores[i])) for i in order]


def load_tokenizer(folder: Path) -> Any:
    """The BERT tokenizer in `folder` (tokenizer.json / tokenizer_config.json, or vocab.txt)."""
    from transformers import AutoTokenizer, BertTokenizer

    try:
        if any((folder / name).is_file() for name in ("tokenizer_config.json", "config.json")):
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        return BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    except Exception as error:
        raise ModelNotFoundError(
            f"The GroundingDINO tokenizer in {folder} could not be read ({first_line(error)}). "
            f"Replace its files with those of {BERT_URL}."
        ) from error


def load_original(path: Path) -> Any:
    """GroundingDinoForObjectDetection holding exactly the checkpoint's tensors (float32)."""
    weights = read_original_weights(path)
    try:
        config = grounding_config_from_shapes(weights)
        return build_model(config, {**to_transformers_state_dict(weights), **unused_norm(config)})
    except KeyError as error:
        raise not_grounding_error(path, f"it has no tensor {error}") from error
    except Exception as error:  # odd shapes, unknown keys, weights that do not fit
        raise not_grounding_error(path, first_line(error)) from error


def build_model(config: Any, state: dict[str, Any]) -> Any:
    """The model for `config` filled strictly with `state` (built without random init)."""
    from transformers import GroundingDinoForObjectDetection
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = GroundingDinoForObjectDetection(config)
    expected = model.state_dict()
    problems = mismatch_problems(
        missing=[key for key in expected if key not in state],
        unexpected=[key for key in state if key not in expected],
        wrong_shape=[k for k in expected if k in state and state[k].shape != expected[k].shape],
    )
    if problems:
        raise ValueError(problems)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.requires_grad_(False).eval()


def mismatch_problems(
    missing: list[str],
    unexpected: list[str],
    wrong_shape: list[str],
    name: Callable[[str], str] = original_name,
) -> str:
    """What a strict load found wrong, with keys named by `name` (the original file's names
    by default)."""
    return "; ".join(
        f"{what}: {some_keys([name(key) for key in keys])}"
        for what, keys in (
            ("missing tensors", missing),
            ("tensors GroundingDINO does not have", unexpected),
            ("tensors of the wrong shape", wrong_shape),
        )
        if keys
    )


def load_transformers_folder(folder: Path) -> Any:
    """GroundingDinoForObjectDetection from a save_pretrained folder (safetensors only),
    refused when it leaves a parameter unfilled or holds tensors the model lacks."""
    import torch
    from transformers import GroundingDinoForObjectDetection

    try:
        model, info = GroundingDinoForObjectDetection.from_pretrained(
            str(folder),
            local_files_only=True,
            use_safetensors=True,
            dtype=torch.float32,
            ignore_mismatched_sizes=True,  # reported in `info`, refused below
            output_loading_info=True,
        )
    except Exception as error:
        raise _bad_folder(folder, f"it could not be loaded ({first_line(error)})") from error
    problems = mismatch_problems(
        missing=[k for k in info["missing_keys"] if not k.startswith(UNUSED_NORM)],
        unexpected=list(info["unexpected_keys"]),
        wrong_shape=[mismatch[0] for mismatch in info["mismatched_keys"]],
        name=str,
    )
    if problems:
        raise _bad_folder(folder, problems)
    return model.requires_grad_(False).eval()


def _bad_folder(folder: Path, what: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"GroundingDINO folder {folder} is not a usable transformers GroundingDINO: {what}. "
        f"Save it again with save_pretrained (config.json and model.safetensors), or use "
        f"{ORIGINAL_FILES[0]} from {ORIGINAL_URL}."
    )


def _candidates(models_dir: Path | None, names: tuple[str, ...]) -> list[Path]:
    """<models>/grounding-dino/<name> then <models>/groundingdino/<name> (glob patterns)."""
    if models_dir is None:
        return []
    roots = [Path(models_dir) / folder for folder in GROUNDING_FOLDERS]
    return [path for name in names for root in roots for path in sorted(root.glob(name))]


def _is_transformers(folder: Path | None) -> bool:
    if folder is None or not (folder / "model.safetensors").is_file():
        return False
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "grounding-dino"


def _has_tokenizer(folder: Path | None) -> bool:
    return folder is not None and any((folder / name).is_file() for name in TOKENIZER_FILES)


def _cached_repo(repo: str, hub_cache: Path | None, file: str = "config.json") -> Path | None:
    """The snapshot folder of a hub repo whose `file` is in the local cache (no download)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        repo, file, cache_dir=None if hub_cache is None else str(hub_cache)
    )
    return Path(found).parent if isinstance(found, str) else None


def _files(weights: Path, tokenizer: Path | None, form: Format, name: str) -> GroundingFiles:
    stat = (weights / "model.safetensors" if weights.is_dir() else weights).stat()
    identity = f"grounding-dino:{weights}:{stat.st_size}:{stat.st_mtime_ns}:{tokenizer}"
    kind = "original checkpoint" if form == "original" else "transformers folder"
    return GroundingFiles(
        weights, tokenizer, form, identity, f"{name} (GroundingDINO, {kind})", name
    )


# A random GroundingDINO of ~0.5 M parameters (tests, demo mode): the released layout at toy
# width, with the 8 heads and 4 sampling points the original-layout reader assumes.
TINY_WORDS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", "a", "the", "of", "face")
TINY_WORDS += ("chin", "jaw", "##line", "neck", "person", "eye", "mouth", "nose", "ear", "hair")
TINY_SWIN = {"embed_dim": 16, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 2, 4], "window_size": 4}
TINY_SWIN |= {"patch_size": 8}  # a quarter of the tokens of the released 4
TINY_BERT = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 1}
TINY_SIZES = {"d_model": 32, "num_queries": 20, "encoder_layers": 1, "decoder_layers": 2}
TINY_FFN = {"encoder_ffn_dim": 64, "decoder_ffn_dim": 64}


def build_tiny_grounding_dino(folder: Path, seed: int = 0) -> Path:
    """A random tiny GroundingDINO saved as a transformers folder (config.json,
    model.safetensors and a BERT tokenizer of TINY_WORDS), built without the hub."""
    import torch
    from transformers import BertConfig, BertTokenizer, GroundingDinoConfig, SwinConfig
    from transformers import GroundingDinoForObjectDetection as Model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(TINY_WORDS) + "\n", encoding="utf-8")
    BertTokenizer(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    swin = SwinConfig(**TINY_SWIN, out_features=["stage2", "stage3", "stage4"])
    bert = BertConfig(vocab_size=len(TINY_WORDS), intermediate_size=64, **TINY_BERT)
    config = GroundingDinoConfig(backbone_config=swin, text_config=bert, **TINY_SIZES, **TINY_FFN)
    torch.manual_seed(seed)
    Model(config).save_pretrained(folder)
    return folder
