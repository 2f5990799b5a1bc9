"""EVA02-CLIP-L-14-336's vision tower, the face encoder PuLID-FLUX feeds its IDFormer with.

timm builds the network (`eva02_large_patch14_clip_336`: rope, SwiGLU with sub-LN, the
inner attention LayerNorm, 1024 wide, 24 blocks, a 768-d projection head) and its
`checkpoint_filter_fn` renames EVA-CLIP's keys (`visual.blocks.N.mlp.w1`, `attn.q_bias`,
`attn.inner_attn_ln`, ...) to its own. With those two, QuanSun's released
EVA02_CLIP_L_336_psz14_s6B.pt loads strictly and gives the same projected embedding and the
same hidden states as EVA-CLIP's own EVAVisionTransformer(return_hidden=True).

Files are read with torch's weights-only unpickler (or safetensors): a file whose pickle
needs code is refused, never run.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from engine.errors import ModelNotFoundError
from engine.load_errors import first_line, refused_by_unpickler

EVA_FILE = "EVA02_CLIP_L_336_psz14_s6B.pt"
EVA_REPO = "QuanSun/EVA-CLIP"  # the pretrained tag 'eva_clip' of EVA02-CLIP-L-14-336
EVA_FOLDERS = ("clip", "clip_vision")  # under the models folder; ComfyUI-PuLID-Flux uses clip/
EVA_URL = f"https://huggingface.co/{EVA_REPO}/blob/main/{EVA_FILE}"
TIMM_ARCHITECTURE = "eva02_large_patch14_clip_336"
# OpenAI CLIP's normalisation, which EVA-CLIP's transforms use (eva_clip/constants.py).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# PuLID keeps the tokens entering these blocks (EVA-CLIP's forward_features appends x before
# running block idx when 0 < idx <= 20 and idx % 4 == 0): five taps for IDFormer's mapping_0..4.
HIDDEN_STATE_BLOCKS = (4, 8, 12, 16, 20)
TINY_EVA_SEED = 1301


@dataclass(frozen=True)
class EvaShape:
    """The sizes of an EVA02-CLIP vision tower (the defaults are EVA02-CLIP-L-14-336's)."""

    image_size: int = 336
    patch_size: int = 14
    width: int = 1024
    depth: int = 24
    heads: int = 16  # head width 64
    embed_dim: int = 768  # the CLIP projection

    @property
    def tokens(self) -> int:
        """Class token plus patches: 577 for the real tower."""
        return 1 + (self.image_size // self.patch_size) ** 2


EVA02_CLIP_L_336 = EvaShape()
# A random stand-in for tests and the demo: every block and tap of the real tower at width 16
# (the tiny IDFormer's vit_width) on a 4 x 4 patch grid, with the real 768-d projection so
# id_cond keeps its 1280 values.
TINY_EVA = EvaShape(image_size=56, width=16, heads=2)


class EvaVisionEncoder:
    """A loaded tower: encode() gives PuLID's L2-normalised projected embedding and the five
    hidden states entering blocks 4, 8, 12, 16 and 20."""

    def __init__(self, model: Any, shape: EvaShape, identity: str, label: str) -> None:
        self.model = model.eval()
        self.shape = shape
        self.identity = identity
        self.label = label

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """[B, 3, H, W] RGB in [0, 1] -> (unit embedding [B, embed_dim], five hidden states
        [B, tokens, width])."""
        pixels = clip_pixels(images.to(self.device, torch.float32), self.shape.image_size)
        final, taps = self.model.forward_intermediates(
            pixels.to(self.dtype),
            indices=[block - 1 for block in HIDDEN_STATE_BLOCKS],  # timm taps block outputs
            return_prefix_tokens=True,
            output_fmt="NLC",
        )
        projected = self.model.forward_head(final)
        embedding = projected / projected.norm(p=2, dim=1, keepdim=True)
        hidden = tuple(torch.cat([prefix, patches], dim=1) for patches, prefix in taps)
        return embedding, hidden


def clip_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images in [0, 1] resized to size x size (bicubic) and normalised as EVA-CLIP expects."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import normalize, resize

    resized = resize(images, [size, size], InterpolationMode.BICUBIC, antialias=True)
    return normalize(resized, list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD))


def build_eva_vision(shape: EvaShape = EVA02_CLIP_L_336) -> Any:
    """timm's EVA02-CLIP vision tower at `shape`, randomly initialised (nothing downloaded)."""
    import timm

    return timm.create_model(
        TIMM_ARCHITECTURE,
        pretrained=False,
        num_classes=shape.embed_dim,
        img_size=shape.image_size,
        patch_size=shape.patch_size,
        embed_dim=shape.width,
        depth=shape.depth,
        num_heads=shape.heads,
    ).eval()


def _unfilled_eva_vision(shape: EvaShape) -> Any:
    """The tower with its weights allocated but not randomised, for a strict load to fill
    (timm's random init of 300 M weights takes seconds). Only the rotary tables are not in a
    checkpoint: they come from a one-block tower of the same shape, built normally."""
    with torch.device("meta"):
        model = build_eva_vision(shape)
    model = model.to_empty(device="cpu")
    with torch.random.fork_rng(devices=[]):  # the caller's RNG is left as it was
        model.rope = build_eva_vision(replace(shape, depth=1)).rope
    return model


def build_tiny_eva(device: str | torch.device = "cpu") -> EvaVisionEncoder:
    """The tiny random tower (TINY_EVA), identical on every build; the caller's RNG is kept."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_EVA_SEED)
        model = build_eva_vision(TINY_EVA)
    label = "tiny random EVA02-CLIP (tests and demo only)"
    return EvaVisionEncoder(model.to(device), TINY_EVA, f"tiny:eva02-clip:{TINY_EVA_SEED}", label)


def find_eva_file(models_dir: Path | None, hub_cache_dir: Path | None = None) -> Path | None:
    """EVA02_CLIP_L_336_psz14_s6B.pt in <models>/clip/ (where ComfyUI-PuLID-Flux's README
    says to put it) or <models>/clip_vision/, else in the Hugging Face cache of
    QuanSun/EVA-CLIP (where EVA-CLIP's hf_hub_download leaves it); None when in neither."""
    if models_dir is not None:
        for folder in EVA_FOLDERS:
            path = Path(models_dir) / folder / EVA_FILE
            if path.is_file():
                return path
    return _cached_hub_file(hub_cache_dir)


def eva_places(models_dir: Path | None) -> str:
    """Where find_eva_file looks, for messages."""
    folders = " or ".join(
        f"{Path(models_dir) / folder}/" if models_dir is not None else f"<models>/{folder}/"
        for folder in EVA_FOLDERS
    )
    return f"{folders}, or the Hugging Face cache of {EVA_REPO}"


def _cached_hub_file(hub_cache_dir: Path | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            EVA_REPO, EVA_FILE, cache_dir=None if hub_cache_dir is None else str(hub_cache_dir)
        )
    except Exception:  # a malformed cache folder simply means "not cached"
        return None
    return Path(found) if isinstance(found, str) else None


def file_identity(path: Path) -> str:
    """'<path>:<size>:<mtime_ns>': changes when the file does, read without loading it."""
    stat = Path(path).stat()
    return f"{path}:{stat.st_size}:{stat.st_mtime_ns}"


def load_eva_vision(
    path: Path,
    shape: EvaShape = EVA02_CLIP_L_336,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> EvaVisionEncoder:
    """The vision tower of an EVA-CLIP checkpoint (whole CLIP or tower only, EVA-CLIP or timm
    key names), loaded strictly into timm's network at `shape`; ModelNotFoundError naming the
    file and the problem otherwise."""
    from timm.models.eva import checkpoint_filter_fn

    path = Path(path)
    state = _unwrapped(read_weights(path), path)
    model = _unfilled_eva_vision(shape)
    try:
        model.load_state_dict(checkpoint_filter_fn(state, model), strict=True)
    except (RuntimeError, KeyError, ValueError, AttributeError) as error:
        raise ModelNotFoundError(
            f"{path} is not an EVA02-CLIP-L-14-336 checkpoint ({first_line(error)}). "
            f"PuLID-FLUX needs {EVA_FILE} from {EVA_URL}."
        ) from None
    identity = f"eva02-clip:{file_identity(path)}"
    label = f"EVA02-CLIP-L-14-336 ({path.name})"
    return EvaVisionEncoder(model.to(device, dtype), shape, identity, label)


def read_weights(path: Path) -> dict[str, Any]:
    """A .safetensors file, or a torch pickle read weights-only; ModelNotFoundError when the
    pickle holds code or the file is damaged."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:  # SafetensorError, OSError: header or data cut short
            raise _unreadable(path, error) from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = refused_by_unpickler(error)
        if refused is None:
            raise _unreadable(path, error) from None
        raise ModelNotFoundError(
            f"{path} was not loaded: its pickle holds more than tensors ({refused}), which "
            "model weights never need, and loading it could run code. Get the file again "
            "from its source."
        ) from None
    except Exception as error:  # EOFError, zip errors: damaged or cut-short files
        raise _unreadable(path, error) from None
    if not isinstance(data, dict):
        raise ModelNotFoundError(f"{path} holds a {type(data).__name__}, not model weights.")
    return data


def _unwrapped(data: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, without a DataParallel 'module.' prefix (EVA-CLIP's own
    loader strips it too); the nested 'state_dict'/'model' forms are left to timm's filter."""
    if any(key.startswith("module.") for key in data):
        data = {key.removeprefix("module."): value for key, value in data.items()}
    if not data:
        raise ModelNotFoundError(f"{path} holds no tensors.")
    return data


def _unreadable(path: Path, error: BaseException) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"{path} could not be read ({type(error).__name__}: {first_line(error)}): the file "
        "may be incomplete. Download it again."
    )
