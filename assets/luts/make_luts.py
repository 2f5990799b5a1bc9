"""Write the studio's own .cube LUTs into this folder (deterministic: pure arithmetic).

Run: python assets/luts/make_luts.py
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

SIZE = 33
LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709, the grade's notion of brightness


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def luma(rgb: np.ndarray) -> np.ndarray:
    return (rgb @ LUMA)[..., None]


def saturate(rgb: np.ndarray, amount: float) -> np.ndarray:
    y = luma(rgb)
    return y + amount * (rgb - y)


def portrait_warm(rgb: np.ndarray) -> np.ndarray:
    """Warmer white balance, a gentle S-curve, slightly lifted shadows; skin stays natural."""
    out = rgb * np.array([1.035, 1.0, 0.93])
    out = 0.75 * out + 0.25 * smoothstep(out)
    out = 0.02 + 0.97 * out
    return saturate(out, 1.04)


def teal_orange(rgb: np.ndarray) -> np.ndarray:
    """Split toning: shadows towards teal, highlights and skin towards orange."""
    y = luma(rgb)
    weight = smoothstep((y - 0.15) / 0.7)
    shadows = np.array([-0.05, 0.015, 0.05])
    highlights = np.array([0.05, 0.01, -0.055])
    midtone = 4.0 * y * (1.0 - y)  # strongest in the mid-tones, none at pure black or white
    out = rgb + midtone * ((1.0 - weight) * shadows + weight * highlights)
    out = 0.85 * out + 0.15 * smoothstep(out)
    return saturate(out, 1.08)


def soft_film_fade(rgb: np.ndarray) -> np.ndarray:
    """Faded blacks, a soft highlight shoulder, a little less colour and a faint warm cast."""
    out = saturate(rgb, 0.85)
    out = 0.7 * out + 0.3 * smoothstep(out)
    out = 0.06 + 0.89 * out
    return out + np.array([0.012, 0.004, -0.01]) * (1.0 - out)


def mono_silver(rgb: np.ndarray) -> np.ndarray:
    """Black and white with a light red filter (kind to skin) and a soft S-curve."""
    y = rgb @ np.array([0.36, 0.52, 0.12])
    y = 0.8 * y + 0.2 * smoothstep(y)
    return np.repeat(y[..., None], 3, axis=-1)


LUTS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "portrait_warm.cube": ("Portrait Warm", portrait_warm),
    "teal_orange.cube": ("Teal Orange", teal_orange),
    "soft_film_fade.cube": ("Soft Film Fade", soft_film_fade),
    "mono_silver.cube": ("Mono Silver", mono_silver),
}


def grid(size: int) -> np.ndarray:
    """Every grid colour, red varying fastest (the .cube row order), shape (size^3, 3)."""
    steps = np.linspace(0.0, 1.0, size)
    b, g, r = np.meshgrid(steps, steps, steps, indexing="ij")
    return np.stack([r, g, b], axis=-1).reshape(-1, 3)


def cube_text(title: str, doc: str, table: np.ndarray, size: int) -> str:
    header = [
        f"# Portrait Studio LUT: {doc}",
        "# Made by assets/luts/make_luts.py; the project's own work.",
        f'TITLE "{title}"',
        f"LUT_3D_SIZE {size}",
        "DOMAIN_MIN 0.0 0.0 0.0",
        "DOMAIN_MAX 1.0 1.0 1.0",
    ]
    # Adding 0.0 turns -0.0 into 0.0 so that no row prints "-0.000000".
    rows = [f"{r:.6f} {g:.6f} {b:.6f}" for r, g, b in np.clip(table, 0.0, 1.0) + 0.0]
    return "\n".join(header + rows) + "\n"


def main(folder: Path | None = None) -> None:
    """Write every LUT into `folder` (this script's folder by default)."""
    folder = folder or Path(__file__).resolve().parent
    colours = grid(SIZE)
    for file_name, (title, grade) in LUTS.items():
        doc = (grade.__doc__ or "").strip()
        (folder / file_name).write_text(cube_text(title, doc, grade(colours), SIZE))


if __name__ == "__main__":
    main()
