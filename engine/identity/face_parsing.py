"""facexlib's half of PuLID's face preparation: the 512 x 512 FFHQ alignment and BiSeNet face
parsing, turning the reference face into the grey, background-free image EVA-CLIP sees.

The BiSeNet here is written out rather than imported: `import facexlib.parsing` runs
facexlib/__init__.py, which imports its tracking code and with it numba and filterpy (and
numba pins numpy). The modules, channel widths and state-dict keys are facexlib's
(facexlib/parsing/bisenet.py and resnet.py), so its parsing_bisenet.pth loads strictly.
"""

from __future__ import annotations

import importlib.util
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import InputError, ModelNotFoundError
from engine.identity.eva_clip import file_identity, read_weights
from engine.load_errors import first_line

PARSING_FILE = "parsing_bisenet.pth"
PARSING_URL = "https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth"
PARSING_CLASSES = 19  # CelebAMask-HQ: 0 background, 1 skin, ..., 17 hair, 18 hat
# Pixels PuLID paints white: background 0, ears 7/8, earring 9, neck 14, necklace 15, cloth 16
# and hat 18 (pipeline_flux.py bg_label). Skin, brows, eyes, glasses, nose, mouth, lips and
# hair (17) stay, as grey.
WHITE_CLASSES = (0, 16, 18, 7, 8, 9, 14, 15)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # facexlib's parsing input normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_PARSING_WIDTH = 4  # the real network's stem is 64 channels wide
TINY_PARSING_SEED = 1302
ALIGNED_SIZE = 512
# The five FFHQ landmarks (eye, eye, nose, mouth corner, mouth corner; image-left first) of a
# 512 x 512 face: facexlib's FaceRestoreHelper.face_template (utils/face_restoration_helper.py),
# measured by its scripts/get_ffhq_template.py over FFHQ.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)
# facexlib fills outside the photo with borderValue (135, 133, 132) on a BGR image: in RGB
# that is (132, 133, 135).
BORDER_RGB = (132, 133, 135)


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """The face warped onto the template (RGB uint8, 512 x 512) and the 2 x 3 similarity
    that maps reference-photo pixels to aligned pixels."""

    image: np.ndarray
    matrix: np.ndarray


def align_face(rgb: np.ndarray, keypoints: np.ndarray) -> AlignedFace:
    """Warp the face with these five keypoints onto FFHQ_TEMPLATE_512 as facexlib does: a
    similarity fitted with cv2.estimateAffinePartial2D (LMEDS), bilinear, grey border."""
    import cv2

    points = np.asarray(keypoints, dtype=np.float32).reshape(-1, 2)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"alignment needs five (x, y) keypoints, got shape {points.shape}")
    matrix, _ = cv2.estimateAffinePartial2D(points, FFHQ_TEMPLATE_512, method=cv2.LMEDS)
    if matrix is None:
        raise InputError(
            "The face's landmarks could not be aligned (they are too close together): use a "
            "reference photo where the face is larger and turned towards the camera."
        )
    image = cv2.warpAffine(
        rgb,
        matrix,
        (ALIGNED_SIZE, ALIGNED_SIZE),
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=BORDER_RGB,
    )
    return AlignedFace(image=image, matrix=matrix)


def white_mask(classes: torch.Tensor) -> torch.Tensor:
    """True where a class map's pixel belongs to WHITE_CLASSES."""
    return torch.isin(classes, torch.tensor(WHITE_CLASSES, device=classes.device))


def face_features_image(face: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """PuLID's EVA input: white where `classes` [B, 1, H, W] is in WHITE_CLASSES, elsewhere the
    grey (0.299 R + 0.587 G + 0.114 B) of `face` [B, 3, H, W] in [0, 1], on all 3 channels."""
    grey = 0.299 * face[:, 0:1] + 0.587 * face[:, 1:2] + 0.114 * face[:, 2:3]
    return torch.where(white_mask(classes), torch.ones_like(face), grey.expand_as(face))


class FaceParser:
    """A loaded BiSeNet: the aligned face to PuLID's grey, background-free face image."""

    def __init__(self, model: BiSeNet, identity: str, label: str) -> None:
        self.model = model.eval()
        self.identity = identity
        self.label = label

    @torch.no_grad()
    def classes(self, face: torch.Tensor) -> torch.Tensor:
        """The argmax class map [B, 1, H, W] of faces [B, 3, H, W] in [0, 1]."""
        from torchvision.transforms.functional import normalize

        device = next(self.model.parameters()).device
        pixels = normalize(face.to(device), list(IMAGENET_MEAN), list(IMAGENET_STD))
        return self.model(pixels).argmax(dim=1, keepdim=True)

    def face_features(self, aligned: np.ndarray) -> torch.Tensor:
        """[1, 3, H, W] in [0, 1] for an aligned RGB uint8 face."""
        device = next(self.model.parameters()).device
        face = torch.from_numpy(aligned).permute(2, 0, 1)[None].float().div(255).to(device)
        return face_features_image(face, self.classes(face))


def parsing_folders(models_dir: Path | None) -> list[Path]:
    """Where parsing_bisenet.pth is looked for: <models>/facexlib/ and its weights/ (the
    ComfyUI PuLID nodes' place), then facexlib's own download folder
    <site-packages>/facexlib/weights/, used when no model_rootpath is given (PuLID and
    ComfyUI-PuLID-Flux give none)."""
    folders = []
    if models_dir is not None:
        folders += [Path(models_dir) / "facexlib", Path(models_dir) / "facexlib" / "weights"]
    spec = importlib.util.find_spec("facexlib")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(place) / "weights" for place in spec.submodule_search_locations]
    folders.append(Path(sysconfig.get_paths()["purelib"]) / "facexlib" / "weights")
    return list(dict.fromkeys(folders))


def find_parsing_file(models_dir: Path | None) -> Path | None:
    """The first parsing_bisenet.pth in parsing_folders(models_dir), or None."""
    for folder in parsing_folders(models_dir):
        if (folder / PARSING_FILE).is_file():
            return folder / PARSING_FILE
    return None


def load_face_parser(path: Path, device: str | torch.device = "cpu") -> FaceParser:
    """facexlib's parsing_bisenet.pth, loaded strictly (weights only); ModelNotFoundError
    naming the file and the problem otherwise."""
    path = Path(path)
    model = BiSeNet()
    try:
        model.load_state_dict(read_weights(path), strict=True)
    except (RuntimeError, KeyError, ValueError) as error:
        raise ModelNotFoundError(
            f"{path} is not facexlib's BiSeNet face parser ({first_line(error)}). "
            f"Get {PARSING_FILE} from {PARSING_URL}."
        ) from None
    label = f"BiSeNet face parsing ({path.name})"
    return FaceParser(model.to(device), f"bisenet:{file_identity(path)}", label)


def build_tiny_face_parser(device: str | torch.device = "cpu") -> FaceParser:
    """A random BiSeNet TINY_PARSING_WIDTH channels wide, identical on every build."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_PARSING_SEED)
        model = BiSeNet(width=TINY_PARSING_WIDTH)
    label = "tiny random BiSeNet (tests and demo only)"
    return FaceParser(model.to(device), f"tiny:bisenet:{TINY_PARSING_SEED}", label)


# BiSeNet (facexlib's layout). `width` is the ResNet-18 stem's channels; 64 is the released
# network, whose stages are 64/128/256/512 wide with 128-channel context heads.


class ConvBNReLU(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ResidualBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if in_ch != out_ch or stride != 1:
            shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
            self.downsample = nn.Sequential(shortcut, nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


def _stage(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(in_ch, out_ch, stride), ResidualBlock(out_ch, out_ch, 1))


class ResNet18Trunk(nn.Module):
    """Features at 1/8, 1/16 and 1/32 of the input size."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = _stage(width, width, 1)
        self.layer2 = _stage(width, 2 * width, 2)
        self.layer3 = _stage(2 * width, 4 * width, 2)
        self.layer4 = _stage(4 * width, 8 * width, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        eighth = self.layer2(self.layer1(x))
        sixteenth = self.layer3(eighth)
        return eighth, sixteenth, self.layer4(sixteenth)


class AttentionRefinement(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        pooled = features.mean(dim=(2, 3), keepdim=True)
        return features * torch.sigmoid(self.bn_atten(self.conv_atten(pooled)))


class ContextPath(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        head = 2 * width
        self.resnet = ResNet18Trunk(width)
        self.arm16 = AttentionRefinement(4 * width, head)
        self.arm32 = AttentionRefinement(8 * width, head)
        self.conv_head32 = ConvBNReLU(head, head)
        self.conv_head16 = ConvBNReLU(head, head)
        self.conv_avg = ConvBNReLU(8 * width, head, kernel=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The 1/8 trunk features and the refined context, upsampled to 1/8."""
        eighth, sixteenth, thirty_second = self.resnet(x)
        context = self.conv_avg(thirty_second.mean(dim=(2, 3), keepdim=True))
        deep = self.arm32(thirty_second) + context  # the 1 x 1 context broadcasts ("nearest")
        deep = self.conv_head32(F.interpolate(deep, sixteenth.shape[2:], mode="nearest"))
        middle = self.arm16(sixteenth) + deep
        middle = self.conv_head16(F.interpolate(middle, eighth.shape[2:], mode="nearest"))
        return eighth, middle


class FeatureFusion(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(channels, channels, kernel=1)
        self.conv1 = nn.Conv2d(channels, channels // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(channels // 4, channels, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        features = self.convblk(torch.cat([spatial, context], dim=1))
        pooled = features.mean(dim=(2, 3), keepdim=True)
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(pooled))))
        return features * attention + features


class ParsingHead(nn.Module):
    def __init__(self, in_ch: int, mid_ch: int, classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch)
        self.conv_out = nn.Conv2d(mid_ch, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face parsing into PARSING_CLASSES classes. conv_out16/conv_out32 are the training-time
    auxiliary heads: kept so the released file loads strictly, not run."""

    def __init__(self, width: int = 64, classes: int = PARSING_CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath(width)
        self.ffm = FeatureFusion(4 * width)
        self.conv_out = ParsingHead(4 * width, 4 * width, classes)
        self.conv_out16 = ParsingHead(2 * width, width, classes)
        self.conv_out32 = ParsingHead(2 * width, width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [B, classes, H, W] for normalised RGB [B, 3, H, W]."""
        eighth, context = self.cp(x)
        logits = self.conv_out(self.ffm(eighth, context))
        return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=True)
