"""Colour stage (LayerStyle group 10): Exposure -> Grain -> Brightness/Contrast/Saturation -> LUT.

One module per formula: exposure, grain, tone, lut (+ cube for reading files); grader holds
the entry point and its caches; baked is the CPU fast path that folds the colour-only steps into
one 3D LUT.
"""

from engine.color.cube import CubeLut, list_luts, load_cube, resolve_lut
from engine.color.grader import ColorGrader

__all__ = ["ColorGrader", "CubeLut", "list_luts", "load_cube", "resolve_lut"]
