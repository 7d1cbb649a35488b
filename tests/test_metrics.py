"""Metrics against hand-computed answers, scikit-learn, the full-map oracles of tests/oracles.py and a brute force."""

import cv2
import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

import oracles
from utils import metrics
from utils.metrics import PixelScores


# ----------------------------------------------------------------------------------------------------------
# Brute-force PRO curve: every distinct map value as a threshold, explicit regions, explicit FPR. It checks
# the oracles, which are fast enough for the larger sets the streaming PixelScores is compared on.
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


def streamed(masks, maps) -> PixelScores:
    scores = PixelScores()
    for mask, anomaly_map in zip(masks, maps):
        scores.add(anomaly_map, mask)
    return scores


FPR_LIMITS = (0.1, 0.3, 1.0)


@pytest.mark.parametrize("seed, levels", [(0, None), (1, None), (2, 8), (3, 3)])
def test_oracle_aupro_matches_brute_force(seed, levels):
    masks, maps = make_fixture(seed, levels)
    for fpr_limit in FPR_LIMITS:
        expected = reference_aupro(masks, maps, fpr_limit)
        assert 0.05 < expected < 0.95  # the fixture is neither trivial nor hopeless
        assert oracles.aupro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(expected, abs=1e-9)


# ----------------------------------------------------------------------------------------------------------
# PixelScores: streamed pixel AUROC and AUPRO
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed, levels", [(2, 8), (3, 3), (4, 1000)])
def test_pixel_scores_equal_the_oracles_when_no_two_values_share_a_bin(seed, levels):
    masks, maps = make_fixture(seed, levels)  # values 1/levels apart, wider than any bin below 2.0
    scores = streamed(masks, maps)
    truth = np.concatenate([mask.ravel() for mask in masks])
    assert scores.auroc() == pytest.approx(roc_auc_score(truth, np.concatenate([m.ravel() for m in maps])))
    assert scores.auroc() == pytest.approx(oracles.pixel_auroc(masks, maps), abs=1e-12)
    for fpr_limit in FPR_LIMITS:
        assert scores.aupro(fpr_limit=fpr_limit) == pytest.approx(reference_aupro(masks, maps, fpr_limit), abs=1e-9)
    for streamed_points, exact_points in zip(scores.pro_curve(), oracles.pro_curve(masks, maps)):
        np.testing.assert_allclose(streamed_points, exact_points, atol=1e-12)


def smooth_maps_with_regions(seed: int, count: int = 12, size: int = 64):
    """Good images and images with one or two rectangular regions; maps of smooth noise in [0, 1], raised on
    the regions by a random amount, so that the regions are found, but not all of them at once."""
    rng = np.random.default_rng(seed)
    masks, maps = [], []
    for index in range(count):
        mask = np.zeros((size, size), bool)
        for _ in range(index % 3):
            y, x = rng.integers(0, size - 14, 2)
            mask[y:y + rng.integers(3, 14), x:x + rng.integers(3, 14)] = True
        noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 1.5)
        noise = (noise - noise.min()) / (noise.max() - noise.min())
        maps.append(np.clip(0.8 * noise + rng.random() * 0.4 * mask, 0.0, 1.0))
        masks.append(mask)
    return masks, maps


def with_outliers(maps):
    maps = [anomaly_map.copy() for anomaly_map in maps]
    maps[0][3, 3] = maps[1][40, 7] = 1e4  # a good image's pixel and, wherever the regions lie, others
    maps[4][10:12, 10:12] = 1e4
    maps[5][60, 60] = -1e4
    return maps


MAP_KINDS = {  # maps of the same set in the value ranges other anomaly maps have
    "1 − SSIM in [0, 2]": lambda maps: [1.2 * anomaly_map for anomaly_map in maps],
    "L2 in [0, 1], mostly near 0": lambda maps: [np.maximum(anomaly_map - 0.2, 0.0) ** 2 for anomaly_map in maps],
    "logits in [-12, 12]": lambda maps: [np.log(p / (1 - p)) for p in (np.clip(m, 6e-6, 1 - 6e-6) for m in maps)],
    "scaled into [0.2, 4.5]": lambda maps: [0.2 + 4.3 * anomaly_map for anomaly_map in maps],
    "outliers of ±1e4": with_outliers,
}


@pytest.mark.parametrize("kind", MAP_KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_scores_match_the_full_map_oracles_whatever_the_value_range(kind, seed):
    masks, maps = smooth_maps_with_regions(seed)
    maps = [anomaly_map.astype(np.float32) for anomaly_map in MAP_KINDS[kind](maps)]
    scores = PixelScores()
    memory = sum(array.nbytes for array in vars(scores).values() if isinstance(array, np.ndarray))
    for mask, anomaly_map in zip(masks, maps):
        scores.add(anomaly_map, mask)
    expected_aupro = oracles.aupro(masks, maps)
    assert 0.2 < expected_aupro < 0.95  # neither trivial nor hopeless
    assert scores.auroc() == pytest.approx(oracles.pixel_auroc(masks, maps), abs=1e-3)
    assert scores.aupro() == pytest.approx(expected_aupro, abs=1e-3)
    assert memory == sum(array.nbytes for array in vars(scores).values() if isinstance(array, np.ndarray))


def test_histogram_bins_follow_the_order_of_any_float32():
    values = np.array([-3e38, -1e4, -1.0, -1e-30, -1e-37, -0.0, 0.0, 1e-37, 1e-30, 0.5, 1.0, 2.0, 1e4, 3e38],
                      np.float32)
    bins = metrics.histogram_bins(values)
    assert np.all(np.diff(bins) >= 0) and bins[5] == bins[6]  # −0.0 and +0.0 are one score
    assert np.count_nonzero(np.diff(bins)) == values.size - 2  # every other value in a bin of its own
    one, near, nearer = metrics.histogram_bins(np.float32([1.0, 1.0 + 2 ** -11, 1.0 + 2 ** -13]))
    assert near == one + 1 and nearer == one  # bins 2^-11 of the magnitude wide


def test_pixel_scores_curve_runs_from_origin_to_one_one_and_integrates_to_aupro():
    masks, maps = make_fixture(7)
    scores = streamed(masks, maps)
    fpr, pro = scores.pro_curve()
    assert fpr.shape == pro.shape
    assert (fpr[0], pro[0], fpr[-1]) == (0.0, 0.0, 1.0) and pro[-1] == pytest.approx(1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
    assert metrics.integrate_pro_curve(fpr, pro) == pytest.approx(scores.aupro())


def test_aupro_of_perfect_map_is_one_and_of_inverted_map_is_zero():
    masks, _ = make_fixture(0)
    assert streamed(masks, [mask.astype(np.float32) for mask in masks]).aupro() == pytest.approx(1.0)
    assert streamed(masks, [(~mask).astype(np.float32) for mask in masks]).aupro() == pytest.approx(0.0)


def test_aupro_known_answer_one_region_found_one_missed():
    mask = np.zeros((8, 8), bool)
    mask[0:2, 0:2] = True
    mask[5:7, 5:7] = True
    anomaly_map = np.zeros((8, 8), np.float32)
    anomaly_map[0:2, 0:2] = 1.0  # second region scores like the background
    # Curve: (0, 0) -> (0, 0.5) -> (1, 1); at FPR 0.3 the PRO is 0.65; area (0.5 + 0.65) / 2 * 0.3.
    assert streamed([mask], [anomaly_map]).aupro() == pytest.approx(0.575)
    assert oracles.aupro([mask], [anomaly_map]) == pytest.approx(0.575)


def test_integrate_pro_curve_on_a_straight_line():
    line = np.linspace(0, 1, 11)
    assert metrics.integrate_pro_curve(line, line, fpr_limit=0.3) == pytest.approx(0.15)
    assert metrics.integrate_pro_curve(line, line, fpr_limit=0.25) == pytest.approx(0.125)


def test_pixel_metrics_are_null_without_defective_or_good_pixels_and_perfect_when_separated():
    scores = PixelScores()
    scores.add(np.full((8, 8), 0.1, np.float32), np.zeros((8, 8), bool))
    assert scores.auroc() is None and scores.aupro() is None and scores.pro_curve() is None
    all_defective = streamed([np.ones((8, 8), bool)], [np.zeros((8, 8))])
    assert all_defective.auroc() is None and all_defective.aupro() is None
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    scores.add(np.where(mask, 0.9, 0.1).astype(np.float32), mask)
    assert scores.auroc() == 1.0 and scores.aupro() == pytest.approx(1.0)


def test_pixel_scores_reject_bad_inputs():
    scores = streamed(*make_fixture(0))
    with pytest.raises(ValueError, match="0.0"):
        scores.aupro(fpr_limit=0.0)
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(16, 16\)"):
        scores.add(np.zeros((8, 8)), np.zeros((16, 16), bool))
    with pytest.raises(ValueError, match=r"2-D H×W mask, got shape \(1, 8, 8\)"):
        scores.add(np.zeros((1, 8, 8)), np.zeros((1, 8, 8), bool))
    for bad_value, shown in ((np.nan, r"\[nan\]"), (-np.inf, r"\[-inf\]"), (1e39, r"\[1e\+39\]")):
        anomaly_map = np.zeros((8, 8))
        anomaly_map[2, 3] = bad_value  # 1e39 is finite in float64, not in float32
        with pytest.raises(ValueError, match="finite float32 values, got " + shown):
            scores.add(anomaly_map, np.zeros((8, 8), bool))


# ----------------------------------------------------------------------------------------------------------
# Image AUROC
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
