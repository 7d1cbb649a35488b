"""Preprocessing: the one step that maps a photo to model inputs, and a model-resolution map back to the photo.

Chosen at training time and recorded in config.json (``preprocessing``); train.py, calibration, the Inspector and
evaluation all use the run's own, so an image is always prepared the way the model was trained.

* ``stretch`` (the original method): resize to ``size`` × ``size`` whatever the aspect ratio (INTER_AREA when
  shrinking, bilinear when enlarging); masks go through the same resize with nearest neighbour, so an image and
  its mask stay aligned pixel for pixel at model resolution. ``to_source`` resizes a map back (bilinear).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from utils.data import COLOR_MODES, to_color_mode

MODES = ("stretch",)
MIN_SIZE = 8  # px: below this no architecture has room for a single down-sampling level


@dataclass(frozen=True)
class Stretch:
    """Resize every photo to size × size (aspect ratio not kept) in the run's colour mode."""

    size: int
    color_mode: str
    mode: ClassVar[str] = "stretch"

    def __post_init__(self) -> None:
        if self.color_mode not in COLOR_MODES:
            raise ValueError(f"color_mode must be one of {COLOR_MODES}; got {self.color_mode!r}")
        if not isinstance(self.size, int) or self.size < MIN_SIZE:
            raise ValueError(f"size must be an integer of at least {MIN_SIZE} px; got {self.size!r}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 1 if self.color_mode == "grayscale" else 3)

    def record(self) -> dict:
        """What config.json stores to rebuild this step."""
        return {"mode": self.mode, "size": self.size, "color_mode": self.color_mode}

    def to_model_uint8(self, image: np.ndarray) -> np.ndarray:
        """Decoded image of any size → uint8 size×size×C (kept in uint8 for caching: a quarter of float32)."""
        image = to_color_mode(image, self.color_mode)
        shrinking = image.shape[0] > self.size or image.shape[1] > self.size
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        resized = cv2.resize(image, (self.size, self.size), interpolation=interpolation)
        return resized.reshape(self.input_shape)

    def to_model(self, image: np.ndarray) -> np.ndarray:
        """Decoded image of any size → float32 size×size×C in [0, 1]."""
        return self.to_model_uint8(image).astype(np.float32) / 255.0

    def mask_to_model(self, mask: np.ndarray | None) -> np.ndarray:
        """A ground-truth mask (H×W, non-zero = defective; None = all good) → bool size×size, nearest neighbour."""
        if mask is None:
            return np.zeros((self.size, self.size), dtype=bool)
        resized = cv2.resize(np.asarray(mask, dtype=np.uint8), (self.size, self.size), interpolation=cv2.INTER_NEAREST)
        return resized > 0

    def to_source(self, model_map: np.ndarray, source_shape: tuple[int, ...]) -> np.ndarray:
        """A size×size map → float32 at the photo's own H×W (bilinear)."""
        height, width = int(source_shape[0]), int(source_shape[1])
        return cv2.resize(np.asarray(model_map, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


Preprocessing = Stretch  # the type every consumer takes; the native-resolution steps join it here


def from_record(record: dict) -> Preprocessing:
    """Rebuild the step config.json recorded; ValueError naming the valid modes for an unknown one."""
    mode = record.get("mode")
    if mode != "stretch":
        raise ValueError(f"unknown preprocessing mode {mode!r}; valid: {', '.join(MODES)}")
    return Stretch(size=int(record["size"]), color_mode=record["color_mode"])
