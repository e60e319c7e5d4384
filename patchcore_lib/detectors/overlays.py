"""Heat-map overlays at the input image's own size: the anomaly map [S, S] of the model's input (resized, maybe
centre-cropped) mapped back onto the original image, a colour bar with the threshold marked beside it.

With ``crop="center"`` the part of the image the model never saw (outside the crop) is dimmed, so a defect
there is not mistaken for a normal area. Used by ``patchcore predict`` (:mod:`.predict_folder`).
"""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

#: brightness of the image where the model saw nothing (outside the centre crop)
DIMMED = 0.35
#: 'jet' as a 256-entry lookup table (uint8 RGB): colouring a map is one indexing, not a colormap call per pixel
JET = (colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """(width, height) after resizing the short side to ``resize`` (torchvision's ``Resize(int)`` on PIL images)."""
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def crop_box(width: int, height: int, resize: int, imagesize: int, crop: str) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in the original image's pixels of the square the model scores."""
    if crop == "none":
        return 0.0, 0.0, float(width), float(height)
    rw, rh = resized_size(width, height, resize)
    left, top = int(round((rw - imagesize) / 2.0)), int(round((rh - imagesize) / 2.0))  # torchvision CenterCrop
    sx, sy = width / rw, height / rh
    return left * sx, top * sy, (left + imagesize) * sx, (top + imagesize) * sy


def map_to_image(amap: np.ndarray, width: int, height: int, resize: int, imagesize: int, crop: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The map [S, S] on the original image: (values [H, W] float32, seen [H, W] bool: inside the crop)."""
    left, top, right, bottom = crop_box(width, height, resize, imagesize, crop)
    x0, y0 = int(round(left)), int(round(top))
    w, h = max(1, int(round(right)) - x0), max(1, int(round(bottom)) - y0)
    values_f = Image.fromarray(np.asarray(amap, dtype=np.float32), mode="F")
    resized = np.asarray(values_f.resize((w, h), Image.Resampling.BILINEAR))
    values = np.zeros((height, width), dtype=np.float32)
    seen = np.zeros((height, width), dtype=bool)
    x1, y1 = min(width, x0 + w), min(height, y0 + h)
    values[y0:y1, x0:x1] = resized[: y1 - y0, : x1 - x0]
    seen[y0:y1, x0:x1] = True
    return values, seen


def _label(value: float) -> str:
    return f"{value:.3g}"


def colour_bar(height: int, low: float, high: float, threshold: float | None, width: int = 18,
               text_width: int = 90) -> np.ndarray:
    """uint8 [height, width + text_width, 3]: 'jet' from ``high`` (top) to ``low`` (bottom), the threshold as a
    white line with its value; labels on a dark background."""
    ramp = np.linspace(255, 0, height).round().astype(np.uint8)[:, None].repeat(width, axis=1)
    bar = JET[ramp]
    panel = Image.new("RGB", (width + text_width, height), (24, 24, 24))
    panel.paste(Image.fromarray(bar), (0, 0))
    draw = ImageDraw.Draw(panel)
    font = ImageFont.load_default()
    draw.text((width + 3, 1), _label(high), fill=(255, 255, 255), font=font)
    draw.text((width + 3, max(0, height - 12)), _label(low), fill=(255, 255, 255), font=font)
    if threshold is not None and high > low and low <= threshold <= high:
        y = int(round((1.0 - (threshold - low) / (high - low)) * (height - 1)))
        draw.line([(0, y), (width + 6, y)], fill=(255, 255, 255), width=2)
        draw.text((width + 8, min(max(0, y - 6), max(0, height - 24))), f"thr {_label(threshold)}",
                  fill=(255, 255, 255), font=font)
    return np.asarray(panel)


def render_overlay(image: Image.Image, amap: np.ndarray, resize: int, imagesize: int, crop: str,
                   low: float, high: float, threshold: float | None, alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB [H, W + bar, 3]: ``amap`` coloured with 'jet' on [low, high] over the original ``image`` (H x W),
    areas outside the crop dimmed, and the colour bar with the threshold at the right."""
    rgb = np.array(image.convert("RGB"), dtype=np.float32)
    height, width = rgb.shape[:2]
    values, seen = map_to_image(amap, width, height, resize, imagesize, crop)
    levels = np.clip((values - low) * (255.0 / max(high - low, 1e-12)) + 0.5, 0, 255).astype(np.uint8)
    # alpha * heat + (1 - alpha) * rgb where seen, else DIMMED * rgb: in place (the overlay of every predicted image)
    heat = np.take(JET, levels, axis=0).astype(np.float32)
    heat *= alpha
    heat += (1 - alpha) * rgb
    rgb *= DIMMED
    np.copyto(rgb, heat, where=seen[..., None])
    rgb += 0.5
    return np.concatenate([rgb.astype(np.uint8), colour_bar(height, low, high, threshold)], axis=1)
