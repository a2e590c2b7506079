"""Training augmentation on uint8 HxWx3 RGB crops, driven by a numpy Generator.

The defaults are the paper's recipe: a horizontal flip and nothing else. Colour jitter,
cross-quality down-and-up scaling, blur and synthetic masks are there for ablations; each
fires with its own probability. The caller passes the generator, so that the training loop
can seed it per (seed, epoch, sample) and get the same augmentation whatever its workers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

from embedder.masks import STYLES, apply_mask


@dataclass(frozen=True)
class AugmentConfig:
    p_flip: float = 0.5
    p_color_jitter: float = 0.0
    brightness: float = 0.2  # factors drawn from [1 - x, 1 + x]
    contrast: float = 0.2
    saturation: float = 0.2
    p_low_resolution: float = 0.0
    min_scale: float = 0.3  # shrink to [min_scale, 1] of the size, then back
    p_blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    p_mask: float = 0.0  # synthetic masks: off, the paper trains without them
    mask_styles: tuple[str, ...] = STYLES

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.startswith("p_") and not 0 <= getattr(self, f.name) <= 1:
                raise ValueError(f"{f.name} must be a probability, got {getattr(self, f.name)}")
        if not 0 < self.min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {self.min_scale}")
        unknown = set(self.mask_styles) - set(STYLES)
        if unknown or not self.mask_styles:
            raise ValueError(f"mask_styles must be among {STYLES}, got {self.mask_styles}")


class Augment:
    """`augment(crop, rng) -> crop`: mask, flip, colour jitter, low resolution, blur, in that
    order, each with its probability. Never modifies `crop`; returns it as is when nothing
    fires."""

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    def __call__(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        fire = rng.random(5) < (c.p_mask, c.p_flip, c.p_color_jitter, c.p_low_resolution, c.p_blur)
        if fire[0]:
            style = c.mask_styles[int(rng.integers(len(c.mask_styles)))]
            crop = apply_mask(crop, rng=rng, style=style).image
        if fire[1]:
            crop = np.ascontiguousarray(crop[:, ::-1])
        if fire[2]:
            crop = self._jitter_colour(crop, rng)
        if fire[3]:
            crop = self._low_resolution(crop, rng)
        if fire[4]:
            crop = cv2.GaussianBlur(crop, (0, 0), rng.uniform(*c.blur_sigma))
        return crop

    def _jitter_colour(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast and saturation factors around 1, applied in one pass."""
        c = self.config
        spread = np.array([c.brightness, c.contrast, c.saturation])
        brightness, contrast, saturation = 1 + spread * rng.uniform(-1, 1, 3)
        image = crop.astype(np.float32) * brightness
        grey = image @ np.array([0.299, 0.587, 0.114], np.float32)
        image = grey[..., None] + saturation * (image - grey[..., None])
        image = grey.mean() + contrast * (image - grey.mean())
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)

    def _low_resolution(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Shrink and enlarge back: the detail of a face seen small (cross-quality training)."""
        height, width = crop.shape[:2]
        scale = rng.uniform(self.config.min_scale, 1.0)
        small = (max(2, round(width * scale)), max(2, round(height * scale)))
        shrunk = cv2.resize(crop, small, interpolation=cv2.INTER_AREA)
        return cv2.resize(shrunk, (width, height), interpolation=cv2.INTER_LINEAR)
