"""Segment Anything for the detailers' optional SAM refinement (specs §8), from the files
people have: the original segment-anything checkpoints in <models>/sams/ that
ComfyUI-Impact-Pack's SAMLoader reads (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth,
sam_vit_h_4b8939.pth).

Those files are plain state dicts in segment-anything's own key layout. We read them with
torch's weights-only unpickler, infer the architecture from the tensor shapes, rename the
keys to transformers' layout (the table below restates transformers'
models/sam/convert_sam_to_hf.py as a bijection) and run transformers' SamModel with its
SamProcessor, as Impact-Pack's SamPredictor would run the same weights.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelNotFoundError
from engine.faces.boxes import check_rgb
from engine.faces.sam_keys import (  # noqa: F401  (re-exported: the module's public API)
    TIED_KEY,
    sam_config,
    sam_config_from_shapes,
    some_keys,
    to_original_key,
    to_original_state_dict,
    to_transformers_key,
    to_transformers_state_dict,
    variant_name,
)
from engine.load_errors import first_line, refused_by_unpickler

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
SAMS_FOLDER = "sams"
# The three official checkpoints, in the order we pick them: Impact-Pack's installer fetches
# vit_b, so that is the one most people have and the one its workflows name.
SAM_FILES = ("sam_vit_b_01ec64.pth", "sam_vit_l_0b3195.pth", "sam_vit_h_4b8939.pth")
SAM_SUFFIXES = (".pth", ".pt")
SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
WHAT_TO_DO = (
    f"Use an original segment-anything checkpoint such as {SAM_FILES[0]} (from {SAM_URL}), "
    "or remove the file."
)
# Image embeddings kept per segmenter (a vit_h one is 4 MiB): the image being detailed, and
# the one before it for an A/B re-run.
EMBEDDINGS_KEPT = 2


@dataclass(frozen=True)
class EncodedImage:
    """The image encoder's output for one image, and the sizes that map prompts onto it."""

    embedding: Any
    original_size: tuple[int, int]  # (H, W) of the image
    reshaped_size: tuple[int, int]  # (H, W) it was resized to before padding


class SamSegmenter:
    """A segment-anything checkpoint as transformers' SamModel. segment() prompts it as
    Impact-Pack's FaceDetailer does by default (detection hint "center-1"): per box, the box
    and its centre as a foreground point, multimask output on (3 masks and their scores)."""

    def __init__(
        self, *, identity: str, label: str, variant: str, model: Any, image_processor: Any
    ):
        self.identity = identity
        self.label = label
        self.variant = variant
        self.model = model
        self.image_processor = image_processor
        self._encoded: OrderedDict[str, EncodedImage] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path, device: str = "cpu") -> SamSegmenter:
        """Load an original segment-anything checkpoint; ModelNotFoundError says what is wrong."""
        path = Path(path)
        weights = read_sam_weights(path)
        try:
            config = sam_config_from_shapes(weights)
            model = build_model(config, to_transformers_state_dict(weights))
        except KeyError as error:
            raise _not_sam(path, f"it has no tensor {error}") from error
        except Exception as error:  # odd shapes, keys SAM lacks, weights that do not fit
            raise _not_sam(path, first_line(error)) from error
        return cls(
            identity=sam_identity(path),
            label=f"{path.name} (SAM {variant_name(config)})",
            variant=variant_name(config),
            model=model.to(device),
            image_processor=make_image_processor(config.vision_config.image_size),
        )

    @property
    def device(self) -> Any:
        return self.model.vision_encoder.pos_embed.device

    def segment(
        self, rgb: np.ndarray, boxes: list[Box], bbox_expansion: int = 0
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per box (xyxy image pixels): 3 image-size bool masks (3, H, W) and their predicted
        IoU scores (3,). The image is encoded once, however many boxes and calls ask."""
        import torch

        rgb = check_rgb(rgb)
        if not boxes:
            return []
        height, width = rgb.shape[:2]
        prompts = [impact_prompt(box, width, height, bbox_expansion) for box in boxes]
        with self._lock, torch.inference_mode():
            encoded = self._encode(rgb)
            # SamProcessor's _normalize_coordinates, done here because the processor would
            # re-read the whole image (0.1 s at 2048²) for every call that only adds prompts.
            (new_h, new_w), (old_h, old_w) = encoded.reshaped_size, encoded.original_size
            scale = torch.tensor([new_w / old_w, new_h / old_h], dtype=torch.float32)
            grown = torch.tensor([box for box, _ in prompts], dtype=torch.float32)
            centres = torch.tensor([centre for _, centre in prompts], dtype=torch.float32)
            output = self.model(
                image_embeddings=encoded.embedding,
                input_boxes=(grown.view(-1, 2, 2) * scale).view(1, -1, 4).to(self.device),
                input_points=(centres * scale).view(1, -1, 1, 2).to(self.device),
                input_labels=torch.ones(1, len(prompts), 1, dtype=torch.int64, device=self.device),
                multimask_output=True,
            )
        masks = self.image_processor.post_process_masks(
            output.pred_masks.float().cpu(), [encoded.original_size], [encoded.reshaped_size]
        )[0].numpy()
        scores = output.iou_scores[0].float().cpu().numpy()
        return [(masks[i], scores[i]) for i in range(len(boxes))]

    def _encode(self, rgb: np.ndarray) -> EncodedImage:
        """The image's embedding, from the cache when this exact image was encoded lately."""
        key = f"{rgb.shape}:{hashlib.blake2b(memoryview(rgb), digest_size=16).hexdigest()}"
        if key in self._encoded:
            self._encoded.move_to_end(key)
            return self._encoded[key]
        inputs = self.image_processor(images=rgb, return_tensors="pt")
        self._encoded[key] = EncodedImage(
            embedding=self.model.get_image_embeddings(inputs["pixel_values"].to(self.device)),
            original_size=tuple(inputs["original_sizes"][0].tolist()),
            reshaped_size=tuple(inputs["reshaped_input_sizes"][0].tolist()),
        )
        while len(self._encoded) > EMBEDDINGS_KEPT:
            self._encoded.popitem(last=False)
        return self._encoded[key]


def impact_prompt(
    box: Box, width: int, height: int, expansion: int = 0
) -> tuple[Box, tuple[float, float]]:
    """core.make_sam_mask with detection hint "center-1": the box grown by `expansion` and
    clipped to the image, and the centre of the box as given."""
    x1, y1, x2, y2 = (float(v) for v in box)
    centre = (x1 + (x2 - x1) / 2, y1 + (y2 - y1) / 2)
    grown = (
        max(x1 - expansion, 0.0),
        max(y1 - expansion, 0.0),
        min(x2 + expansion, float(width)),
        min(y2 + expansion, float(height)),
    )
    return grown, centre


def read_sam_weights(path: Path) -> dict[str, Any]:
    """The file's state dict, read with torch's weights-only unpickler (no code runs)."""
    import pickle

    import torch

    if not path.is_file():
        raise ModelNotFoundError(f"SAM file {path} does not exist. {WHAT_TO_DO}")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = refused_by_unpickler(error)
        if refused is None:
            raise _unreadable(path, error) from error
        raise ModelNotFoundError(
            f"SAM file {path} was not loaded: its pickle is more than tensors ({refused}), "
            f"which a plain segment-anything state dict never is, and loading it could run "
            f"code. {WHAT_TO_DO}"
        ) from None
    except Exception as error:
        raise _unreadable(path, error) from error
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise _not_sam(path, f"it holds a {type(weights).__name__}, not a state dict of tensors")
    return weights


def build_model(config: Any, state_dict: dict[str, Any]) -> Any:
    """SamModel for `config` holding exactly `state_dict` (strict), in float32 for inference.
    Built on the meta device so a vit_h is not randomly initialised only to be overwritten."""
    import torch
    from transformers import SamModel

    with torch.device("meta"):
        model = SamModel(config)
    check_fits(model.state_dict(), state_dict)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    model.requires_grad_(False)
    return model.eval()


def check_fits(expected: dict[str, Any], given: dict[str, Any]) -> None:
    """What load_state_dict(strict=True) checks, said in segment-anything's key names."""
    problems = [
        f"{what}: {some_keys([to_original_key(key) or key for key in keys])}"
        for what, keys in (
            ("missing tensors", [key for key in expected if key not in given]),
            ("tensors SAM does not have", [key for key in given if key not in expected]),
            (
                "tensors of the wrong shape",
                [k for k in expected if k in given and given[k].shape != expected[k].shape],
            ),
        )
        if keys
    ]
    if problems:
        raise ValueError("; ".join(problems))


def make_image_processor(image_size: int) -> Any:
    """SamProcessor's image processor for a model that reads `image_size`² (1024 for SAM):
    longest side resized to it, ImageNet mean/std, padded square; masks back to image size."""
    from transformers import SamImageProcessor

    square = {"height": image_size, "width": image_size}
    return SamImageProcessor(size={"longest_edge": image_size}, pad_size=square)


def list_sam_files(models_dir: Path | None) -> list[str]:
    """SAM checkpoints in <models>/sams/ as names relative to it: the official ones first."""
    if models_dir is None:
        return []
    root = Path(models_dir) / SAMS_FOLDER
    if not root.is_dir():
        return []
    names = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix in SAM_SUFFIXES and p.is_file()
    )
    return [n for n in SAM_FILES if n in names] + [n for n in names if n not in SAM_FILES]


def find_sam_file(models_dir: Path | None, preferred: str = "") -> Path | None:
    """<models>/sams/<preferred> when listed there, else the first listed file, else None
    (so a name from a recipe never reaches outside the folder)."""
    names = list_sam_files(models_dir)
    if not names:
        return None
    name = preferred if preferred in names else names[0]
    return Path(models_dir) / SAMS_FOLDER / name


def describe_sam(models_dir: Path | None) -> str:
    """One line for the UI: which SAM file refinement uses, or where to put one."""
    path = find_sam_file(models_dir)
    if path is not None:
        return f"SAM refinement: {path.name} (in {path.parent})."
    where = (
        f"{Path(models_dir) / SAMS_FOLDER}/"
        if models_dir is not None
        else f"the {SAMS_FOLDER}/ folder of a models folder (and set that folder)"
    )
    return f"SAM refinement: no SAM file. Put {SAM_FILES[0]} (from {SAM_URL}) in {where}."


def sam_identity(path: Path) -> str:
    """'sam:<name>:<size>:<mtime_ns>': changes when the file does."""
    stat = path.stat()
    return f"sam:{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def tinysam_config() -> Any:
    """A SAM of a few hundred KiB that reads 64² images (8-px patches, 2 blocks, 1 global)."""
    width = 32  # the positional matrix has width/2 features: its sin and cos make it width wide
    return sam_config(
        vision={
            "hidden_size": width,
            "output_channels": width,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 8,
            "window_size": 4,
            "global_attn_indexes": [1],
            "num_pos_feats": width // 2,
            "mlp_dim": 64,
        },
        prompt={"hidden_size": width, "mask_input_channels": 8},
        decoder={"hidden_size": width, "mlp_dim": 64, "iou_head_hidden_dim": width},
    )


def save_tiny_sam(path: Path, seed: int = 0) -> Path:
    """A random tiny SAM saved as segment-anything would save it (original key names), for
    tests and demo mode to load through SamSegmenter.from_file like a real checkpoint."""
    import torch
    from transformers import SamModel

    torch.manual_seed(seed)
    model = SamModel(tinysam_config())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_original_state_dict(model.state_dict()), path)
    return path


def _not_sam(path: Path, what: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"SAM file {path} is not a segment-anything checkpoint: {what}. {WHAT_TO_DO}"
    )


def _unreadable(path: Path, error: BaseException) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"SAM file {path} could not be read as a PyTorch checkpoint ({first_line(error)}): "
        f"it is empty, truncated or not a .pth file. {WHAT_TO_DO}"
    )
