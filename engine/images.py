"""Image input checks, the content-addressed image store, and tensor <-> PIL conversion."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from engine.errors import InputError
from engine.files import atomic_write
from engine.input_limits import is_image_digest

MAX_UPLOAD_BYTES = 100 * 1024 * 1024
MAX_PIXELS = 8192 * 8192
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")


def open_checked(data: bytes, name: str = "The image") -> Image.Image:
    """Decode an upload after checking size, format and pixel count (header first).

    `name` starts the messages, so it is capitalised ("The image", "portrait.png").
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(
            f"{name} is {len(data) / 2**20:.0f} MB; the limit is "
            f"{MAX_UPLOAD_BYTES // 2**20} MB. Export a smaller file."
        )
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{name} declares far more pixels than the studio accepts "
            f"({MAX_PIXELS / 1e6:.0f} MP, 8192×8192): {exc} Resize it first."
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(
            f"{name} is not an image this studio can read (PNG, JPEG, WEBP, BMP, "
            f"TIFF) or the file is damaged. Re-export it and upload again."
        ) from exc
    _check_header(image, name)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(
            f"{name} is damaged or truncated ({exc}). Re-export it and upload again."
        ) from exc
    return image


def _check_header(image: Image.Image, name: str) -> None:
    if image.format not in ACCEPTED_FORMATS:
        raise InputError(f"{name} is {image.format}; use PNG, JPEG, WEBP, BMP or TIFF.")
    width, height = image.size
    if width * height > MAX_PIXELS or width <= 0 or height <= 0:
        raise InputError(
            f"{name} claims {width}×{height} pixels ({width * height / 1e6:.0f} MP); the "
            f"studio accepts up to {MAX_PIXELS / 1e6:.0f} MP (8192×8192). Resize it first."
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy; transparent areas are composited on white (what a viewer shows)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode in ("I;16", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        array = array / max(float(array.max()), 1.0) * 255
        return Image.fromarray(array.round().astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def pil_to_tensor(images: list[Image.Image], device: torch.device | str) -> torch.Tensor:
    """PIL images of one size -> (B, 3, H, W) float32 in [0, 1]."""
    arrays = [np.asarray(to_rgb(im), dtype=np.uint8) for im in images]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return (batch.to(device).float() / 255.0).contiguous()


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) float in [0, 1] -> PIL RGB images (rounded to 8 bit)."""
    array = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8)
    array = array.permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, "RGB") for a in array]


class ImageStore:
    """Uploaded images by content digest (sha256 of the RGB pixels), stored as PNG."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def put(self, data: bytes, name: str = "The image") -> str:
        image = to_rgb(open_checked(data, name))
        digest = "sha256:" + hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()
        path = self._path(digest)
        if not path.exists():
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            atomic_write(path, buffer.getvalue())
        return digest

    def require(self, digest: str) -> str:
        """The digest if the store has it, else an InputError saying what to do."""
        if not digest:
            raise InputError("No source image: upload an image in the Color tab first.")
        if not self._path(digest).exists():
            raise InputError(
                f"The image {digest[:19]}… is not in this studio's image store. Upload it again."
            )
        return digest

    def load(self, digest: str) -> Image.Image:
        return to_rgb(Image.open(self._path(self.require(digest))))

    def _path(self, digest: str) -> Path:
        if not is_image_digest(digest):
            raise InputError(f"{digest[:80]!r} is not an image digest (sha256:<64 hex>).")
        return self.folder / f"{digest.removeprefix('sha256:')}.png"
