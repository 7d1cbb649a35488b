"""Test oracles: slow, full-memory answers that the library's streaming or composed code is checked against.

Nothing in utils/, models/, benchmarks/ or the scripts imports this module; tests do (``from oracles import ...``,
tests/ being on sys.path as for ``conftest``).

* :func:`pixel_auroc`, :func:`pro_curve`, :func:`aupro`: pixel metrics over every pixel of every map held at
  once, exact at every distinct map value, for ``utils.metrics.PixelScores`` (which streams histograms). They
  find regions and weights themselves rather than reuse PixelScores' code, so that a mistake there shows.
* :func:`lowest_clean_threshold`: the calibrated rule's threshold for a set of good maps, composed from
  ``utils.blobs`` as ``utils.calibration`` composes it.

Maps are taken in float32, as the models give them and as PixelScores bins them.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from utils.blobs import blob_score, threshold_above
from utils.metrics import FPR_LIMIT, integrate_pro_curve


def all_pixels(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(defective?, value, weight) of every pixel of every image, one flat array each.

    A defective pixel weighs 1 / (area of its 8-connected region × number of regions over all images), so the
    weights of the defective pixels at or above a threshold sum to the PRO there; good pixels weigh 0.
    """
    if len(masks) != len(maps) or len(masks) == 0:
        raise ValueError(f"need as many masks as maps, at least one: got {len(masks)} masks, {len(maps)} maps")
    truth, values, weights, region_count = [], [], [], 0
    for index, (mask, anomaly_map) in enumerate(zip(masks, maps)):
        mask, anomaly_map = np.asarray(mask) != 0, np.asarray(anomaly_map, np.float32)
        if mask.shape != anomaly_map.shape:
            raise ValueError(f"maps[{index}] has shape {anomaly_map.shape}, its mask has shape {mask.shape}")
        count, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        areas = np.bincount(regions.ravel(), minlength=count)
        pixel_weights = np.zeros(mask.shape)
        pixel_weights[mask] = 1.0 / areas[regions[mask]]
        truth.append(mask.ravel())
        values.append(anomaly_map.ravel())
        weights.append(pixel_weights.ravel())
        region_count += count - 1
    return np.concatenate(truth), np.concatenate(values), np.concatenate(weights) / max(region_count, 1)


def pixel_auroc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float | None:
    """scikit-learn's AUROC over all pixels; None without a defective or without a good pixel."""
    truth, values, _ = all_pixels(masks, maps)
    if truth.all() or not truth.any():
        return None
    return float(roc_auc_score(truth, values))


def pro_curve(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """The exact PRO curve (Bergmann et al.): one point per distinct map value t, pixels ≥ t predicted defective.

    Returns:
        (fpr, pro) from (0, 0) to (1, 1), or None without a ground-truth region or without a good pixel.
    """
    truth, values, weights = all_pixels(masks, maps)
    if truth.all() or not truth.any():
        return None
    order = np.argsort(values, kind="stable")[::-1]  # descending values
    values, truth, weights = values[order], truth[order], weights[order]
    # Each run of equal values ends where the next value differs: there every pixel ≥ that value is counted.
    run_ends = np.flatnonzero(np.diff(values, append=-np.inf) != 0)
    fpr = np.cumsum(~truth)[run_ends] / np.count_nonzero(~truth)
    pro = np.cumsum(weights)[run_ends]
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], pro])


def aupro(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], *, fpr_limit: float = FPR_LIMIT) -> float | None:
    """Normalised area under :func:`pro_curve` up to ``fpr_limit``; None as :func:`pro_curve`."""
    curve = pro_curve(masks, maps)
    return None if curve is None else integrate_pro_curve(*curve, fpr_limit=fpr_limit)


def lowest_clean_threshold(residual_maps, *, min_area: int) -> float:
    """Lowest threshold at which no map holds a blob of ≥ min_area pixels (MVTec AD calibration on good maps).

    That is just above the highest ``blob_score`` of the maps (the next float32 above it, so the margin
    survives maps and thresholds kept in float32 as well as float64).
    """
    return threshold_above(max(blob_score(residual_map, min_area) for residual_map in residual_maps))
