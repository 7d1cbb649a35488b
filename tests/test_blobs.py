import cv2
import numpy as np
import pytest
import skimage.exposure

from oracles import lowest_clean_threshold
from utils.blobs import Blob, blob_score, decide, find_blobs, largest_blob_area


def two_rectangles_and_a_diagonal() -> np.ndarray:
    mask = np.zeros((32, 32), dtype=bool)
    mask[3:8, 2:10] = True  # 8 wide × 5 high = 40 px
    mask[20:23, 20:24] = True  # 4 wide × 3 high = 12 px
    for step in range(6):  # touches only corner to corner: one blob under 8-connectivity, six under 4
        mask[2 + step, 25 + step] = True
    return mask


def map_with_square(side_x: int, side_y: int, value: float = 0.8, size: int = 32) -> np.ndarray:
    residual_map = np.zeros((size, size))
    residual_map[5:5 + side_y, 7:7 + side_x] = value
    return residual_map


def smooth_random_map(seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).random((32, 32)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


def test_find_blobs_areas_boxes_and_centroids():
    blobs = find_blobs(two_rectangles_and_a_diagonal())
    assert [blob.area for blob in blobs] == [40, 12, 6]
    assert blobs[0] == Blob(area=40, bbox=[2, 3, 10, 8], centroid=(5.5, 5.0))
    assert blobs[1].bbox == [20, 20, 24, 23]
    assert blobs[2].bbox == [25, 2, 31, 8]
    assert blobs[2].centroid == pytest.approx((27.5, 4.5))


def test_find_blobs_accepts_0_255_masks_and_empty_masks():
    mask = two_rectangles_and_a_diagonal().astype(np.uint8) * 255
    assert [blob.area for blob in find_blobs(mask)] == [40, 12, 6]
    assert find_blobs(np.zeros((8, 8), bool)) == []
    assert largest_blob_area(np.zeros((8, 8), bool)) == 0
    with pytest.raises(ValueError, match=r"2-D H×W array, got shape \(2, 8, 8\)"):
        find_blobs(np.zeros((2, 8, 8), bool))


# Below min_area only the whole map (value 0) still forms a 20 px blob, so the score drops to 0.
@pytest.mark.parametrize("blob_area, expected, expected_score", [(19, "OK", 0.0), (20, "NOK", 0.8),
                                                                 (21, "NOK", 0.8)])
def test_calibrated_rule_at_and_around_min_area(blob_area, expected, expected_score):
    residual_map = map_with_square(4, 5)  # 20 px at 0.8
    residual_map[5, 7] = 0.0 if blob_area == 19 else 0.8
    if blob_area == 21:
        residual_map[10, 7] = 0.8  # one pixel more below the square
    decision = decide(residual_map, rule="calibrated", threshold=0.5, min_area=20)
    assert decision.max_blob_area == blob_area
    assert decision.verdict == expected
    assert decision.defect_mask.sum() == blob_area
    assert decision.score == expected_score
    assert decision.rule == "calibrated" and decision.threshold == 0.5 and decision.min_area == 20


def test_calibrated_rule_threshold_is_inclusive():
    residual_map = map_with_square(5, 5, value=0.5)
    assert decide(residual_map, rule="calibrated", threshold=0.5, min_area=25).verdict == "NOK"
    assert decide(residual_map, rule="calibrated", threshold=0.5000001, min_area=25).verdict == "OK"


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_area", [1, 7, 60])
def test_score_agrees_with_blob_rule_at_every_threshold(seed, min_area):
    residual_map = smooth_random_map(seed)
    score = blob_score(residual_map, min_area)
    thresholds = list(np.quantile(residual_map, np.linspace(0, 1, 15)))
    thresholds += [score, float(np.nextafter(score, np.inf)), float(np.nextafter(score, -np.inf))]
    for threshold in thresholds:
        decision = decide(residual_map, rule="calibrated", threshold=float(threshold), min_area=min_area)
        assert decision.score == score
        assert (decision.verdict == "NOK") == (score >= threshold), threshold


@pytest.mark.parametrize("min_area", [1, 5, 40])
def test_blob_score_equals_brute_force_search(min_area):
    residual_map = smooth_random_map(9)[:16, :16]
    passing = [value for value in np.unique(residual_map)
               if largest_blob_area(residual_map >= value) >= min_area]
    assert blob_score(residual_map, min_area) == float(max(passing))


def test_blob_score_of_one_square():
    residual_map = map_with_square(4, 5, value=0.8)
    residual_map[20, 20] = 0.9  # a brighter single pixel does not make a 20 px blob
    assert blob_score(residual_map, 20) == pytest.approx(0.8)
    assert blob_score(residual_map, 1) == pytest.approx(0.9)
    assert blob_score(residual_map, 21) == 0.0  # only the whole background reaches 21 px


def test_seed_rule_hand_computed_verdicts():
    """Zero map with a w×w square of ones, so every step can be followed by hand.

    OpenCV's 5×5 Gaussian with sigma 0 is separable, the binomial [1, 4, 6, 4, 1] / 16: across the square the
    blurred profile is 11/16, 15/16, 1, …, 1, 15/16, 11/16 and outside 5/16, 1/16. The largest bin centre is
    255 less half a bin (255/256 · ½), so the threshold is ≈ 169.7 and a pixel is defective where
    p(row) · p(col) · 255 exceeds it: the inner (w−2)² pixels plus the edge pixels whose other profile value
    is 1, i.e. (w − 2)² + 4 (w − 4) pixels. For w = 6: 24 px, contour area 17.5 → OK. For w = 14: 184 px → NOK.
    """
    for side, expected_pixels, expected_verdict in ((6, 24, "OK"), (14, 184, "NOK")):
        residual_map = np.zeros((64, 64), np.float32)
        residual_map[20:20 + side, 30:30 + side] = 1.0
        decision = decide(residual_map, rule="seed")
        assert decision.threshold == pytest.approx(2 / 3 * (255 - 255 / 512), abs=0.05)
        assert decision.defect_mask.sum() == expected_pixels
        assert not decision.defect_mask[20, 30] and decision.defect_mask[21, 31]  # corner out, inner corner in
        assert decision.score == decision.max_blob_area
        assert decision.verdict == expected_verdict
        assert decision.min_area == 85 and decision.rule == "seed"


def test_seed_rule_threshold_is_two_thirds_of_the_largest_bin_centre():
    residual_map = np.full((48, 48), 0.2, np.float32)
    residual_map[5:15, 5:15] = 0.0
    residual_map[30:40, 25:45] = 0.9
    blurred = cv2.GaussianBlur(residual_map, (5, 5), 0) * 255
    counts, bin_centers = skimage.exposure.histogram(blurred)
    expected_threshold = 2 / 3 * bin_centers.max()
    assert 150 < expected_threshold < 155  # 2/3 of ≈ 0.9 · 255
    decision = decide(residual_map, rule="seed")
    assert decision.threshold == pytest.approx(expected_threshold)
    np.testing.assert_array_equal(decision.defect_mask, blurred > expected_threshold)
    assert decision.verdict == "NOK"  # the 10×20 bright region, not the background


def test_seed_rule_uniform_background_with_faint_spot_is_ok():
    residual_map = np.full((48, 48), 0.1, np.float32)
    residual_map[20:23, 20:23] = 0.5  # a 3×3 spot: the threshold adapts to it, but it is small
    decision = decide(residual_map, rule="seed")
    assert decision.verdict == "OK" and decision.max_blob_area < 85


def test_seed_rule_perfect_reconstruction_is_ok():
    decision = decide(np.zeros((32, 32)), rule="seed")
    assert decision.verdict == "OK" and decision.score == 0.0 and not decision.defect_mask.any()


def test_lowest_clean_threshold_on_known_squares():
    first = map_with_square(5, 5, value=0.4)  # 25 px at 0.4
    second = map_with_square(3, 3, value=0.7)  # 9 px at 0.7 ...
    second[20:26, 20:26] = 0.3  # ... and 36 px at 0.3
    threshold = lowest_clean_threshold([first, second], min_area=20)
    assert 0.4 < threshold < 0.4 + 1e-6
    for residual_map in (first, second):
        assert decide(residual_map, rule="calibrated", threshold=threshold, min_area=20).verdict == "OK"
    assert decide(first, rule="calibrated", threshold=0.4, min_area=20).verdict == "NOK"
    assert 0.7 < lowest_clean_threshold(np.stack([first, second]), min_area=5) < 0.7 + 1e-6


def test_lowest_clean_threshold_survives_float32():
    residual_map = map_with_square(5, 5, value=0.4).astype(np.float32)
    threshold = lowest_clean_threshold([residual_map], min_area=25)
    assert not (residual_map >= np.float32(threshold)).any()
    assert threshold > float(np.float32(0.4))


@pytest.mark.parametrize("arguments, message", [
    ({"rule": "otsu"}, r"rule must be one of \('calibrated', 'seed'\), got 'otsu'"),
    ({"rule": "calibrated", "min_area": 5}, "needs a finite threshold, got None"),
    ({"rule": "calibrated", "threshold": 0.5}, "needs min_area, got None"),
    ({"rule": "calibrated", "threshold": 0.5, "min_area": 0}, "min_area must be an integer ≥ 1, got 0"),
    ({"rule": "calibrated", "threshold": 0.5, "min_area": 2.5}, "got 2.5"),
    ({"rule": "calibrated", "threshold": 0.5, "min_area": 2000}, "min_area 2000 exceeds the map's 1024 pixels"),
    ({"rule": "seed", "threshold": 0.5}, "computes its own threshold per image; got threshold=0.5"),
])
def test_decide_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        decide(np.zeros((32, 32)), **arguments)


def test_decide_rejects_bad_maps():
    with pytest.raises(ValueError, match=r"got shape \(1, 32, 32\)"):
        decide(np.zeros((1, 32, 32)), threshold=0.5, min_area=5)
    with pytest.raises(ValueError, match="finite"):
        decide(np.full((8, 8), np.nan), threshold=0.5, min_area=5)


def test_blobs_on_photo_cover_their_pixels_on_the_stretched_photo():
    from utils.blobs import blobs_on_photo

    mask = np.zeros((8, 8), bool)
    mask[1:4, 2:5] = True  # 3 × 3
    mask[6, 7] = True
    blobs = find_blobs(mask)
    for photo_shape in ((16, 24), (8, 8), (20, 30), (5, 7)):  # enlarged by whole factors, as is, by fractions, shrunk
        on_photo = blobs_on_photo(blobs, mask.shape, photo_shape)
        assert [blob.area for blob in on_photo] == [9, 1]  # areas stay in the decision's pixels
        stretched = cv2.resize(mask.astype(np.uint8), photo_shape[::-1], interpolation=cv2.INTER_NEAREST)
        for blob in on_photo:
            x0, y0, x1, y1 = blob.bbox
            assert 0 <= x0 < x1 <= photo_shape[1] and 0 <= y0 < y1 <= photo_shape[0]
        if photo_shape == (16, 24):  # whole factors: exactly the stretched mask's own blobs
            assert [blob.bbox for blob in on_photo] == [blob.bbox for blob in find_blobs(stretched)]
            assert on_photo[0].centroid == pytest.approx(find_blobs(stretched)[0].centroid)
        if photo_shape == (8, 8):
            assert on_photo == blobs
