"""Every defect painter of the project. Each one returns (image, mask), the mask saying where the image changed.

Two families, for two uses:

* **Demo-set painters** (numpy + OpenCV), used by utils/synthetic.py for the test photos of the demo set:
  ``paint_defect(part, kind, rng) -> (image H×W×3 uint8 RGB, mask H×W bool)`` paints one of DEFECT_TYPES
  (scratch, dent, rust, crack, missing material) on a rendered part (a `PartRender`), shaded by the part's
  light. Every pixel outside the mask is identical to ``part.image``; the mask is the defect's area (coverage
  ≥ 0.12), so a few pixels inside it can round back to their old uint8 value, as ground truth is a region.
  Deterministic: the result depends on `part` and the generator's state alone.
* **Training-time painters** (TensorFlow, in-graph, stateless-seeded), used by the training pipeline
  (``utils.data.training_triple``): ``add_synthetic_defects(image, seed=...) -> (image, mask H×W×1)`` paints
  a random blob or stroke on any image, the mask being its soft coverage in [0, 1], > 0 exactly where a
  channel of the image changed (pixels outside are bit-identical to the input). ``add_denoising_noise`` gives
  the denoising input: it touches every pixel, so it returns the noisy image alone. ``random_seeds`` splits one
  seed into independent ones, so that every draw depends on its seed alone however tf.data runs its map.

``python -m utils.defects [--out defects_preview.png]`` paints each kind once and saves a preview sheet: the
painted images on top, their masks below.
"""
from __future__ import annotations

import os
import sys

if not __package__:  # run as a file (python utils/defects.py): put the project root on sys.path, not utils/
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]
    sys.path.insert(0, os.path.dirname(_HERE))

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

DEFECT_TYPES = ("scratch", "dent", "rust", "crack", "missing_material")
_MASK_CUTOFF = 0.12  # defect coverage below which a pixel is left untouched (and outside the mask)


@dataclass(frozen=True)
class PartRender:
    """One defect-free photo and what a defect painter needs to know about it.

    image: H×W×3 uint8 RGB, the photo. background: H×W×3 uint8 RGB, the same photo with the part taken away
    (same light, shadow and sensor noise), shown where material goes missing. part_alpha: H×W float32 in
    [0, 1], how much of each pixel the part covers. light_direction: unit (x, y) vector in image
    coordinates (y down) pointing towards the light. kind: which part it is (utils.synthetic.PART_KINDS).
    """

    image: np.ndarray
    background: np.ndarray
    part_alpha: np.ndarray
    light_direction: tuple[float, float]
    kind: str


# ----------------------------------------------------------------------------------------------------------
# Demo-set painters (numpy): each returns (image after painting, float H×W×3; coverage H×W in [0, 1])
# ----------------------------------------------------------------------------------------------------------


def paint_defect(part: PartRender, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of `kind` (one of DEFECT_TYPES) on the part of `part`.

    Returns (image H×W×3 uint8 RGB, mask H×W bool). Pixels outside the mask are identical to part.image;
    the mask covers roughly 0.2–3 % of the image. A draw that lands mostly off the part is redrawn (from
    the same generator, so the result stays deterministic).
    """
    if kind not in DEFECT_TYPES:
        raise ValueError(f"kind must be one of {DEFECT_TYPES}, got {kind!r}")
    before = part.image.astype(np.float32) / 255
    minimum_area = 0.0018 * part.image.shape[0] * part.image.shape[1]
    for _attempt in range(8):
        after, coverage = _DEFECT_PAINTERS[kind](part, before, rng)
        mask = coverage >= _MASK_CUTOFF
        if mask.sum() >= minimum_area:
            break
    image = np.where(mask[..., None], float_to_uint8(after), part.image)
    return image, mask


def smooth_random_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in about [0, 1], size×size float32, with roughly `cells` bumps across the image."""
    coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def float_to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (clipped) → uint8, rounded to the nearest level."""
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _point_on_part(part: PartRender, rng: np.random.Generator, margin: float, *, edge: bool = False):
    """A random pixel (x, y) of the part at least `margin` pixels inside, or on its outline when `edge`."""
    solid = (part.part_alpha > 0.5).astype(np.uint8)
    width = 2 * max(1, int(round(margin))) + 1
    inner = cv2.erode(solid, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width)))
    candidates = np.argwhere(solid - inner if edge else inner)
    if len(candidates) == 0:
        candidates = np.argwhere(solid)
    row, column = candidates[rng.integers(len(candidates))]
    return float(column), float(row)


def _heading_along_part(part: PartRender, rng: np.random.Generator, start: np.ndarray, length: float) -> float:
    """The best of a few random directions: the one along which a line from `start` stays on the part
    longest, so that thin defects on narrow parts (washers) do not mostly run off into the background."""
    headings = rng.uniform(0, 2 * np.pi, 8)
    steps = np.linspace(0, length, 16)
    size = part.part_alpha.shape[0]

    def on_part(heading: float) -> float:
        x = np.clip(np.round(start[0] + steps * np.cos(heading)).astype(int), 0, size - 1)
        y = np.clip(np.round(start[1] + steps * np.sin(heading)).astype(int), 0, size - 1)
        return float((part.part_alpha[y, x] > 0.5).mean())

    return float(headings[int(np.argmax([on_part(heading) for heading in headings]))])


def _polyline_coverage(size: int, polylines: list[np.ndarray], thickness: int, blur: float) -> np.ndarray:
    """Anti-aliased polylines (lists of (x, y) float points) as an H×W float coverage in [0, 1]."""
    canvas = np.zeros((size, size), np.uint8)
    fixed_point = [np.round(points * 16).astype(np.int32) for points in polylines]  # 4 fractional bits
    cv2.polylines(canvas, fixed_point, False, 255, thickness, cv2.LINE_AA, shift=4)
    coverage = canvas.astype(np.float32) / 255
    return np.clip(cv2.GaussianBlur(coverage, (0, 0), blur) * 1.3, 0, 1)


def _scratch(part: PartRender, before: np.ndarray, rng: np.random.Generator):
    size = before.shape[0]
    scale = size / 256
    start = np.array(_point_on_part(part, rng, 0.06 * size))
    length = rng.uniform(0.16, 0.32) * size
    heading = _heading_along_part(part, rng, start, length)
    direction = np.array([np.cos(heading), np.sin(heading)])
    bend = np.array([-direction[1], direction[0]]) * rng.uniform(-0.15, 0.15) * length
    t = np.linspace(0, 1, 24)[:, None]
    end, middle = start + direction * length, start + direction * length / 2 + bend
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * middle + t**2 * end  # quadratic Bézier
    thickness = max(1, int(round(rng.uniform(1.0, 2.0) * scale)))
    coverage = _polyline_coverage(size, [points], thickness, 0.5 * max(scale, 0.8)) * part.part_alpha
    strength = rng.uniform(0.12, 0.25) * (0.6 + 0.4 * smooth_random_field(rng, size, 4))
    sign = 1.0 if rng.random() < 0.6 else -1.0  # most scratches catch the light, some look dark
    return before + (sign * strength * coverage)[..., None], coverage


def _dent(part: PartRender, before: np.ndarray, rng: np.random.Generator):
    size = before.shape[0]
    radius = max(2.5, rng.uniform(0.03, 0.06) * size)
    center_x, center_y = _point_on_part(part, rng, radius * 1.2)
    squash, tilt = rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    along = (x - center_x) * np.cos(tilt) + (y - center_y) * np.sin(tilt)
    across = (-(x - center_x) * np.sin(tilt) + (y - center_y) * np.cos(tilt)) / squash
    distance = np.hypot(along, across) / radius  # 1 on the dent's rim
    coverage = np.clip((1 - distance) * radius + 0.5, 0, 1) * part.part_alpha
    toward_light = ((x - center_x) * part.light_direction[0] + (y - center_y) * part.light_direction[1]) / radius
    bowl = np.clip(1 - distance**2, 0, 1)
    # The pit wall on the light's side faces away from it (dark); the far wall faces it (bright).
    shading = 1 - rng.uniform(0.2, 0.4) * bowl - rng.uniform(0.2, 0.35) * np.clip(toward_light, -1, 1)
    return before * (1 + (shading - 1) * coverage)[..., None], coverage


def _rust(part: PartRender, before: np.ndarray, rng: np.random.Generator):
    size = before.shape[0]
    radius = rng.uniform(0.04, 0.075) * size
    center_x, center_y = _point_on_part(part, rng, radius * 0.8)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    distance = np.hypot(x - center_x, y - center_y) / radius
    irregular = (1 - distance) + (smooth_random_field(rng, size, max(4, size // 12)) - 0.5)
    coverage = np.clip(irregular * 4, 0, 1) * part.part_alpha
    mottle = 0.55 + 0.45 * smooth_random_field(rng, size, max(8, size // 6))  # patchy corrosion
    tint = np.float32([0.95, 0.6, 0.36]) * rng.uniform(0.85, 1.0)
    opacity = rng.uniform(0.55, 0.85) * mottle * coverage
    return before * (1 - opacity[..., None] * (1 - tint)), coverage


def _crack(part: PartRender, before: np.ndarray, rng: np.random.Generator):
    size = before.shape[0]
    scale = size / 256
    step = max(1.5, rng.uniform(0.02, 0.032) * size)
    start, count = np.array(_point_on_part(part, rng, 0.05 * size)), rng.integers(9, 15)
    heading = _heading_along_part(part, rng, start, step * count)
    main = _jagged_path(rng, start, heading, step, count)
    fork_at = main[rng.integers(2, len(main) - 2)]
    branch = _jagged_path(rng, fork_at, heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.0), step * 0.7, 4)
    thickness = max(1, int(round(1.4 * scale)))
    coverage = _polyline_coverage(size, [main, branch], thickness, 0.4 * max(scale, 0.8)) * part.part_alpha
    depth = rng.uniform(0.3, 0.5)
    return before * (1 - depth * coverage)[..., None], coverage


def _jagged_path(rng: np.random.Generator, start: np.ndarray, heading: float, step: float, count: int):
    """A polyline that wanders about ±0.45 rad around `heading`, like a fracture line."""
    angles = heading + rng.normal(0, 0.45, count)
    steps = step * rng.uniform(0.6, 1.4, count)[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.vstack([start, start + np.cumsum(steps, axis=0)])


def _missing_material(part: PartRender, before: np.ndarray, rng: np.random.Generator):
    size = before.shape[0]
    radius = rng.uniform(0.045, 0.075) * size
    center = np.array(_point_on_part(part, rng, 0.02 * size, edge=True))
    corners = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(7, 11)))
    outline = center + (radius * rng.uniform(0.55, 1.0, len(corners)))[:, None] * np.stack(
        [np.cos(corners), np.sin(corners)], axis=1)
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [np.round(outline * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    chunk = canvas.astype(np.float32) / 255 * part.part_alpha
    # The fresh fracture face along the new edge reads as a thin rough dark band on the remaining part.
    rim_width = max(1.0, 1.2 * size / 256)
    rim = np.clip(cv2.GaussianBlur(chunk, (0, 0), rim_width) * 2.5 - chunk * 2.5, 0, 1) * part.part_alpha
    background = part.background.astype(np.float32) / 255
    after = before * (1 - chunk[..., None]) + background * chunk[..., None]
    after *= (1 - rng.uniform(0.2, 0.35) * rim)[..., None]
    return after, np.maximum(chunk, rim)


_DEFECT_PAINTERS: dict[str, Callable] = {
    "scratch": _scratch,
    "dent": _dent,
    "rust": _rust,
    "crack": _crack,
    "missing_material": _missing_material,
}


# ----------------------------------------------------------------------------------------------------------
# Training-time painters (TensorFlow, in-graph; TensorFlow is imported only when one is called)
# ----------------------------------------------------------------------------------------------------------


def random_seeds(seed, count: int):
    """`count` independent stateless-RNG seeds (count × 2 int64) from one: `seed` is a shape-[2] integer tensor,
    or None for a fresh random one. Stateless ops make a draw depend on its seed alone, so a training pipeline that
    hands every element its own seed is repeatable however its map runs in parallel."""
    import tensorflow as tf

    if seed is None:
        seed = tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int64)
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=count)


def add_denoising_noise(image, *, max_lines: int = 3, sigma: float = 0.1, seed=None):
    """The denoising input: 1–`max_lines` random bright line segments plus gaussian noise σ = `sigma`.

    `image` is an H×W×C float tensor in [0, 1]; the result is clipped to [0, 1]. The target stays the clean image,
    so the autoencoder learns to remove thin bright artefacts (as scratches look) rather than copy them. `seed`: a
    shape-[2] integer tensor for a repeatable draw (see `random_seeds`), or None. The only painter without a mask:
    the noise changes every pixel, so a mask would be all ones and say nothing.
    """
    import tensorflow as tf

    seeds = random_seeds(seed, 6)
    height, width = image.shape[0], image.shape[1]
    rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    per_line = [max_lines, 1, 1]  # broadcast one value per line over the pixel grid
    start_x = tf.random.stateless_uniform(per_line, seeds[0], 0.0, float(width))
    start_y = tf.random.stateless_uniform(per_line, seeds[1], 0.0, float(height))
    angle = tf.random.stateless_uniform(per_line, seeds[2], 0.0, np.pi)
    length = tf.random.stateless_uniform(per_line, seeds[3], 0.2, 0.6) * float(max(height, width))
    offset_x, offset_y = cols[None] - start_x, rows[None] - start_y
    along = tf.clip_by_value(offset_x * tf.cos(angle) + offset_y * tf.sin(angle), 0.0, length)
    distance = tf.sqrt((offset_x - along * tf.cos(angle)) ** 2 + (offset_y - along * tf.sin(angle)) ** 2)
    line_count = tf.random.stateless_uniform([], seeds[4], 1, max_lines + 1, dtype=tf.int32)
    active = tf.range(max_lines) < line_count
    on_line = tf.reduce_any((distance < 1.0) & tf.reshape(active, per_line), axis=0)[:, :, None]
    noisy = tf.where(on_line, tf.ones_like(image), image)
    noisy = noisy + tf.random.stateless_normal(tf.shape(image), seeds[5], stddev=sigma)
    return tf.clip_by_value(noisy, 0.0, 1.0)


def add_synthetic_defects(image, *, probability: float = 0.5, max_coverage: float = 0.04, seed=None):
    """The defect-removal input and where it was damaged: (image, mask H×W×1 float in [0, 1]).

    `image` is an H×W×C float tensor in [0, 1]. With `probability`, a random blob or stroke is painted over it. Half
    the defects are blobs: the top 0.3 %–`max_coverage` of a bicubically upsampled coarse random field (3–8 cells a
    side). The other half are strokes: a random quadratic curve 1–3 px wide and 10–50 % of the image long (as
    scratches and cracks look). Both have soft edges and are filled, at 50–100 % opacity, either with the image
    itself turned and shifted (foreign structure) or with a flat random tone plus a little noise (a stain, rust, a
    dark crack, missing material). The mask is the soft coverage, > 0 exactly where a channel changed: pixels
    outside it are bit-identical to `image`, and an untouched image has an all-zero mask. The target stays the
    clean image, so the autoencoder learns to paint defects out instead of copying them, and the residual map
    lights up where they are (after DRAEM's reconstructive training, Zavrtanik et al., ICCV 2021, without its
    texture set). `seed`: a shape-[2] integer tensor for a repeatable draw (see `random_seeds`), or None.
    """
    import tensorflow as tf

    seeds = random_seeds(seed, 10)
    damage = tf.random.stateless_uniform([], seeds[9]) < probability
    return tf.cond(damage, lambda: _paint_blob_or_stroke(image, seeds, max_coverage=max_coverage),
                   lambda: (image, tf.zeros_like(image[:, :, :1])))


def _paint_blob_or_stroke(image, seeds, *, max_coverage: float):
    """(`image` with one blob or stroke painted on, its H×W×1 mask), every random choice drawn from `seeds`."""
    import tensorflow as tf

    height, width, channels = image.shape
    is_blob = tf.random.stateless_uniform([], seeds[0]) < 0.5
    coverage = tf.cond(is_blob, lambda: _blob_mask(height, width, max_coverage=max_coverage, seed=seeds[1]),
                       lambda: _stroke_mask(height, width, seed=seeds[2]))[:, :, None]
    turns = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
    turned = tf.image.rot90(image, turns) if height == width else image
    shift = tf.random.stateless_uniform([2], seeds[4], 0, max(height, width), dtype=tf.int32)
    shifted = tf.roll(turned, shift=shift, axis=[0, 1])
    flat_tone = (tf.random.stateless_uniform([1, 1, channels], seeds[5])
                 + tf.random.stateless_normal([height, width, channels], seeds[6], stddev=0.03))
    fill = tf.where(tf.random.stateless_uniform([], seeds[7]) < 0.5, shifted, flat_tone)
    opacity = tf.random.stateless_uniform([], seeds[8], 0.5, 1.0) * coverage
    return _blend_where_changed(image, fill, opacity, coverage)


PAINTERS = ("basic", "textured", "any-size")  # training-time painters, by name (train.py --painter)
TEXTURED_MAX_COVERAGE = 0.12
ANY_SIZE_MAX_COVERAGE = 0.5  # the any-size painter's largest patch: half the image (uneven grinding, wide stains)


def add_training_defect(image, other, *, painter: str = "basic", probability: float = 0.5, seed=None):
    """One training input and its damage mask with the named painter: ``basic`` is `add_synthetic_defects`;
    ``textured`` is `add_textured_defects`, which fills from `other` (another good photo of the same shape);
    ``any-size`` is the textured painter with patches of any size, log-uniform from 0.3 % to half the image."""
    if painter == "basic":
        return add_synthetic_defects(image, probability=probability, seed=seed)
    if painter == "textured":
        return add_textured_defects(image, other, probability=probability, seed=seed)
    if painter == "any-size":
        return add_textured_defects(image, other, probability=probability, max_coverage=ANY_SIZE_MAX_COVERAGE,
                                    log_uniform=True, seed=seed)
    raise ValueError(f"painter must be one of {PAINTERS}; got {painter!r}")


def add_textured_defects(image, other, *, probability: float = 0.5, max_coverage: float = TEXTURED_MAX_COVERAGE,
                         log_uniform: bool = False, seed=None):
    """Like `add_synthetic_defects`, with the variety DRAEM's ablation found to matter (Zavrtanik et al., ICCV
    2021), drawn from the data set itself instead of a texture library: (image, mask H×W×1 float in [0, 1]).

    With `probability`, one defect is painted. Its shape is a stroke (a third of them, as before) or a smooth
    patch: the top 0.3 %–`max_coverage` of a random field whose cell count is drawn per axis from 2–32 (round
    stains, long streaks, several scattered spots). Its fill is, in equal parts: `other` (another good photo,
    H×W×C like `image`) mirrored, shifted and re-toned (gamma 0.5–2, contrast and brightness changed, sometimes
    inverted: foreign structure of the same kind); a procedural texture (a few octaves of smooth noise at a
    random tone and contrast); the image itself turned and shifted; or a flat tone plus a little noise. Opacity is
    20–100 %, so faint defects are learnt too. The mask has the same meaning and guarantees as
    `add_synthetic_defects`' (> 0 exactly where a channel changed). `log_uniform`: draw the patch's coverage
    log-uniformly instead of uniformly, so that small patches stay as common when `max_coverage` is large.
    """
    import tensorflow as tf

    seeds = random_seeds(seed, 2)
    damage = tf.random.stateless_uniform([], seeds[0]) < probability
    return tf.cond(damage, lambda: _paint_textured(image, other, seeds[1], max_coverage=max_coverage,
                                                   log_uniform=log_uniform),
                   lambda: (image, tf.zeros_like(image[:, :, :1])))


def _paint_textured(image, other, seed, *, max_coverage: float, log_uniform: bool = False):
    import tensorflow as tf

    seeds = random_seeds(seed, 8)
    height, width, channels = image.shape
    is_stroke = tf.random.stateless_uniform([], seeds[0]) < 1 / 3
    coverage = tf.cond(is_stroke, lambda: _stroke_mask(height, width, seed=seeds[1]),
                       lambda: _patch_mask(height, width, max_coverage=max_coverage, log_uniform=log_uniform,
                                           seed=seeds[2]))[:, :, None]
    fills = [lambda: _retoned(other, seeds[3]),
             lambda: _procedural_texture(height, width, channels, seeds[4]),
             lambda: _turned_and_shifted(image, seeds[5]),
             lambda: _flat_tone(height, width, channels, seeds[5])]
    choice = tf.random.stateless_uniform([], seeds[6], 0, len(fills), dtype=tf.int32)
    fill = tf.switch_case(choice, fills)
    opacity = tf.random.stateless_uniform([], seeds[7], 0.2, 1.0) * coverage
    return _blend_where_changed(image, fill, opacity, coverage)


def _blend_where_changed(image, fill, opacity, coverage):
    """(`fill` blended into `image` with `opacity`, the coverage where a pixel actually changed)."""
    import tensorflow as tf

    blended = tf.clip_by_value(image * (1.0 - opacity) + fill * opacity, 0.0, 1.0)
    # Outside the coverage the blend equals the image only for inputs in [0, 1] (the clip would move others):
    # selecting keeps those pixels bit-identical whatever comes in.
    damaged = tf.where(coverage > 0, blended, image)
    # A faint soft edge, or a fill equal to the image, can leave a covered pixel as it was: not part of the mask.
    changed = tf.reduce_any(damaged != image, axis=-1, keepdims=True)
    return damaged, tf.where(changed, coverage, tf.zeros_like(coverage))


def _turned_and_shifted(image, seed):
    import tensorflow as tf

    seeds = random_seeds(seed, 2)
    height, width = image.shape[0], image.shape[1]
    turns = tf.random.stateless_uniform([], seeds[0], 0, 4, dtype=tf.int32)
    turned = tf.image.rot90(image, turns) if height == width else image
    shift = tf.random.stateless_uniform([2], seeds[1], 0, max(height, width), dtype=tf.int32)
    return tf.roll(turned, shift=shift, axis=[0, 1])


def _flat_tone(height: int, width: int, channels: int, seed):
    import tensorflow as tf

    seeds = random_seeds(seed, 2)
    return (tf.random.stateless_uniform([1, 1, channels], seeds[0])
            + tf.random.stateless_normal([height, width, channels], seeds[1], stddev=0.03))


def _retoned(photo, seed):
    """Another photo mirrored, shifted and re-toned: gamma 0.5–2, contrast 0.5–1.5, brightness ±0.2, a quarter
    of them inverted."""
    import tensorflow as tf

    seeds = random_seeds(seed, 6)
    photo = tf.image.stateless_random_flip_left_right(photo, seeds[0])
    photo = tf.image.stateless_random_flip_up_down(photo, seeds[1])
    photo = _turned_and_shifted(photo, seeds[2])
    gamma, contrast, brightness, invert = tf.unstack(tf.random.stateless_uniform([4], seeds[3]))
    photo = tf.clip_by_value(photo, 0.0, 1.0) ** tf.exp((2 * gamma - 1) * np.log(2.0))
    photo = (photo - 0.5) * (0.5 + contrast) + 0.5 + 0.4 * (brightness - 0.5)
    return tf.clip_by_value(tf.where(invert < 0.25, 1.0 - photo, photo), 0.0, 1.0)


def _procedural_texture(height: int, width: int, channels: int, seed):
    """Three octaves of smooth value noise (2–8 cells a side at the coarsest), at a random tone and contrast."""
    import tensorflow as tf

    seeds = random_seeds(seed, 6)
    cells = tf.random.stateless_uniform([], seeds[0], 2, 9, dtype=tf.int32)
    texture = tf.zeros([height, width])
    for octave in range(3):
        grid = tf.random.stateless_uniform(tf.stack([1, cells * 2**octave, cells * 2**octave, 1]), seeds[1 + octave])
        texture += 0.5**octave * tf.image.resize(grid, [height, width], method="bilinear")[0, :, :, 0]
    texture = (texture - tf.reduce_mean(texture)) / (tf.math.reduce_std(texture) + 1e-6)
    tone = tf.random.stateless_uniform([1, 1, channels], seeds[4])
    contrast = tf.random.stateless_uniform([], seeds[5], 0.05, 0.3)
    return tf.clip_by_value(tone + contrast * texture[:, :, None], 0.0, 1.0)


def _patch_mask(height: int, width: int, *, max_coverage: float, seed, log_uniform: bool = False):
    """H×W float mask in [0, 1]: the top 0.3 %–max_coverage of a smooth random field with 2–32 cells per axis,
    drawn independently (so patches can be round, long, or many); the coverage uniform, or log-uniform."""
    import tensorflow as tf

    seeds = random_seeds(seed, 4)
    rows = 2 ** tf.random.stateless_uniform([], seeds[0], 1, 6, dtype=tf.int32)
    cols = 2 ** tf.random.stateless_uniform([], seeds[1], 1, 6, dtype=tf.int32)
    coarse = tf.random.stateless_uniform(tf.stack([1, rows + 1, cols + 1, 1]), seeds[2])
    field = tf.image.resize(coarse, [height, width], method="bicubic")[0, :, :, 0]
    if log_uniform:
        coverage = tf.exp(tf.random.stateless_uniform([], seeds[3], np.log(0.003), np.log(max_coverage)))
    else:
        coverage = tf.random.stateless_uniform([], seeds[3], 0.003, max_coverage)
    descending = tf.sort(tf.reshape(field, [-1]), direction="DESCENDING")
    cutoff = descending[tf.cast(coverage * height * width, tf.int32)]
    return tf.clip_by_value((field - cutoff) / 0.02, 0.0, 1.0)


def _blob_mask(height: int, width: int, *, max_coverage: float, seed):
    """H×W float mask in [0, 1]: one or two smooth blobs covering 0.3 %–max_coverage of the image."""
    import tensorflow as tf

    seeds = random_seeds(seed, 3)
    cells = tf.random.stateless_uniform([], seeds[0], 3, 9, dtype=tf.int32)
    coarse = tf.random.stateless_uniform(tf.stack([1, cells, cells, 1]), seeds[1])
    field = tf.image.resize(coarse, [height, width], method="bicubic")[0, :, :, 0]
    coverage = tf.random.stateless_uniform([], seeds[2], 0.003, max_coverage)
    descending = tf.sort(tf.reshape(field, [-1]), direction="DESCENDING")
    cutoff = descending[tf.cast(coverage * height * width, tf.int32)]
    return tf.clip_by_value((field - cutoff) / 0.02, 0.0, 1.0)  # 0.02: a soft edge a pixel or two wide


def _stroke_mask(height: int, width: int, *, seed):
    """H×W float mask in [0, 1]: a quadratic Bézier curve 1–3 px wide, 10–50 % of the image's side long."""
    import tensorflow as tf

    seeds = random_seeds(seed, 5)
    side = float(max(height, width))
    points = max(16, int(side) // 2)  # about a pixel apart along the longest stroke, so it has no gaps
    start = tf.random.stateless_uniform([2], seeds[0]) * [float(height), float(width)]
    angle = tf.random.stateless_uniform([], seeds[1], 0.0, 2.0 * np.pi)
    length = tf.random.stateless_uniform([], seeds[2], 0.1, 0.5) * side
    end = start + length * tf.stack([tf.sin(angle), tf.cos(angle)])
    control = (start + end) / 2.0 + tf.random.stateless_normal([2], seeds[3], stddev=0.25) * length  # the bend
    t = tf.linspace(0.0, 1.0, points)[:, None]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t ** 2 * end  # points × (row, col)
    rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    distance = tf.reduce_min(tf.sqrt((rows[:, :, None] - curve[:, 0]) ** 2 + (cols[:, :, None] - curve[:, 1]) ** 2),
                             axis=-1)
    half_width = tf.random.stateless_uniform([], seeds[4], 0.5, 1.5)
    return tf.clip_by_value(half_width + 0.5 - distance, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# Preview sheet
# ----------------------------------------------------------------------------------------------------------


def preview_sheet(*, size: int = 128, seed: int = 0, training_samples: int = 3) -> np.ndarray:
    """H×W×3 uint8 RGB: each demo-set defect on its own rendered part, then `training_samples` training-time
    defects of each painter (PAINTERS) on the first part's photo (the textured one filling from the second
    part's); painted images in the top row, their masks (white) below."""
    import tensorflow as tf

    from utils.synthetic import render_part  # a function-level import: utils.synthetic imports this module

    images, masks = [], []
    for position, kind in enumerate(DEFECT_TYPES):
        part = render_part((seed, position), size)
        image, mask = paint_defect(part, kind, np.random.default_rng((seed, position)))
        images.append(image)
        masks.append(mask.astype(np.float32))
    photo, other = (tf.constant(render_part((seed, index), size).image.astype(np.float32) / 255) for index in (0, 1))
    for painter in PAINTERS:
        for sample in range(training_samples):
            damaged, coverage = add_training_defect(photo, other, painter=painter, probability=1.0,
                                                    seed=tf.constant([seed, sample]))
            images.append(float_to_uint8(damaged.numpy()))
            masks.append(coverage.numpy()[:, :, 0])
    mask_row = [np.repeat(float_to_uint8(mask)[:, :, None], 3, axis=2) for mask in masks]
    return np.vstack([np.hstack(images), np.hstack(mask_row)])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Paint every kind of defect once and save a preview sheet (PNG): "
                                                 "the demo-set defects, then each training-time painter's, "
                                                 "masks below.")
    parser.add_argument("--out", default="defects_preview.png", help="PNG to write (default defects_preview.png)")
    parser.add_argument("--size", type=int, default=128, help="photo size in pixels (≥ 32)")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    sheet = preview_sheet(size=arguments.size, seed=arguments.seed)
    out = Path(arguments.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {out}")
    print(out)


if __name__ == "__main__":
    main()
