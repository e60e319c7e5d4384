"""What the synthetic images show (the drawing half of :mod:`patchcore_lib.data.synthetic_images`): the normal
scenes of each kind (a texture, an object seen from above) and the defects drawn onto them. Every function draws
from the numpy ``Generator`` it is given, so the same seeds give the same pixels."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

#: seed material of each kind (part of every image's seed sequence)
_KIND_CODES = {"texture": 1, "object": 2}


# --------------------------------------------------------------------------------------------
# small drawing helpers (all float images in [0, 1], shape HxWx3)
# --------------------------------------------------------------------------------------------

def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each of shape (size, size)."""
    coords = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(coords, coords, indexing="ij")


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise normalised to unit standard deviation."""
    noise = rng.standard_normal((size, size))
    if sigma > 0:
        noise = ndimage.gaussian_filter(noise, sigma=sigma, mode="wrap")
    std = noise.std()
    return noise / std if std > 0 else noise


def _luminance(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114])


def _blob(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float,
          rng: np.random.Generator) -> np.ndarray:
    """Irregular elliptical blob: an ellipse whose radius is perturbed by low-order harmonics."""
    aspect = rng.uniform(0.65, 1.0)
    theta = rng.uniform(0.0, math.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = (-dx * math.sin(theta) + dy * math.cos(theta)) / aspect
    r = np.hypot(u, v)
    ang = np.arctan2(v, u)
    wobble = np.ones_like(r)
    for k in (2, 3, 5):
        wobble += rng.uniform(0.0, 0.12) * np.sin(k * ang + rng.uniform(0, 2 * math.pi))
    return r <= radius * wobble


def _capsule(yy: np.ndarray, xx: np.ndarray, p0: tuple[float, float], p1: tuple[float, float],
             width: float) -> np.ndarray:
    """Pixels within ``width / 2`` of the segment p0-p1 (points as (y, x))."""
    (y0, x0), (y1, x1) = p0, p1
    vy, vx = y1 - y0, x1 - x0
    length2 = vy * vy + vx * vx
    if length2 == 0:
        t = np.zeros_like(yy)
    else:
        t = np.clip(((yy - y0) * vy + (xx - x0) * vx) / length2, 0.0, 1.0)
    dist = np.hypot(yy - (y0 + t * vy), xx - (x0 + t * vx))
    return dist <= width / 2.0


# --------------------------------------------------------------------------------------------
# normal images
# --------------------------------------------------------------------------------------------

def _texture_style(seed: int) -> dict[str, Any]:
    """Category-wide texture parameters (shared by all images of one dataset)."""
    rng = np.random.default_rng([int(seed), _KIND_CODES["texture"], 0])
    base = np.array([0.58, 0.46, 0.34]) + rng.uniform(-0.06, 0.06, size=3)  # carpet-like brown
    return {
        "base": base,
        "angle": rng.uniform(0.0, math.pi / 2),
        "period": rng.uniform(0.055, 0.075),   # weave period, fraction of the image side
        "stripe": rng.uniform(2.5, 3.5),       # fine stripe frequency relative to the weave
    }


def _render_texture(size: int, seed: int, rng: np.random.Generator) -> dict[str, Any]:
    style = _texture_style(seed)
    yy, xx = _grid(size)
    # per-image jitter: translation, phases, brightness and fine noise
    yy = yy + rng.uniform(-0.05, 0.05) * size
    xx = xx + rng.uniform(-0.05, 0.05) * size
    angle = style["angle"] + rng.uniform(-0.03, 0.03)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    period = style["period"] * size
    phase = rng.uniform(0, 2 * math.pi, size=3)
    s1 = np.sin(2 * math.pi * u / period + phase[0])
    s2 = np.sin(2 * math.pi * v / period + phase[1])
    fine = np.sin(2 * math.pi * u * style["stripe"] / period + phase[2])
    inten = 0.62 + 0.20 * s1 * s2 + 0.06 * fine
    inten += 0.05 * _smooth_noise(rng, size, sigma=max(0.6, size / 256))
    inten += 0.04 * _smooth_noise(rng, size, sigma=size / 24)
    inten *= 1.0 + rng.uniform(-0.04, 0.04)
    tint = style["base"] * (1.0 + rng.uniform(-0.02, 0.02, size=3))
    img = np.clip(inten[..., None] * tint[None, None, :] * 1.25, 0.0, 1.0)
    return {"image": img, "footprint": None, "background": None}


def _object_style(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([int(seed), _KIND_CODES["object"], 0])
    return {
        "background": 0.80 + rng.uniform(-0.04, 0.04),
        "glass": np.array([0.22, 0.42, 0.26]) + rng.uniform(-0.05, 0.05, size=3),  # green glass
        "radius": rng.uniform(0.32, 0.36),     # fraction of the image side
        "light": rng.uniform(0.0, 2 * math.pi),
    }


def _render_object(size: int, seed: int, rng: np.random.Generator) -> dict[str, Any]:
    style = _object_style(seed)
    yy, xx = _grid(size)
    cy = size / 2 + rng.uniform(-0.02, 0.02) * size
    cx = size / 2 + rng.uniform(-0.02, 0.02) * size
    radius = style["radius"] * size * (1.0 + rng.uniform(-0.025, 0.025))
    light = style["light"] + rng.uniform(-0.15, 0.15)
    gain = 1.0 + rng.uniform(-0.05, 0.05)

    # plain background with a faint illumination gradient and sensor noise
    bg = style["background"] + 0.04 * ((yy / size) - 0.5) * math.cos(light) + 0.04 * ((xx / size) - 0.5) * math.sin(light)
    bg = bg + 0.008 * _smooth_noise(rng, size, sigma=0.7)
    background = np.repeat((bg * gain)[..., None], 3, axis=2)

    dy, dx = yy - cy, xx - cx
    r = np.hypot(dy, dx) / radius
    directional = np.cos(np.arctan2(dy, dx) - light)
    # each pixel is  a * glass_colour + b  (a, b scalar fields), chosen by zone:
    # body: radial shading, brighter towards the rim on the lit side, plus a specular highlight
    body_a = 1.6 * (0.75 + 0.35 * r ** 2 * (0.5 + 0.5 * directional))
    hy = cy - 0.45 * radius * math.sin(light)
    hx = cx - 0.45 * radius * math.cos(light)
    spec = 0.35 * np.exp(-(((yy - hy) ** 2 + (xx - hx) ** 2) / (2 * (0.12 * radius) ** 2)))
    # dark rim, lighter on the lit side
    rim_a = 0.45 + 0.35 * (0.5 + 0.5 * directional)
    opening_r = 0.28 + rng.uniform(-0.01, 0.01)
    zones = [r <= opening_r, r <= opening_r + 0.05, r <= 0.86, r <= 1.0]  # opening, its ring, body, rim
    a = np.select(zones, [0.0, 0.55 * body_a * gain, body_a * gain, rim_a * gain], default=0.0)
    b = np.select(zones, [0.06, 0.55 * spec * gain, spec * gain, 0.0], default=bg * gain)
    footprint = zones[3]
    img = a[..., None] * style["glass"][None, None, :] + b[..., None]
    grain = 0.008 * _smooth_noise(rng, size, sigma=0.7)[..., None]  # sensor noise, also on the background
    return {
        "image": np.clip(img + grain, 0.0, 1.0),
        "footprint": footprint,
        "background": np.clip(background + grain, 0.0, 1.0),
        "center": (cy, cx),
        "radius": radius,
    }


_RENDERERS = {"texture": _render_texture, "object": _render_object}


# --------------------------------------------------------------------------------------------
# defects: each returns (altered float image, boolean region); only region pixels are used
# --------------------------------------------------------------------------------------------

def _defect_centre(scene: dict[str, Any], size: int, rng: np.random.Generator, margin: float) -> tuple[float, float]:
    if scene.get("footprint") is not None:  # object: on the object, away from its border
        cy, cx = scene["center"]
        rr = scene["radius"] * 0.65 * math.sqrt(rng.uniform(0.05, 1.0))
        a = rng.uniform(0, 2 * math.pi)
        return cy + rr * math.sin(a), cx + rr * math.cos(a)
    lo, hi = margin * size, (1 - margin) * size
    return rng.uniform(lo, hi), rng.uniform(lo, hi)


def _contrast_value(img: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grey level clearly different from the region's mean luminance, as an RGB vector."""
    mean = float(_luminance(img)[region].mean()) if region.any() else 0.5
    level = rng.uniform(0.04, 0.14) if mean > 0.42 else rng.uniform(0.88, 0.97)
    return np.array([level, level, level])


def _defect_scratch(img, scene, size, rng, yy, xx):
    cy, cx = _defect_centre(scene, size, rng, margin=0.25)
    length = rng.uniform(0.28, 0.42) * size
    if scene.get("footprint") is not None:
        length *= 0.8
    a = rng.uniform(0, math.pi)
    p0 = (cy - 0.5 * length * math.sin(a), cx - 0.5 * length * math.cos(a))
    p1 = (cy + 0.5 * length * math.sin(a), cx + 0.5 * length * math.cos(a))
    width = max(2.5, 0.016 * size)
    region = _capsule(yy, xx, p0, p1, width)
    colour = _contrast_value(img, region, rng)
    altered = colour[None, None, :] + 0.03 * rng.standard_normal(img.shape)
    return altered, region


def _defect_hole(img, scene, size, rng, yy, xx):
    cy, cx = _defect_centre(scene, size, rng, margin=0.15)
    radius = max(2.0, rng.uniform(0.05, 0.075) * size)
    region = _blob(yy, xx, cy, cx, radius, rng)
    d = np.hypot(yy - cy, xx - cx) / radius
    depth = 0.03 + 0.10 * np.clip(d, 0, 1.3)  # darkest in the middle
    altered = depth[..., None] * np.array([1.0, 0.9, 0.8])[None, None, :]
    return altered, region


def _defect_spot(img, scene, size, rng, yy, xx):
    cy, cx = _defect_centre(scene, size, rng, margin=0.15)
    radius = max(2.0, rng.uniform(0.045, 0.07) * size)
    region = _blob(yy, xx, cy, cx, radius, rng)
    mean = float(_luminance(img)[region].mean()) if region.any() else 0.5
    stain = np.array([0.95, 0.93, 0.85]) if mean < 0.5 else np.array([0.20, 0.12, 0.05])
    alpha = rng.uniform(0.7, 0.85)
    altered = (1 - alpha) * img + alpha * stain[None, None, :]
    return altered, region


def _defect_color(img, scene, size, rng, yy, xx):
    cy, cx = _defect_centre(scene, size, rng, margin=0.15)
    radius = max(2.0, rng.uniform(0.06, 0.085) * size)
    region = _blob(yy, xx, cy, cx, radius, rng)
    # pick the saturated tint farthest in hue from the region's current colour
    mean_rgb = img[region].mean(axis=0) if region.any() else img.reshape(-1, 3).mean(axis=0)
    tints = np.array([[1.0, 0.15, 0.15], [0.15, 0.35, 1.0], [0.2, 1.0, 0.25], [1.0, 0.9, 0.1], [0.9, 0.2, 1.0]])
    chroma = mean_rgb - mean_rgb.mean()
    scores = (tints - tints.mean(axis=1, keepdims=True)) @ chroma
    order = np.argsort(scores)
    tint = tints[order[rng.integers(0, 2)]]
    lum = _luminance(img)
    lum = np.clip(lum, 0.25, 0.85)  # keep the new hue visible even on very dark/bright pixels
    altered = lum[..., None] * tint[None, None, :] / float(_luminance(tint[None, :])[0]) * 0.8
    return altered, region


def _defect_crack(img, scene, size, rng, yy, xx):
    cy, cx = _defect_centre(scene, size, rng, margin=0.25)
    width = max(2.5, 0.014 * size)
    steps = int(rng.integers(7, 11))
    a = rng.uniform(0, 2 * math.pi)
    region = np.zeros(img.shape[:2], dtype=bool)
    y, x = cy, cx
    lo, hi = 0.05 * size, 0.95 * size
    for _ in range(steps):
        seg = rng.uniform(0.04, 0.065) * size
        a += rng.uniform(-0.8, 0.8)
        ny = min(max(y + seg * math.sin(a), lo), hi)
        nx = min(max(x + seg * math.cos(a), lo), hi)
        region |= _capsule(yy, xx, (y, x), (ny, nx), width)
        # a short side branch now and then
        if rng.uniform() < 0.3:
            b = a + rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.2)
            bl = seg * rng.uniform(0.4, 0.8)
            region |= _capsule(yy, xx, (ny, nx), (ny + bl * math.sin(b), nx + bl * math.cos(b)), width * 0.8)
        y, x = ny, nx
    level = rng.uniform(0.03, 0.10)
    altered = np.full(img.shape, level) + 0.02 * rng.standard_normal(img.shape)
    return altered, region


def _defect_missing(img, scene, size, rng, yy, xx):
    if scene.get("footprint") is not None:
        # a bite out of the object's border: the background shows through
        cy, cx = scene["center"]
        a = rng.uniform(0, 2 * math.pi)
        radius = scene["radius"]
        by, bx = cy + radius * math.sin(a), cx + radius * math.cos(a)
        bite = _blob(yy, xx, by, bx, rng.uniform(0.28, 0.38) * radius, rng)
        return scene["background"], bite & scene["footprint"]
    # texture: a bald patch where the weave is missing (local mean colour, darker)
    cy, cx = _defect_centre(scene, size, rng, margin=0.15)
    radius = max(2.0, rng.uniform(0.06, 0.085) * size)
    region = _blob(yy, xx, cy, cx, radius, rng)
    local = ndimage.uniform_filter(img, size=(int(0.15 * size) | 1, int(0.15 * size) | 1, 1), mode="reflect")
    altered = local * rng.uniform(0.45, 0.55) + 0.01 * _smooth_noise(rng, size, sigma=1.0)[..., None]
    return altered, region


_DEFECTS = {
    "scratch": _defect_scratch,
    "hole": _defect_hole,
    "spot": _defect_spot,
    "color": _defect_color,
    "crack": _defect_crack,
    "missing": _defect_missing,
}
