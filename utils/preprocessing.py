"""Preprocessing: the one step that maps a photo to model inputs, and the model's maps back to the photo.

Chosen at training time and recorded in config.json (``preprocessing``); train.py, calibration, the Inspector and
evaluation all use the run's own, so an image is always prepared the way the model was trained. Three modes:

* ``stretch`` (the original method): resize to ``size`` × ``size`` whatever the aspect ratio (INTER_AREA when
  shrinking, bilinear when enlarging). Decisions are taken at model resolution, as they always were; what the
  Inspector reports (maps, masks, boxes) is then stretched back to the photo's own pixels (``on_photo``).
* ``keep-aspect``: scale so the longer side is ``size``, pad (reflect) the shorter side up to ``size``; the map is
  cropped back to the photo (nothing of the padding) and resized to the photo's own pixels.
* ``tiles``: optionally rescale the photo by ``scale`` (1: native pixels), cover it with ``tile`` × ``tile`` tiles
  every ``stride`` px, the last row and column shifted to end at the border (a photo smaller than a tile is
  padded by reflection), and blend the tile maps with smooth weights (a raised cosine that never reaches 0) so no
  seams show. Training sees random tile crops of the good photos.

Every step gives ``plan(image)``: the photo's ``count`` model inputs, cut on demand (``inputs(start, stop)``,
N×h×w×C float32 in [0, 1]), and ``add(start, *outputs)`` / ``result()``, which turn the model-resolution maps
(and reconstructions) of those inputs into one array each at the decision resolution: model pixels for
``stretch``, the photo's own pixels for the other two. ``split`` / ``merge`` do the same in one go.
``photo(image)`` is the photo in the run's colour mode at its own pixels, where every step's reported outputs
are. Ground-truth masks must have their image's size (``mask_for``: bool, the photo's own pixels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np

from utils.data import COLOR_MODES, to_color_mode

MODES = ("stretch", "keep-aspect", "tiles")
MIN_SIZE = 8  # px: below this no architecture has room for a single down-sampling level


def _check_common(size: int, color_mode: str, name: str = "size") -> None:
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {COLOR_MODES}; got {color_mode!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < MIN_SIZE:
        raise ValueError(f"{name} must be an integer of at least {MIN_SIZE} px; got {size!r}")


def resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.resize to width × height that keeps a trailing channel axis and picks INTER_AREA when shrinking,
    bilinear otherwise (every resize of photos and maps goes through it)."""
    shrinking = image.shape[0] > height or image.shape[1] > width
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return resized.reshape(height, width, *image.shape[2:])


def _check_mask(mask: np.ndarray, image_shape: tuple) -> np.ndarray:
    mask = np.asarray(mask) != 0
    if mask.shape[:2] != tuple(image_shape[:2]):
        raise ValueError(f"mask of {mask.shape[1]}×{mask.shape[0]} px does not match its image of "
                         f"{image_shape[1]}×{image_shape[0]} px (width × height); a mask must have its image's size")
    return mask


def _unit(image_uint8: np.ndarray) -> np.ndarray:
    return image_uint8.astype(np.float32) / 255.0


@dataclass(frozen=True)
class Stretch:
    """Resize every photo to size × size (aspect ratio not kept) in the run's colour mode."""

    size: int
    color_mode: str
    mode: ClassVar[str] = "stretch"
    decision_resolution: ClassVar[str] = "model"  # verdicts and areas in model pixels, as always (on_photo: outputs)

    def __post_init__(self) -> None:
        _check_common(self.size, self.color_mode)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 1 if self.color_mode == "grayscale" else 3)

    def record(self) -> dict:
        """What config.json stores to rebuild this step."""
        return {"mode": self.mode, "size": self.size, "color_mode": self.color_mode}

    def to_model_uint8(self, image: np.ndarray) -> np.ndarray:
        """Decoded image of any size → uint8 training input (kept in uint8 for caching: a quarter of float32)."""
        return resize_to(to_color_mode(image, self.color_mode), self.size, self.size)

    def to_model(self, image: np.ndarray) -> np.ndarray:
        """Decoded image of any size → float32 size×size×C in [0, 1]."""
        return _unit(self.to_model_uint8(image))

    def split(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        return self.to_model(image)[None], None

    def plan(self, image: np.ndarray) -> "SinglePlan":
        return SinglePlan(self, image)

    def merge(self, values: np.ndarray, placement: Any) -> np.ndarray:
        return values[0]

    def view(self, image: np.ndarray) -> np.ndarray:
        """The photo as decisions see it (float32 in [0, 1]): here the model input."""
        return self.to_model(image)

    def model_scale(self, view_shape: tuple[int, ...]) -> float:
        """How much a view of this shape (`view`'s) is scaled on its way into the model: 1, it is the input."""
        return 1.0

    def photo(self, image: np.ndarray) -> np.ndarray:
        """The photo in the run's colour mode at its own pixels (float32 in [0, 1]), where outputs are reported."""
        return _unit(to_color_mode(image, self.color_mode))

    def mask_for(self, mask: np.ndarray | None, image_shape: tuple) -> np.ndarray:
        """A ground-truth mask of the image's size (None: all good) → bool at the photo's own pixels."""
        if mask is None:
            return np.zeros(tuple(image_shape[:2]), dtype=bool)
        return _check_mask(mask, image_shape)

    def to_source(self, model_map: np.ndarray, source_shape: tuple[int, ...]) -> np.ndarray:
        """A size×size map → float32 at the photo's own H×W (bilinear)."""
        return cv2.resize(np.asarray(model_map, np.float32), (int(source_shape[1]), int(source_shape[0])),
                          interpolation=cv2.INTER_LINEAR)

    def on_photo(self, reconstruction: np.ndarray, anomaly_map: np.ndarray, defect_mask: np.ndarray,
                 photo_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model-resolution outputs → the photo's own H×W: reconstruction and map bilinear (INTER_AREA when
        shrinking), the defect mask nearest neighbour, so every map pixel keeps its verdict."""
        height, width = int(photo_shape[0]), int(photo_shape[1])
        if (height, width) == (self.size, self.size):
            return reconstruction, anomaly_map, defect_mask
        mask = cv2.resize(np.asarray(defect_mask, np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        return (resize_to(np.asarray(reconstruction, np.float32), width, height),
                resize_to(np.asarray(anomaly_map, np.float32), width, height), mask)


@dataclass(frozen=True)
class KeepAspect:
    """Longer side scaled to `size`, the other padded by reflection to `size`; maps go back to the photo's pixels."""

    size: int
    color_mode: str
    mode: ClassVar[str] = "keep-aspect"
    decision_resolution: ClassVar[str] = "source"

    def __post_init__(self) -> None:
        _check_common(self.size, self.color_mode)

    input_shape = Stretch.input_shape
    record = Stretch.record

    def content_shape(self, height: int, width: int) -> tuple[int, int]:
        """(rows, columns) the photo occupies inside the size × size input."""
        factor = self.size / max(height, width)
        return max(1, round(height * factor)), max(1, round(width * factor))

    def to_model_uint8(self, image: np.ndarray) -> np.ndarray:
        image = to_color_mode(image, self.color_mode)
        rows, columns = self.content_shape(*image.shape[:2])
        scaled = resize_to(image, columns, rows)
        padded = cv2.copyMakeBorder(scaled, 0, self.size - rows, 0, self.size - columns, cv2.BORDER_REFLECT_101
                                    if min(rows, columns) > 1 else cv2.BORDER_REPLICATE)
        return padded.reshape(self.input_shape)

    def to_model(self, image: np.ndarray) -> np.ndarray:
        return _unit(self.to_model_uint8(image))

    def split(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        return self.to_model(image)[None], image.shape[:2]

    plan = Stretch.plan

    def merge(self, values: np.ndarray, placement: Any) -> np.ndarray:
        height, width = placement
        rows, columns = self.content_shape(height, width)
        return resize_to(np.ascontiguousarray(values[0][:rows, :columns]), width, height)

    def view(self, image: np.ndarray) -> np.ndarray:
        return _unit(to_color_mode(image, self.color_mode))

    def model_scale(self, view_shape: tuple[int, ...]) -> float:
        """The factor that brings the photo's longer side to `size`."""
        return self.size / max(int(view_shape[0]), int(view_shape[1]))

    photo = view
    mask_for = Stretch.mask_for


@dataclass(frozen=True)
class Tiles:
    """Tiles of `tile` px every `stride` px over the photo rescaled by `scale`, blended back seamlessly."""

    tile: int
    color_mode: str
    stride: int | None = None  # None: tile // 2
    scale: float = 1.0
    mode: ClassVar[str] = "tiles"
    decision_resolution: ClassVar[str] = "source"
    _weights: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_common(self.tile, self.color_mode, "tile")
        if self.stride is None:
            object.__setattr__(self, "stride", self.tile // 2)
        if not isinstance(self.stride, int) or not 1 <= self.stride <= self.tile:
            raise ValueError(f"tile stride must be an integer in [1, {self.tile}] px; got {self.stride!r}")
        if not isinstance(self.scale, (int, float)) or not 0.0 < self.scale <= 4.0:
            raise ValueError(f"scale must be a number in (0, 4]; got {self.scale!r}")
        object.__setattr__(self, "_weights", blend_weights(self.tile))

    @property
    def size(self) -> int:
        return self.tile

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.tile, self.tile, 1 if self.color_mode == "grayscale" else 3)

    def record(self) -> dict:
        return {"mode": self.mode, "tile": self.tile, "stride": self.stride, "scale": self.scale,
                "color_mode": self.color_mode}

    def scaled(self, image: np.ndarray) -> np.ndarray:
        """The photo in the colour mode, rescaled by `scale`, padded (reflect) to at least one tile: uint8."""
        image = to_color_mode(image, self.color_mode)
        if self.scale != 1.0:
            height, width = image.shape[:2]
            image = resize_to(image, max(1, round(width * self.scale)), max(1, round(height * self.scale)))
        rows, columns = max(0, self.tile - image.shape[0]), max(0, self.tile - image.shape[1])
        if rows or columns:
            border = cv2.BORDER_REFLECT_101 if min(image.shape[:2]) > 1 else cv2.BORDER_REPLICATE
            image = cv2.copyMakeBorder(image, 0, rows, 0, columns, border).reshape(
                image.shape[0] + rows, image.shape[1] + columns, image.shape[2])
        return image

    def to_model_uint8(self, image: np.ndarray) -> np.ndarray:
        """Training input: the whole scaled photo (random tile crops are cut from it in the tf.data pipeline)."""
        return self.scaled(image)

    def starts(self, length: int) -> list[int]:
        """Tile origins along one axis: every `stride` px, the last one moved to end at the border."""
        last = max(0, length - self.tile)
        origins = list(range(0, last + 1, self.stride))
        return origins if origins[-1] == last else [*origins, last]

    def plan(self, image: np.ndarray) -> "TilePlan":
        """The photo's tiles, cut batch by batch, and the running blend of their outputs (bounded memory)."""
        return TilePlan(self, image)

    def split(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        plan = self.plan(image)
        return plan.inputs(0, plan.count), plan

    def merge(self, values: np.ndarray, placement: "TilePlan") -> np.ndarray:
        """Weighted average of all the tiles' values, at the photo's own pixels (`placement`: a fresh plan)."""
        placement.add(0, values)
        return placement.result()[0]

    def view(self, image: np.ndarray) -> np.ndarray:
        return _unit(to_color_mode(image, self.color_mode))

    def model_scale(self, view_shape: tuple[int, ...]) -> float:
        """`scale`, whatever the photo's size."""
        return float(self.scale)

    photo = view
    mask_for = Stretch.mask_for


class TilePlan:
    """One photo under `Tiles`: `inputs(start, stop)` cuts tiles on demand, `add(start, *outputs)` blends each
    output's tiles into a running weighted sum, `result()` gives each output at the photo's own pixels. Only the
    scaled photo and one sum per output are kept, so a 6000 × 2000 photo never becomes one tile tensor."""

    def __init__(self, step: Tiles, image: np.ndarray):
        self.step, self.source_shape = step, image.shape[:2]
        self.photo = self.step.scaled(image)
        self.corners = [(top, left) for top in step.starts(self.photo.shape[0])
                        for left in step.starts(self.photo.shape[1])]
        self.count = len(self.corners)
        self.sums: list[np.ndarray] | None = None
        self.weight = np.zeros(self.photo.shape[:2], np.float32)

    def inputs(self, start: int, stop: int) -> np.ndarray:
        tile = self.step.tile
        return np.stack([_unit(self.photo[top:top + tile, left:left + tile])
                         for top, left in self.corners[start:stop]])

    def add(self, start: int, *outputs: np.ndarray) -> None:
        """Blend tiles start, start + 1, … of every output (N×t×t or N×t×t×C) into its sum."""
        tile, weights = self.step.tile, self.step._weights
        if self.sums is None:
            self.sums = [np.zeros((*self.photo.shape[:2], *output.shape[3:]), np.float32) for output in outputs]
        for offset in range(len(outputs[0])):
            top, left = self.corners[start + offset]
            window = (slice(top, top + tile), slice(left, left + tile))
            for total, output in zip(self.sums, outputs):
                value = output[offset]
                total[window] += value * (weights if value.ndim == 2 else weights[:, :, None])
            self.weight[window] += weights

    def result(self) -> list[np.ndarray]:
        height, width = self.source_shape
        rows, columns = max(1, round(height * self.step.scale)), max(1, round(width * self.step.scale))
        merged = []
        for total in self.sums or []:
            weight = self.weight if total.ndim == 2 else self.weight[:, :, None]
            blended = np.ascontiguousarray((total / weight)[:rows, :columns])
            merged.append(blended if (rows, columns) == (height, width) else resize_to(blended, width, height))
        return merged


class SinglePlan:
    """One photo under a step with one model input per photo (stretch, keep-aspect), behind TilePlan's interface."""

    def __init__(self, step, image: np.ndarray):
        self.step, self.count = step, 1
        self.input, self.placement = step.split(image)
        self.outputs: list[np.ndarray] = []

    def inputs(self, start: int, stop: int) -> np.ndarray:
        return self.input[start:stop]

    def add(self, start: int, *outputs: np.ndarray) -> None:
        self.outputs = list(outputs)

    def result(self) -> list[np.ndarray]:
        return [self.step.merge(output, self.placement) for output in self.outputs]


def blend_weights(tile: int) -> np.ndarray:
    """tile × tile weights: a raised cosine, highest in the middle and small but never 0 at the edges, so an
    overlapped pixel leans on the tile that sees it best and no seam shows where tiles meet."""
    ramp = np.sin(np.pi * (np.arange(tile) + 0.5) / tile) ** 2 + 1e-3
    return np.outer(ramp, ramp)


Preprocessing = Stretch | KeepAspect | Tiles


def from_record(record: dict) -> Preprocessing:
    """Rebuild the step config.json recorded; ValueError naming the valid modes for an unknown one."""
    mode = record.get("mode")
    if mode == "stretch":
        return Stretch(size=int(record["size"]), color_mode=record["color_mode"])
    if mode == "keep-aspect":
        return KeepAspect(size=int(record["size"]), color_mode=record["color_mode"])
    if mode == "tiles":
        return Tiles(tile=int(record["tile"]), color_mode=record["color_mode"], stride=record.get("stride"),
                     scale=float(record.get("scale", 1.0)))
    raise ValueError(f"unknown preprocessing mode {mode!r}; valid: {', '.join(MODES)}")


def tiles_per_photo(height: int, width: int, tile: int) -> int:
    """How many tile-sized crops cover a photo once: an epoch of random crops draws this many per photo."""
    return max(1, math.ceil(height / tile) * math.ceil(width / tile))
