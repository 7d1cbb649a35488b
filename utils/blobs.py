"""From a residual map to a verdict: threshold, connected blobs, OK/NOK.

Two decision rules, chosen by name in :func:`decide`:

* ``"calibrated"`` (default): pixels with ``residual ≥ threshold`` are defective; the part is NOK when one
  8-connected blob of them covers at least ``min_area`` pixels. Its continuous score is :func:`blob_score`, the
  highest threshold at which the map still holds such a blob, so ``NOK ⇔ score ≥ threshold`` exactly.
  Threshold and min_area come from ``utils.calibration``, on defect-free images: for a given min_area, the
  threshold is :func:`threshold_above` the highest blob score among them, so every one of them passes.
* ``"seed"``: the project's original per-image rule, kept unchanged for comparison (see :func:`_decide_seed`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import cv2
import numpy as np
import skimage.exposure

DECISION_RULES = ("calibrated", "seed")
SEED_MIN_AREA = 85  # the original rule's fixed minimum contour area, in pixels
SEED_THRESHOLD_FRACTION = 2.0 / 3.0  # the original rule thresholds at 2/3 of the largest histogram bin centre
SEED_BLUR_SIZE = (5, 5)  # the original rule's Gaussian blur kernel (sigma derived by OpenCV from the size)


@dataclass
class Blob:
    """One 8-connected region of a defect mask."""

    area: int  # pixel count at the decision resolution (the unit of min_area)
    bbox: list[int]  # [x0, y0, x1, y1], end exclusive: x1 = x0 + width
    centroid: tuple[float, float]  # (x, y) mean pixel position


@dataclass
class Decision:
    """The verdict for one residual map and everything that led to it."""

    verdict: str  # "OK" or "NOK"
    score: float  # continuous anomaly score, higher = more anomalous (see decide() per rule)
    threshold: float  # residual threshold used (seed rule: on its 0-255 scale)
    min_area: int  # blob size that makes a part NOK
    max_blob_area: float  # size of the largest blob, as the rule measures it (seed rule: contour area)
    blobs: list[Blob] = field(default_factory=list)  # connected regions of defect_mask, largest first
    defect_mask: np.ndarray | None = None  # H×W bool, the pixels the rule calls defective
    rule: str = "calibrated"  # the rule's name, one of DECISION_RULES


def find_blobs(mask: np.ndarray) -> list[Blob]:
    """8-connected blobs of a mask (bool, or integers where non-zero means set), largest area first.

    Args:
        mask: H×W array.

    Returns:
        One :class:`Blob` per connected region; ties in area keep OpenCV's raster-scan order.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D H×W array, got shape {mask.shape}")
    count, _, stats, centroids = cv2.connectedComponentsWithStats(
        (mask != 0).astype(np.uint8), connectivity=8)
    blobs = [
        Blob(area=int(stats[label, cv2.CC_STAT_AREA]),
             bbox=[int(stats[label, cv2.CC_STAT_LEFT]), int(stats[label, cv2.CC_STAT_TOP]),
                   int(stats[label, cv2.CC_STAT_LEFT] + stats[label, cv2.CC_STAT_WIDTH]),
                   int(stats[label, cv2.CC_STAT_TOP] + stats[label, cv2.CC_STAT_HEIGHT])],
             centroid=(float(centroids[label, 0]), float(centroids[label, 1])))
        for label in range(1, count)  # label 0 is the background
    ]
    return sorted(blobs, key=lambda blob: blob.area, reverse=True)


def blobs_on_photo(blobs: list[Blob], map_shape: tuple[int, int], photo_shape: tuple[int, int]) -> list[Blob]:
    """Blobs found on a map of `map_shape` (H, W) → boxes and centroids on a photo of `photo_shape` the map was
    stretched from: each box grows to cover every photo pixel its map pixels cover; areas stay in map pixels, the
    unit the rule counted them in."""
    scale_y, scale_x = photo_shape[0] / map_shape[0], photo_shape[1] / map_shape[1]
    if (scale_y, scale_x) == (1.0, 1.0):
        return list(blobs)
    height, width = photo_shape

    def box(bbox: list[int]) -> list[int]:
        x0, y0, x1, y1 = bbox
        return [min(int(np.floor(x0 * scale_x)), width - 1), min(int(np.floor(y0 * scale_y)), height - 1),
                max(min(int(np.ceil(x1 * scale_x)), width), 1), max(min(int(np.ceil(y1 * scale_y)), height), 1)]

    return [Blob(area=blob.area, bbox=box(blob.bbox),
                 centroid=((blob.centroid[0] + 0.5) * scale_x - 0.5, (blob.centroid[1] + 0.5) * scale_y - 0.5))
            for blob in blobs]


def largest_blob_area(mask: np.ndarray) -> int:
    """Pixel count of the largest 8-connected blob of a 2-D mask (0 for an empty mask)."""
    _, _, stats, _ = cv2.connectedComponentsWithStats((np.asarray(mask) != 0).astype(np.uint8), connectivity=8)
    return int(stats[1:, cv2.CC_STAT_AREA].max(initial=0))


def blob_score(residual_map: np.ndarray, min_area: int) -> float:
    """The highest threshold t at which ``residual_map ≥ t`` still holds an 8-connected blob of ≥ min_area pixels.

    Lowering t only adds pixels, so blobs only grow: the answer is one of the map's values, found exactly by
    bisection over its sorted distinct values (about log2(H·W) connected-component passes). The calibrated
    rule therefore says NOK at threshold t exactly when ``blob_score ≥ t``.

    Args:
        residual_map: H×W finite float array.
        min_area: blob size in pixels, 1 ≤ min_area ≤ H·W.

    Returns:
        The score, a value of ``residual_map``, as a float.
    """
    residual_map = _validated_map(residual_map)
    _validate_min_area(min_area)
    if min_area > residual_map.size:
        raise ValueError(f"min_area {min_area} exceeds the map's {residual_map.size} pixels {residual_map.shape}")
    values = _score_candidates(residual_map, min_area)  # ascending; values[0] is known to pass
    low, high = 0, len(values) - 1
    while low < high:  # invariant: values[low] passes, everything above values[high] fails
        middle = (low + high + 1) // 2
        if largest_blob_area(residual_map >= values[middle]) >= min_area:
            low = middle
        else:
            high = middle - 1
    return float(values[low])


def _score_candidates(residual_map: np.ndarray, min_area: int) -> np.ndarray:
    """The map's distinct values that can be the blob score, ascending; the first is known to pass.

    Upper bound: above the min_area-th largest value fewer than min_area pixels remain. Lower bound: the best
    value that a whole k×k square (k² ≥ min_area, k odd, the square inside the map) reaches everywhere — that
    square alone is a blob big enough. Bracketing first saves most of the bisection's passes.
    """
    flat = residual_map.ravel()
    upper = np.partition(flat, flat.size - min_area)[flat.size - min_area]
    side = int(np.ceil(np.sqrt(min_area))) | 1
    half = side // 2
    lower = flat.min()
    if residual_map.shape[0] > 2 * half and residual_map.shape[1] > 2 * half:
        eroded = cv2.erode(residual_map, np.ones((side, side), np.uint8))  # the k×k minimum around each pixel
        lower = eroded[half:residual_map.shape[0] - half, half:residual_map.shape[1] - half].max()
    return np.unique(flat[(flat >= lower) & (flat <= upper)])


def threshold_above(score: float) -> float:
    """The lowest threshold strictly above `score` that survives being stored in float32 or float64."""
    # Whether float32(score) rounds down or up, the next float32 above it is strictly above the score.
    return float(np.nextafter(np.float32(score), np.float32(np.inf)))


def decide(residual_map: np.ndarray, *, rule: str = "calibrated", threshold: float | None = None,
           min_area: int | None = None) -> Decision:
    """OK/NOK verdict for one H×W residual map (higher = more different) by the named rule.

    Args:
        residual_map: H×W finite float array, e.g. one map of ``utils.residuals.ssim_residual_map``.
        rule: "calibrated" (default) or "seed".
        threshold: calibrated rule only, required: residual value from which a pixel is defective.
        min_area: blob size in pixels that makes a part NOK (≥ 1); required for "calibrated", defaults to 85
            for "seed".

    Returns:
        A :class:`Decision`. Scores: "calibrated" → :func:`blob_score` (same units as the threshold, and
        NOK ⇔ score ≥ threshold); "seed" → area of the largest contour (NOK ⇔ score ≥ min_area).
    """
    if rule not in DECISION_RULES:
        raise ValueError(f"rule must be one of {DECISION_RULES}, got {rule!r}")
    residual_map = _validated_map(residual_map)
    if rule == "seed":
        if threshold is not None:
            raise ValueError(f"the seed rule computes its own threshold per image; got threshold={threshold!r}")
        return _decide_seed(residual_map, SEED_MIN_AREA if min_area is None else min_area)
    if not isinstance(threshold, numbers.Real) or not np.isfinite(threshold):
        raise ValueError(f"the calibrated rule needs a finite threshold, got {threshold!r}")
    if min_area is None:
        raise ValueError("the calibrated rule needs min_area, got None")
    return _decide_calibrated(residual_map, float(threshold), min_area)


def _decide_calibrated(residual_map: np.ndarray, threshold: float, min_area: int) -> Decision:
    _validate_min_area(min_area)
    defect_mask = residual_map >= threshold  # the map is float64 here, so the comparison is exact
    blobs = find_blobs(defect_mask)
    max_blob_area = blobs[0].area if blobs else 0
    return Decision(
        verdict="NOK" if max_blob_area >= min_area else "OK",
        score=blob_score(residual_map, min_area),
        threshold=threshold, min_area=min_area, max_blob_area=max_blob_area,
        blobs=blobs, defect_mask=defect_mask, rule="calibrated")


def _decide_seed(residual_map: np.ndarray, min_area: int) -> Decision:
    """The original rule, step for step: blur, ×255, threshold at 2/3 of the largest histogram bin centre.

    The residual map is clipped to [−1, 1], blurred with a 5×5 Gaussian (sigma 0: OpenCV's binomial kernel) and
    multiplied by 255 (no rescaling). ``skimage.exposure.histogram`` bins it; the threshold is 2/3 of the largest
    bin centre, i.e. about 2/3 of the map's maximum, so it adapts to each image. Pixels strictly above it
    (``cv2.threshold`` THRESH_BINARY) are defective; the part is NOK when the largest external contour's area
    (``cv2.contourArea``: the polygon through boundary pixel centres, a filled w×h rectangle counts
    (w−1)(h−1)) reaches min_area (85 px). The score is that area.
    """
    _validate_min_area(min_area)
    clipped = np.clip(residual_map, -1.0, 1.0).astype(np.float32)
    blurred = cv2.GaussianBlur(clipped, SEED_BLUR_SIZE, 0) * 255.0
    _, bin_centers = skimage.exposure.histogram(blurred)
    threshold = SEED_THRESHOLD_FRACTION * float(np.max(bin_centers))
    defect_mask = blurred > threshold
    contours, _ = cv2.findContours(defect_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    largest_contour_area = max((float(cv2.contourArea(contour)) for contour in contours), default=0.0)
    return Decision(
        verdict="NOK" if largest_contour_area >= min_area else "OK",
        score=largest_contour_area, threshold=threshold, min_area=min_area,
        max_blob_area=largest_contour_area, blobs=find_blobs(defect_mask), defect_mask=defect_mask, rule="seed")


def _validated_map(residual_map) -> np.ndarray:
    residual_map = np.asarray(residual_map)
    if residual_map.ndim != 2 or residual_map.size == 0:
        raise ValueError(f"residual_map must be a non-empty 2-D H×W array, got shape {residual_map.shape}")
    if not np.issubdtype(residual_map.dtype, np.number) or not np.all(np.isfinite(residual_map)):
        raise ValueError(f"residual_map must hold finite numbers, got dtype {residual_map.dtype} with "
                         f"non-finite or non-numeric values")
    # float64 so that comparisons with a float threshold are exact: no rounding of the threshold to float32.
    return residual_map.astype(np.float64, copy=False)


def _validate_min_area(min_area) -> None:
    if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 1:
        raise ValueError(f"min_area must be an integer ≥ 1, got {min_area!r}")
