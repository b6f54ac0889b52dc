"""Render a frame as a consumer image (PS3.18 §8.3.5.1): JPEG or PNG, windowed, scaled to a viewport.

The display pipeline of PS3.3 §C.11: Modality LUT (rescale), VOI (the window asked for, else the
instance's own window or VOI LUT, else the frame's range), MONOCHROME1 inversion; colour images
are shown as RGB (pydicom converts YBR), palette colour through its lookup tables.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from imagebridge.dicom import pixels
from imagebridge.dicom.frames import FrameIndex
from imagebridge.dicom.greyscale import Greyscale
from imagebridge.errors import CannotTranscode

FUNCTIONS = ("linear", "linear_exact", "sigmoid")
"""VOI LUT Functions of PS3.3 §C.11.2.1.3, as the window parameter names them (PS3.18 §8.3.5.1.3)."""

MEDIA_TYPES = ("image/jpeg", "image/png")


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    window: Window | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90


def render_frame(
    path: Path, number: int, options: RenderOptions, syntax: str = "", index: FrameIndex | None = None
) -> bytes:
    """Frame ``number`` (1-based) of the instance at ``path``, encoded as ``options.media_type``;
    the file is parsed once, and plain greyscale frames are read through the frame ``index``
    of an instance stored in ``syntax`` (:func:`pixels.frame_and_header`)."""
    array, header = pixels.frame_and_header(path, number, syntax, index)
    image = Image.fromarray(display(array, header, options.window))
    if options.viewport is not None:
        image = fit(image, *options.viewport)
    return encode(image, options)


def display(array: np.ndarray, header: Dataset | Greyscale, window: Window | None) -> np.ndarray:
    """8-bit greyscale (rows x columns) or RGB (rows x columns x 3) values for display."""
    if isinstance(header, Dataset):
        if array.ndim == 3 and array.shape[-1] in (3, 4):
            return _to_8bit(array[..., :3], int(header.get("BitsStored", 8) or 8))
        if str(header.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
            return _palette(array, header)
        header = Greyscale.of(header)
    if window is None:
        window = _instance_window(header)
    lut = _lookup_table(array, header, window)
    if lut is not None:
        shown = _look_up(lut, array)
    else:
        shown = _voi(_modality(array, header).astype(np.float64), header, window)
    return 255 - shown if header.photometric == "MONOCHROME1" else shown


def _palette(array: np.ndarray, header: Dataset) -> np.ndarray:
    try:
        rgb = apply_color_lut(array, header)
    except Exception as exc:
        raise CannotTranscode(f"the palette colour lookup tables cannot be applied ({exc})") from exc
    return (rgb / 257).astype(np.uint8) if rgb.dtype != np.uint8 else rgb


def _lookup_table(array: np.ndarray, header: Greyscale, window: Window | None) -> np.ndarray | None:
    """For integer pixels under a window, the display value of every stored value present
    (modality LUT and window are element-wise): one table lookup instead of floating-point
    arithmetic on every pixel. 8- and 16-bit tables span every bit pattern of the type, so
    that :func:`_look_up` indexes them with the pixels themselves."""
    if window is None or not np.issubdtype(array.dtype, np.integer) or array.size == 0:
        return None
    low, high = int(array.min()), int(array.max())
    if high - low > 1 << 20 or high - low + 1 > array.size:
        return None
    domain = np.arange(low, high + 1, dtype=array.dtype)
    shown = apply_window(_modality(domain, header).astype(np.float64), window)
    if not _by_bit_pattern(array):
        return shown
    table = np.zeros(1 << (8 * array.dtype.itemsize), np.uint8)
    table[domain.view(f"u{array.dtype.itemsize}")] = shown
    return table


def _by_bit_pattern(array: np.ndarray) -> bool:
    return array.dtype.itemsize <= 2 and array.dtype.isnative


def _look_up(table: np.ndarray, array: np.ndarray) -> np.ndarray:
    if _by_bit_pattern(array):
        return np.take(table, array.view(f"u{array.dtype.itemsize}"), mode="wrap")
    return table[array.astype(np.int64) - int(array.min())]


def _modality(values: np.ndarray, header: Greyscale) -> np.ndarray:
    """The Modality LUT (PS3.3 §C.11.1): the rescale, computed as pydicom computes it, or
    pydicom's own handling of a Modality LUT Sequence."""
    if header.tables is not None:
        return apply_modality_lut(values, header.tables)
    if header.rescale is None:
        return values
    slope, intercept = header.rescale
    rescaled = values.astype(np.float64) * slope
    rescaled += intercept
    return rescaled


def _voi(values: np.ndarray, header: Greyscale, window: Window | None) -> np.ndarray:
    if window is not None:
        return apply_window(values, window)
    if header.tables is not None and "VOILUTSequence" in header.tables:
        values = apply_voi_lut(values.astype(np.int64), header.tables).astype(np.float64)
    return _stretch(values)


def _instance_window(header: Greyscale) -> Window | None:
    if header.window is None:
        return None
    center, width, function = header.window
    if width <= 0 or function not in FUNCTIONS:
        return None
    return Window(center, width, function)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 §C.11.2.1.2 (linear, linear exact) and §C.11.2.1.3.1 (sigmoid), output 0..255."""
    c, w = window.center, window.width
    if window.function == "sigmoid":
        scaled = 1.0 / (1.0 + np.exp(np.clip(-4.0 * (values - c) / w, -500, 500)))
    elif window.function == "linear_exact":
        scaled = (values - c) / w + 0.5
    elif w <= 1:
        scaled = (values > c - 0.5).astype(np.float64)
    else:
        scaled = (values - (c - 0.5)) / (w - 1) + 0.5
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(np.min(values)), float(np.max(values))
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _to_8bit(rgb: np.ndarray, bits_stored: int) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    if np.issubdtype(rgb.dtype, np.floating):
        return _stretch(rgb)
    shift = max(bits_stored - 8, 0)
    return np.clip(rgb.astype(np.int64) >> shift, 0, 255).astype(np.uint8)


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to fit a ``width`` x ``height`` viewport, keeping the aspect ratio (PS3.18 §8.3.5.1.2)."""
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def encode(image: Image.Image, options: RenderOptions) -> bytes:
    buffer = io.BytesIO()
    if options.media_type == "image/png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=options.quality)
    return buffer.getvalue()
