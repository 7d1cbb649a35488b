"""Evaluation metrics: image and pixel AUROC, AUPRO, box and mask IoU, OK/NOK classification scores.

Pixel AUROC and AUPRO stream: :class:`PixelScores` takes one anomaly map at a time, of any value range, and
keeps histograms of fixed size, so a set of thousands of images costs no more memory than one. The full-map
computations it is checked against are test oracles, in tests/oracles.py.

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

FPR_LIMIT = 0.3  # AUPRO is integrated up to this pixel false-positive rate (Bergmann et al.)
KEY_SHIFT = 12  # low bits of a float32's sortable 32-bit key that one histogram bin spans (see histogram_bins)
HISTOGRAM_BINS = 1 << (32 - KEY_SHIFT)  # 2^20 bins cover every float32; PixelScores keeps three: 24 MiB


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


def _as_box(box: Box, name: str) -> np.ndarray:
    array = np.asarray(box, dtype=np.float64)
    if array.shape != (4,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be four finite numbers [x0, y0, x1, y1], got {box!r}")
    if array[2] < array[0] or array[3] < array[1]:
        raise ValueError(f"{name} must have x1 >= x0 and y1 >= y0, got {box!r}")
    return array


# ----------------------------------------------------------------------------------------------------------
# Image-level AUROC
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


# ----------------------------------------------------------------------------------------------------------
# Pixel AUROC and AUPRO, accumulated image by image in bounded memory
# ----------------------------------------------------------------------------------------------------------

def integrate_pro_curve(fpr: np.ndarray, pro: np.ndarray, *, fpr_limit: float = FPR_LIMIT) -> float:
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
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
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


def _as_float32_map(anomaly_map: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(anomaly_map)
    if array.shape != shape:
        raise ValueError(f"anomaly_map has shape {array.shape}, its mask has shape {shape}")
    with np.errstate(over="ignore"):  # float64 values beyond float32's ±3.4e38 become inf, reported below
        values = array.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        raise ValueError(f"anomaly_map must hold finite float32 values, got {array[~finite][:5].tolist()}")
    return values


def histogram_bins(values: np.ndarray) -> np.ndarray:
    """The :class:`PixelScores` bin of each float32 value: bins ascend with the values, at any range and sign.

    Positive IEEE 754 floats sort like their bit patterns read as unsigned integers, negative ones in reverse;
    setting the sign bit of the positives and flipping every bit of the negatives gives keys in the floats'
    own order. Dropping the key's KEY_SHIFT lowest bits keeps sign, exponent and 11 mantissa bits, so each bin
    is 2^-11 (0.05 %) of its values' magnitude wide, wherever the values lie.
    """
    bits = (np.asarray(values, np.float32) + np.float32(0.0)).view(np.uint32)  # + 0.0: −0.0 → +0.0, one bin
    keys = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(1 << 31))
    return (keys >> KEY_SHIFT).astype(np.intp)


def _add_to_histogram(histogram: np.ndarray, bins: np.ndarray, weights: np.ndarray | None = None) -> None:
    """Add one count (or its weight) per entry of ``bins`` to ``histogram``, in place."""
    if bins.size == 0:
        return
    low = int(bins.min())  # count over the span of bins this image occupies, not over all 2^20 every time
    counts = np.bincount(bins - low, weights=weights)
    histogram[low:low + counts.size] += counts


class PixelScores:
    """Pixel AUROC and AUPRO of a labelled set, accumulated image by image in fixed memory (24 MiB).

        scores = PixelScores()
        for anomaly_map, mask in pairs:     # any number of images
            scores.add(anomaly_map, mask)
        scores.auroc(), scores.aupro(), scores.pro_curve()

    Three histograms over :func:`histogram_bins`: good-pixel counts, defective-pixel counts and defective-pixel
    weights. For AUPRO each defective pixel weighs 1 / (area of its 8-connected ground-truth region), so the
    weights at or above a threshold sum, over all images, to the number of regions times the mean covered
    fraction: the per-region overlap of Bergmann et al. (MVTec AD, IJCV 2021), as in anomalib.

    Why these bins: both metrics only compare values (any order-preserving transform of the scores leaves them
    unchanged), so a histogram may bin any such transform of the maps. Linear bins over a fixed range clip
    maps outside it (a map in [0.2, 4.5] lost two thirds of its AUPRO on [0, 2]); linear bins whose range
    grows by merging let one outlier (1e4) squeeze the whole map into a few bins. Bins cut from the float32
    representation itself cover every finite value, negative or huge, with no bookkeeping, at a constant
    relative width of 2^-11. Pixels in one bin count as tied; on 1 − SSIM, L2, logit, rescaled and outlier
    maps, pixel AUROC and AUPRO stayed within 2e-5 of the full-map values (tests/test_metrics.py). The one
    blind spot: a map whose values differ by less than 0.05 % of their magnitude (a huge constant offset)
    falls into a handful of bins; such a map should have the offset subtracted first.
    """

    def __init__(self):
        self.good_counts = np.zeros(HISTOGRAM_BINS, np.int64)  # pixels outside every ground-truth region
        self.defective_counts = np.zeros(HISTOGRAM_BINS, np.int64)
        self.region_weights = np.zeros(HISTOGRAM_BINS, np.float64)
        self.region_count = 0

    def add(self, anomaly_map: np.ndarray, mask: np.ndarray) -> None:
        """Count one H×W anomaly map (finite, higher = more anomalous) against its H×W ground-truth mask.

        The mask is bool or uint8, non-zero = defective; a good image's all-zero mask adds good pixels only.
        """
        mask = _as_mask(mask, "mask")
        bins = histogram_bins(_as_float32_map(anomaly_map, mask.shape))
        _add_to_histogram(self.good_counts, bins[~mask])
        if not mask.any():
            return
        count, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        areas = np.bincount(regions[mask], minlength=count)
        _add_to_histogram(self.defective_counts, bins[mask])
        _add_to_histogram(self.region_weights, bins[mask], weights=1.0 / areas[regions[mask]])
        self.region_count += count - 1

    def auroc(self) -> float | None:
        """Pixel AUROC (scikit-learn, bins weighted by their counts); None without defective or good pixels."""
        if not self.good_counts.any() or not self.defective_counts.any():
            return None
        good_bins, defective_bins = np.flatnonzero(self.good_counts), np.flatnonzero(self.defective_counts)
        labels = np.concatenate([np.zeros(good_bins.size), np.ones(defective_bins.size)])
        weights = np.concatenate([self.good_counts[good_bins], self.defective_counts[defective_bins]])
        return float(roc_auc_score(labels, np.concatenate([good_bins, defective_bins]), sample_weight=weights))

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(fpr, pro), both non-decreasing from (0, 0) to (1, 1): one point per occupied bin, as its threshold.

        None without ground-truth regions or without good pixels.
        """
        if self.region_count == 0 or not self.good_counts.any():
            return None
        occupied = np.flatnonzero(self.good_counts + self.defective_counts)[::-1]  # thresholds, descending
        good_above = np.cumsum(self.good_counts[::-1])[::-1]  # good pixels at or above each bin
        weight_above = np.cumsum(self.region_weights[::-1])[::-1]
        fpr = np.concatenate([[0.0], good_above[occupied] / self.good_counts.sum()])
        pro = np.concatenate([[0.0], weight_above[occupied] / self.region_count])
        return fpr, np.clip(pro, 0.0, 1.0)

    def aupro(self, *, fpr_limit: float = FPR_LIMIT) -> float | None:
        """Area under the PRO curve up to ``fpr_limit`` (in (0, 1]), normalised to [0, 1]; None as :meth:`pro_curve`."""
        curve = self.pro_curve()
        return None if curve is None else integrate_pro_curve(*curve, fpr_limit=fpr_limit)

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
