"""Metrics against hand-computed answers, scikit-learn, and a slow, obviously correct AUPRO."""

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from utils import metrics


# ----------------------------------------------------------------------------------------------------------
# Slow reference AUPRO: every distinct map value as a threshold, explicit regions, explicit FPR.
# ----------------------------------------------------------------------------------------------------------

def reference_pro_points(masks, maps):
    regions = []  # (image index, region mask)
    for index, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))  # 8-connectivity
        regions += [(index, labelled == region) for region in range(1, count + 1)]
    negative_count = sum(np.count_nonzero(~mask) for mask in masks)
    thresholds = np.concatenate([[np.inf], np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]])
    points = []
    for threshold in thresholds:
        predicted = [anomaly_map >= threshold for anomaly_map in maps]
        false_positives = sum(np.count_nonzero(p & ~m) for p, m in zip(predicted, masks))
        overlaps = [np.count_nonzero(predicted[i] & region) / np.count_nonzero(region) for i, region in regions]
        points.append((false_positives / negative_count, np.mean(overlaps)))
    return points


def reference_aupro(masks, maps, fpr_limit=0.3):
    points = reference_pro_points(masks, maps)
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:  # cut the segment at the limit, interpolating linearly
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def make_fixture(seed, levels=None, size=16):
    """3 images: two regions (one L-shaped, touching diagonally), one region, and a good image."""
    rng = np.random.default_rng(seed)
    masks = [np.zeros((size, size), bool) for _ in range(3)]
    masks[0][2:6, 2:6] = True
    masks[0][6, 6] = True  # diagonal neighbour: same region under 8-connectivity
    masks[0][10:12, 9:15] = True
    masks[1][5:9, 7:13] = True
    maps = [rng.random((size, size)) + 0.6 * mask for mask in masks]
    if levels:  # quantise to create many ties between good and defective pixels
        maps = [np.round(anomaly_map * levels) / levels for anomaly_map in maps]
    return masks, [anomaly_map.astype(np.float32) for anomaly_map in maps]


@pytest.mark.parametrize("seed, levels", [(0, None), (1, None), (2, 8), (3, 3)])
def test_aupro_matches_slow_reference(seed, levels):
    masks, maps = make_fixture(seed, levels)
    expected = reference_aupro(masks, maps)
    assert 0.05 < expected < 0.95  # the fixture is neither trivial nor hopeless
    assert metrics.aupro(masks, maps) == pytest.approx(expected, abs=1e-9)


def test_aupro_with_few_thresholds_stays_within_discretisation_bound():
    masks, maps = make_fixture(4, size=32)
    expected = reference_aupro(masks, maps)
    coarse = metrics.aupro(masks, maps, num_thresholds=20)
    assert coarse == pytest.approx(expected, abs=1 / 20)


def test_aupro_respects_fpr_limit():
    masks, maps = make_fixture(5)
    assert metrics.aupro(masks, maps, fpr_limit=0.1) == pytest.approx(reference_aupro(masks, maps, 0.1), abs=1e-9)
    assert metrics.aupro(masks, maps, fpr_limit=1.0) == pytest.approx(reference_aupro(masks, maps, 1.0), abs=1e-9)


def test_aupro_of_perfect_map_is_one_and_of_inverted_map_is_zero():
    masks, _ = make_fixture(0)
    assert metrics.aupro(masks, [mask.astype(np.float32) for mask in masks]) == pytest.approx(1.0)
    assert metrics.aupro(masks, [(~mask).astype(np.float32) for mask in masks]) == pytest.approx(0.0)


def test_aupro_known_answer_one_region_found_one_missed():
    mask = np.zeros((8, 8), bool)
    mask[0:2, 0:2] = True
    mask[5:7, 5:7] = True
    anomaly_map = np.zeros((8, 8), np.float32)
    anomaly_map[0:2, 0:2] = 1.0  # second region scores like the background
    # Curve: (0, 0) -> (0, 0.5) -> (1, 1); at FPR 0.3 the PRO is 0.65; area (0.5 + 0.65) / 2 * 0.3.
    assert metrics.aupro([mask], [anomaly_map]) == pytest.approx(0.575)


def test_aupro_is_invariant_to_monotone_rescaling():
    masks, maps = make_fixture(6)
    assert metrics.aupro(masks, [np.exp(3 * m) for m in maps]) == pytest.approx(metrics.aupro(masks, maps))


def test_pro_curve_shape_and_monotonicity():
    masks, maps = make_fixture(7)
    fpr, pro = metrics.pro_curve(masks, maps)
    assert fpr.shape == pro.shape
    assert (fpr[0], pro[0], fpr[-1], pro[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-12)
    assert metrics.integrate_pro_curve(fpr, pro) == pytest.approx(metrics.aupro(masks, maps))


def test_integrate_pro_curve_on_a_straight_line():
    line = np.linspace(0, 1, 11)
    assert metrics.integrate_pro_curve(line, line, fpr_limit=0.3) == pytest.approx(0.15)
    assert metrics.integrate_pro_curve(line, line, fpr_limit=0.25) == pytest.approx(0.125)


def test_aupro_undefined_without_regions_or_without_good_pixels():
    good = [np.zeros((8, 8), bool)]
    assert metrics.aupro(good, [np.random.default_rng(0).random((8, 8))]) is None
    assert metrics.aupro([np.ones((8, 8), bool)], [np.zeros((8, 8))]) is None
    assert metrics.pro_curve(good, [np.zeros((8, 8))]) is None


def test_aupro_rejects_bad_inputs():
    masks, maps = make_fixture(0)
    with pytest.raises(ValueError, match="0.0"):
        metrics.aupro(masks, maps, fpr_limit=0.0)
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        metrics.aupro(masks[:1], [np.zeros((8, 8))])
    with pytest.raises(ValueError, match="3 masks, 2 maps"):
        metrics.aupro(masks, maps[:2])
    with pytest.raises(ValueError, match="non-finite"):
        metrics.aupro(masks[:1], [np.full((16, 16), np.nan)])


# ----------------------------------------------------------------------------------------------------------
# AUROC
# ----------------------------------------------------------------------------------------------------------

def test_image_auroc_equals_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    scores = rng.random(40) + 0.3 * labels
    assert metrics.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert metrics.image_auroc(["OK", "NOK", "NOK"], [0.1, 0.9, 0.8]) == 1.0


def test_image_auroc_is_none_for_one_class_and_rejects_bad_labels():
    assert metrics.image_auroc([1, 1, 1], [0.1, 0.2, 0.3]) is None
    assert metrics.image_auroc([0, 0], [0.1, 0.2]) is None
    with pytest.raises(ValueError, match=r"\[2\]"):
        metrics.image_auroc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="3 entries"):
        metrics.image_auroc([0, 1, 1], [0.1, 0.2])


def test_pixel_auroc_equals_scikit_learn_on_flattened_pixels():
    masks, maps = make_fixture(8)
    expected = roc_auc_score(np.concatenate([m.ravel() for m in masks]), np.concatenate([m.ravel() for m in maps]))
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(expected)
    assert metrics.pixel_auroc([np.zeros((4, 4))], [np.zeros((4, 4))]) is None
    assert metrics.pixel_auroc([np.full((4, 4), 255, np.uint8)], [np.zeros((4, 4))]) is None


# ----------------------------------------------------------------------------------------------------------
# Box and mask IoU
# ----------------------------------------------------------------------------------------------------------

def test_box_iou_known_answers():
    assert metrics.box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert metrics.box_iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0  # touching, exclusive end: disjoint
    assert metrics.box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert metrics.box_iou([0, 0, 10, 10], [5, 5, 15, 15]) == pytest.approx(25 / 175)
    assert metrics.box_iou([0, 0, 10, 10], [2, 2, 4, 4]) == pytest.approx(4 / 100)
    assert metrics.box_iou([3, 3, 3, 3], [3, 3, 3, 3]) == 0.0


def test_box_iou_rejects_inverted_box():
    with pytest.raises(ValueError, match=r"\[5, 0, 2, 4\]"):
        metrics.box_iou([5, 0, 2, 4], [0, 0, 1, 1])


def test_mask_iou_known_answers():
    pred, gt = np.zeros((8, 8), bool), np.zeros((8, 8), np.uint8)
    assert metrics.mask_iou(pred, gt) is None
    gt[0:4, 0:4] = 255
    assert metrics.mask_iou(pred, gt) == 0.0
    pred[0:4, 2:6] = True  # 8 shared pixels, 24 in the union
    assert metrics.mask_iou(pred, gt) == pytest.approx(8 / 24)
    assert metrics.mask_iou(gt, gt) == 1.0


def test_component_boxes_use_8_connectivity_and_sort_by_area():
    mask = np.zeros((10, 10), bool)
    mask[1, 1] = mask[2, 2] = True  # diagonal pair: one component
    mask[5:8, 4:9] = True
    assert metrics.component_boxes(mask) == [(15, [4, 5, 9, 8]), (2, [1, 1, 3, 3])]


def test_largest_blob_box_iou_known_answers():
    gt = np.zeros((20, 20), bool)
    gt[2:10, 2:10] = True  # largest region, box [2, 2, 10, 10]
    gt[15:17, 15:17] = True
    pred = np.zeros((20, 20), bool)
    assert metrics.largest_blob_box_iou(pred, gt) == 0.0
    pred[4:12, 2:10] = True  # box [2, 4, 10, 12]: 48 shared, 80 in the union
    pred[15:17, 15:17] = True  # smaller blob, ignored
    assert metrics.largest_blob_box_iou(pred, gt) == pytest.approx(48 / 80)
    assert metrics.largest_blob_box_iou(pred, np.zeros_like(gt)) is None


def test_region_box_iou_known_answers():
    gt = np.zeros((20, 20), bool)
    gt[0:4, 0:4] = True
    gt[10:14, 10:14] = True
    pred = np.zeros((20, 20), bool)
    assert metrics.region_box_iou(pred, gt) == 0.0
    pred[0:4, 0:4] = True  # exact match: 1.0
    pred[10:12, 10:14] = True  # half of the second region: 0.5
    assert metrics.region_box_iou(pred, gt) == pytest.approx(0.75)
    assert metrics.region_box_iou(pred, np.zeros_like(gt)) is None
    with pytest.raises(ValueError, match=r"\(20, 20\).*\(8, 8\)"):
        metrics.region_box_iou(pred, np.zeros((8, 8)))


# ----------------------------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------------------------

def test_classification_metrics_known_confusion_matrix():
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    verdicts = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]  # TP 3, FN 1, FP 1, TN 5
    result = metrics.classification_metrics(labels, verdicts)
    assert (result["tp"], result["fn"], result["fp"], result["tn"]) == (3, 1, 1, 5)
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["tpr"] == pytest.approx(0.75)
    assert result["tnr"] == pytest.approx(5 / 6)
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, verdicts))
    assert result["f1"] == pytest.approx(f1_score(labels, verdicts)) and result["f1"] == pytest.approx(0.75)


def test_classification_metrics_undefined_parts_are_none():
    good_only = metrics.classification_metrics(["OK", "OK", "OK"], ["OK", "NOK", "OK"])
    assert good_only["tpr"] is None and good_only["balanced_accuracy"] is None
    assert good_only["tnr"] == pytest.approx(2 / 3) and good_only["f1"] == 0.0
    assert metrics.classification_metrics([0, 0], [0, 0])["f1"] is None
    with pytest.raises(ValueError, match="'BAD'"):
        metrics.classification_metrics(["OK"], ["BAD"])
