"""Evaluation metrics: image and pixel AUROC, AUPRO, box and mask IoU, OK/NOK classification scores.

Conventions shared by every function here:

- label 1 (or True, or "NOK") means defective, 0 (False, "OK") means good;
- higher scores and higher anomaly-map values mean "more anomalous";
- masks are H×W bool or uint8 (any non-zero pixel is defective);
- boxes are ``[x0, y0, x1, y1]`` in pixels, inclusive-exclusive (``x1 = x0 + width``);
- connected components use 8-connectivity, as the MVTec AD evaluation code and anomalib do;
- a metric the data cannot give (one class only, no defective pixel...) is ``None``, never NaN, so the
  result can go straight into JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

Box = Sequence[float]


# ----------------------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------------------

def _as_binary_labels(values: Sequence, name: str) -> np.ndarray:
    """1-D int array of 0/1 from bools, 0/1 numbers or "OK"/"NOK" strings."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    if array.dtype.kind in "US":
        unknown = sorted(set(array.tolist()) - {"OK", "NOK"})
        if unknown:
            raise ValueError(f"{name} strings must be 'OK' or 'NOK', got {unknown[:5]}")
        return (array == "NOK").astype(np.int64)
    unknown = sorted(set(np.unique(array).tolist()) - {0, 1})
    if unknown:
        raise ValueError(f"{name} must hold only 0/1 (or False/True), got values {unknown[:5]}")
    return array.astype(np.int64)


def _as_scores(values: Sequence, name: str, length: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (length,):
        raise ValueError(f"{name} must be 1-D with {length} entries (one per label), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array[~np.isfinite(array)][:5].tolist()}")
    return array


def _as_mask(mask: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D H×W mask, got shape {array.shape}")
    return array != 0


def _mask_map_pairs(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validated (bool mask, float32 map) pairs; each pair shares one H×W shape."""
    if len(masks) != len(maps) or len(masks) == 0:
        raise ValueError(f"need as many masks as maps, at least one: got {len(masks)} masks, {len(maps)} maps")
    pairs = []
    for index, (mask, anomaly_map) in enumerate(zip(masks, maps)):
        mask = _as_mask(mask, f"masks[{index}]")
        anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
        if anomaly_map.shape != mask.shape:
            raise ValueError(f"maps[{index}] has shape {anomaly_map.shape}, its mask has shape {mask.shape}")
        if not np.all(np.isfinite(anomaly_map)):
            raise ValueError(f"maps[{index}] holds non-finite values (NaN or inf)")
        pairs.append((mask, anomaly_map))
    return pairs


def _as_box(box: Box, name: str) -> np.ndarray:
    array = np.asarray(box, dtype=np.float64)
    if array.shape != (4,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be four finite numbers [x0, y0, x1, y1], got {box!r}")
    if array[2] < array[0] or array[3] < array[1]:
        raise ValueError(f"{name} must have x1 >= x0 and y1 >= y0, got {box!r}")
    return array


# ----------------------------------------------------------------------------------------------------------
# Image-level and pixel-level AUROC
# ----------------------------------------------------------------------------------------------------------

def image_auroc(labels: Sequence, scores: Sequence[float]) -> float | None:
    """Area under the ROC curve of image scores (scikit-learn ``roc_auc_score``).

    Args:
        labels: N image labels, 1/True/"NOK" = defective, 0/False/"OK" = good.
        scores: N finite anomaly scores, higher = more anomalous (any range).

    Returns:
        AUROC in [0, 1] (0.5 = chance), or None when only one class is present: the ROC curve needs both
        defective images (for the true-positive rate) and good ones (for the false-positive rate).
    """
    labels = _as_binary_labels(labels, "labels")
    scores = _as_scores(scores, "scores", labels.size)
    if labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))


def pixel_auroc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float | None:
    """Area under the ROC curve over every pixel of every image.

    Args:
        masks: N ground-truth H×W masks (bool or uint8, non-zero = defective pixel); good images have
            all-zero masks. Images may differ in size, but each mask matches its map.
        maps: N H×W anomaly maps, finite, higher = more anomalous.

    Returns:
        AUROC in [0, 1], or None when there is no defective pixel or no good pixel at all.
    """
    pairs = _mask_map_pairs(masks, maps)
    # float32 maps and bool masks keep memory at 5 bytes per pixel before scikit-learn sorts them.
    truth = np.concatenate([mask.ravel() for mask, _ in pairs])
    values = np.concatenate([anomaly_map.ravel() for _, anomaly_map in pairs])
    if truth.all() or not truth.any():
        return None
    return float(roc_auc_score(truth, values))


# ----------------------------------------------------------------------------------------------------------
# Per-region overlap (PRO) curve and AUPRO
# ----------------------------------------------------------------------------------------------------------

def _split_pixels(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Good-pixel values, defective-pixel values and defective-pixel weights.

    A defective pixel's weight is 1 / (area of its region × number of regions over all images), so the
    weights of the pixels above a threshold sum to the PRO: the mean, over regions, of the covered fraction.
    """
    negatives, positives, weights = [], [], []
    region_count = 0
    for mask, anomaly_map in pairs:
        negatives.append(anomaly_map[~mask])
        if not mask.any():
            continue
        count, region_labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        areas = np.bincount(region_labels[mask], minlength=count)
        positives.append(anomaly_map[mask])
        weights.append(1.0 / areas[region_labels[mask]])
        region_count += count - 1
    if region_count == 0:
        return np.concatenate(negatives), np.empty(0, np.float32), np.empty(0)
    return np.concatenate(negatives), np.concatenate(positives), np.concatenate(weights) / region_count


def _curve_thresholds(sorted_negatives: np.ndarray, fpr_limit: float, num_thresholds: int) -> np.ndarray:
    """Thresholds, descending, taken from the good-pixel values at evenly spaced false-positive rates.

    ``num_thresholds`` ranks are spread over [0, fpr_limit], where AUPRO is integrated, and a tenth as many
    over (fpr_limit, 1], which only the plot uses.
    """
    count = sorted_negatives.size
    dense = np.linspace(1, max(1.0, fpr_limit * count), num_thresholds)
    sparse = np.linspace(fpr_limit * count, count, max(2, num_thresholds // 10))
    ranks = np.unique(np.clip(np.rint(np.concatenate([dense, sparse])), 1, count).astype(np.int64))
    # The k-th largest good value: thresholding there flags (ties aside) exactly k good pixels.
    return np.unique(sorted_negatives[count - ranks])[::-1]


def pro_curve(
    masks: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    *,
    fpr_limit: float = 0.3,
    num_thresholds: int = 1000,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-region overlap (PRO) against false-positive rate, as in Bergmann et al., MVTec AD (IJCV 2021).

    The regions are the 8-connected components of every ground-truth mask. A pixel is predicted defective
    when its map value is >= the threshold. For each threshold:
    PRO = mean over all regions of (predicted pixels in the region / region area);
    FPR = predicted pixels outside every region / all pixels outside every region, over all images
    (good images contribute only to the FPR).

    The curve is exact at its thresholds, which are good-pixel values at ``num_thresholds`` evenly spaced
    false-positive rates in [0, fpr_limit] (a tenth as many beyond, for plotting). At each threshold both
    corners of the exact curve are kept (value > t and value >= t), so with at most ``num_thresholds``
    good pixels under the limit the curve equals the exact one; otherwise AUPRO is off by at most
    ~1 / num_thresholds.

    Args:
        masks: N ground-truth H×W masks (bool or uint8, non-zero = defective); all-zero for good images.
        maps: N H×W anomaly maps (finite, higher = more anomalous), each shaped like its mask.
        fpr_limit: in (0, 1]; where the thresholds are dense.
        num_thresholds: >= 2; thresholds in [0, fpr_limit].

    Returns:
        (fpr, pro): 1-D float64 arrays of equal length, both non-decreasing, from (0, 0) to (1, 1);
        None when there is no ground-truth region or no good pixel.
    """
    _check_fpr_limit(fpr_limit)
    if not isinstance(num_thresholds, (int, np.integer)) or num_thresholds < 2:
        raise ValueError(f"num_thresholds must be an integer >= 2, got {num_thresholds!r}")
    negatives, positives, weights = _split_pixels(_mask_map_pairs(masks, maps))
    if negatives.size == 0 or positives.size == 0:
        return None
    negatives.sort()
    order = np.argsort(positives, kind="stable")
    positives = positives[order]
    # covered_from[i] = PRO contributed by positives[i:], i.e. by values >= positives[i].
    covered_from = np.append(np.cumsum(weights[order][::-1])[::-1], 0.0)
    thresholds = _curve_thresholds(negatives, fpr_limit, num_thresholds)
    fpr, pro = [], []
    for side in ("right", "left"):  # "right": values > t ; "left": values >= t
        fpr.append(1.0 - np.searchsorted(negatives, thresholds, side=side) / negatives.size)
        pro.append(covered_from[np.searchsorted(positives, thresholds, side=side)])
    fpr = np.concatenate([[0.0], np.stack(fpr, axis=1).ravel(), [1.0]])
    pro = np.concatenate([[0.0], np.stack(pro, axis=1).ravel(), [1.0]])
    return fpr, np.clip(pro, 0.0, 1.0)


def _check_fpr_limit(fpr_limit: float) -> None:
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")


def integrate_pro_curve(fpr: np.ndarray, pro: np.ndarray, *, fpr_limit: float = 0.3) -> float:
    """Normalised area under a PRO curve from FPR 0 to ``fpr_limit`` (trapezoid rule).

    The curve is linearly interpolated at exactly ``fpr_limit``, and the area is divided by ``fpr_limit``
    so that a perfect detector scores 1.0. Use it to get AUPRO from a curve already computed for a plot.

    Args:
        fpr: 1-D non-decreasing false-positive rates in [0, 1], starting at 0.
        pro: 1-D per-region overlaps in [0, 1], same length.
        fpr_limit: in (0, 1].

    Returns:
        AUPRO in [0, 1].
    """
    _check_fpr_limit(fpr_limit)
    fpr, pro = np.asarray(fpr, np.float64), np.asarray(pro, np.float64)
    if fpr.ndim != 1 or fpr.shape != pro.shape or fpr.size < 2:
        raise ValueError(f"fpr and pro must be 1-D of one length >= 2, got shapes {fpr.shape}, {pro.shape}")
    if np.any(np.diff(fpr) < 0):
        raise ValueError("fpr must be non-decreasing")
    inside = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:inside], pro[:inside]
    if 0 < inside < fpr.size:
        fraction = (fpr_limit - fpr[inside - 1]) / (fpr[inside] - fpr[inside - 1])
        x = np.append(x, fpr_limit)
        y = np.append(y, pro[inside - 1] + fraction * (pro[inside] - pro[inside - 1]))
    return float(np.trapezoid(y, x) / fpr_limit) if x.size > 1 else 0.0


def aupro(
    masks: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    *,
    fpr_limit: float = 0.3,
    num_thresholds: int = 1000,
) -> float | None:
    """Area under the per-region overlap curve up to ``fpr_limit``, normalised to [0, 1].

    As in Bergmann et al. (MVTec AD, IJCV 2021; Uninformed Students, CVPR 2020) and anomalib: see
    :func:`pro_curve` for the curve and :func:`integrate_pro_curve` for the integration.

    Returns:
        AUPRO in [0, 1] (1.0 = every region fully found before any good pixel is flagged), or None when
        there is no ground-truth region or no good pixel.
    """
    curve = pro_curve(masks, maps, fpr_limit=fpr_limit, num_thresholds=num_thresholds)
    if curve is None:
        return None
    return integrate_pro_curve(*curve, fpr_limit=fpr_limit)


# ----------------------------------------------------------------------------------------------------------
# Box and mask IoU
# ----------------------------------------------------------------------------------------------------------

def box_iou(box_a: Box, box_b: Box) -> float:
    """Intersection over union of two boxes ``[x0, y0, x1, y1]`` (inclusive-exclusive pixel bounds).

    Returns:
        IoU in [0, 1]; 0.0 for disjoint boxes and when both boxes have zero area.
    """
    a, b = _as_box(box_a, "box_a"), _as_box(box_b, "box_b")
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    intersection = max(width, 0.0) * max(height, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return float(intersection / union) if union > 0 else 0.0


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float | None:
    """Pixel intersection over union of a predicted and a ground-truth H×W mask (non-zero = defective).

    Returns:
        IoU in [0, 1]; None when both masks are empty (nothing to find and nothing found: the IoU is
        undefined, and counting it as 1 or 0 would bias a mean over images).
    """
    pred, gt = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred has shape {pred.shape}, gt has shape {gt.shape}")
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return None
    return float(np.count_nonzero(pred & gt) / union)


def component_boxes(mask: np.ndarray) -> list[tuple[int, list[int]]]:
    """(area, [x0, y0, x1, y1]) of each 8-connected component of an H×W mask, largest area first."""
    mask = _as_mask(mask, "mask")
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    components = []
    for x, y, width, height, area in stats[1:]:  # row 0 is the background
        components.append((int(area), [int(x), int(y), int(x + width), int(y + height)]))
    return sorted(components, key=lambda component: -component[0])


def _checked_pair(pred_mask: np.ndarray, gt_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _as_mask(pred_mask, "pred_mask"), _as_mask(gt_mask, "gt_mask")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_mask has shape {pred.shape}, gt_mask has shape {gt.shape}")
    return pred, gt


def largest_blob_box_iou(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float | None:
    """Box IoU between the largest predicted blob and the largest ground-truth region.

    Both are 8-connected components of H×W masks (non-zero = defective).

    Returns:
        IoU in [0, 1]; 0.0 when there is a ground-truth region but no predicted blob; None when the
        ground truth is empty (localisation is undefined on good images; false alarms there are counted
        by :func:`classification_metrics`).
    """
    pred, gt = _checked_pair(pred_mask, gt_mask)
    gt_components = component_boxes(gt)
    if not gt_components:
        return None
    pred_components = component_boxes(pred)
    if not pred_components:
        return 0.0
    return box_iou(pred_components[0][1], gt_components[0][1])


def region_box_iou(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float | None:
    """Mean, over ground-truth regions, of the box IoU with the best-matching predicted blob box.

    Each 8-connected ground-truth region's box is compared with every predicted blob's box and keeps
    the highest IoU (0.0 when nothing is predicted); one predicted blob may match several regions.

    Returns:
        Mean IoU in [0, 1]; None when the ground truth is empty (as :func:`largest_blob_box_iou`).
    """
    pred, gt = _checked_pair(pred_mask, gt_mask)
    gt_boxes = [box for _, box in component_boxes(gt)]
    if not gt_boxes:
        return None
    pred_boxes = [box for _, box in component_boxes(pred)]
    best = [max((box_iou(pred_box, gt_box) for pred_box in pred_boxes), default=0.0) for gt_box in gt_boxes]
    return float(np.mean(best))


# ----------------------------------------------------------------------------------------------------------
# OK / NOK classification
# ----------------------------------------------------------------------------------------------------------

def _ratio(numerator: int, denominator: int) -> float | None:
    return float(numerator / denominator) if denominator else None


def classification_metrics(labels: Sequence, verdicts: Sequence) -> dict[str, float | int | None]:
    """Scores of OK/NOK verdicts against image labels; "positive" means defective (NOK).

    Args:
        labels: N true labels, 1/True/"NOK" = defective, 0/False/"OK" = good.
        verdicts: N predicted verdicts, same encodings.

    Returns:
        dict with ``accuracy``; ``tpr`` (recall on defective images, None without any);
        ``tnr`` (recall on good images, None without any); ``balanced_accuracy`` = (tpr + tnr) / 2 (None
        unless both classes are present); ``f1`` of the defective class = 2TP / (2TP + FP + FN) (None when
        there is neither a defective image nor a NOK verdict); and the counts ``tp, fp, tn, fn``.
    """
    labels = _as_binary_labels(labels, "labels")
    verdicts = _as_binary_labels(verdicts, "verdicts")
    if verdicts.size != labels.size:
        raise ValueError(f"need one verdict per label: got {verdicts.size} verdicts, {labels.size} labels")
    (tn, fp), (fn, tp) = confusion_matrix(labels, verdicts, labels=[0, 1]).tolist()
    tpr, tnr = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {
        "accuracy": _ratio(tp + tn, labels.size),
        "balanced_accuracy": (tpr + tnr) / 2 if tpr is not None and tnr is not None else None,
        "tpr": tpr,
        "tnr": tnr,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }
