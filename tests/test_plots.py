"""Each plot writes a PNG of the expected size that shows something (not a blank canvas)."""

import cv2
import numpy as np
import pytest

from utils import metrics, plots


def read_png(path):
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} does not decode as an image"
    return image


def assert_drawn(image, expected_height, expected_width):
    assert image.shape[:2] == (expected_height, expected_width)
    # A blank figure is one flat colour; a drawn one has many distinct colours from lines and text.
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20


def count_pixels_near(image, bgr, tolerance=40):
    return int(np.count_nonzero(np.all(np.abs(image.astype(int) - bgr) <= tolerance, axis=2)))


@pytest.fixture
def scored_images():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 20)
    return labels, rng.random(40) + 0.5 * labels


def test_roc_curve(tmp_path, scored_images):
    path = plots.save_roc_curve(*scored_images, tmp_path / "plots" / "roc.png")
    assert_drawn(read_png(path), 500, 600)
    with pytest.raises(ValueError, match="only label 1"):
        plots.save_roc_curve([1, 1], [0.2, 0.3], tmp_path / "one_class.png")


def test_pro_curve(tmp_path):
    mask = np.zeros((16, 16), bool)
    mask[4:9, 4:9] = True
    anomaly_map = np.random.default_rng(1).random((16, 16)) + 0.5 * mask
    scores = metrics.PixelScores()
    scores.add(anomaly_map, mask)
    fpr, pro = scores.pro_curve()
    assert_drawn(read_png(plots.save_pro_curve(fpr, pro, tmp_path / "pro.png")), 500, 600)


def test_score_histogram(tmp_path, scored_images):
    path = plots.save_score_histogram(*scored_images, 0.8, tmp_path / "histogram.png")
    assert_drawn(read_png(path), 450, 700)
    path = plots.save_score_histogram(*scored_images, None, tmp_path / "no_threshold.png")
    assert_drawn(read_png(path), 450, 700)


def test_overlay_grid_draws_red_predictions_and_green_ground_truth(tmp_path):
    image = np.full((32, 32, 3), 0.5, np.float32)
    items = [
        {"image": image, "predicted_boxes": [[4, 4, 20, 20]], "ground_truth_boxes": [[10, 10, 30, 30]],
         "caption": "NOK 0.91"},
        {"image": image[:, :, :1], "predicted_boxes": [], "ground_truth_boxes": [], "caption": "OK 0.10"},
        {"image": image[:, :, 0]},
    ]
    path = plots.save_overlay_grid(items, tmp_path / "grid.png", title="defects", columns=2)
    drawn = read_png(path)
    assert drawn.shape[:2] == (640, 600)  # 2 rows × 3 in + 0.4 in title, 2 columns × 3 in, at 100 dpi
    assert count_pixels_near(drawn, (0, 0, 255)) > 100  # red, BGR
    assert count_pixels_near(drawn, (0, 255, 0)) > 100  # green


def test_overlay_grid_rejects_empty_items(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        plots.save_overlay_grid([], tmp_path / "grid.png")


def test_training_curves(tmp_path):
    history = {"loss": [0.9, 0.5, 0.3], "val_loss": [1.0, 0.6, 0.4], "mae": [0.3, 0.2, 0.1],
               "val_mae": [0.35, 0.25, 0.15], "ssim": [0.5, 0.7, 0.8], "learning_rate": [1e-3] * 3}
    written = plots.save_training_curves(history, tmp_path / "loss.png", tmp_path / "metric.png")
    assert written == [tmp_path / "loss.png", tmp_path / "metric.png"]
    assert_drawn(read_png(written[0]), 400, 700)
    assert_drawn(read_png(written[1]), 800, 700)  # two metrics (mae, ssim), learning rate skipped


def test_training_curves_with_loss_only_writes_one_file(tmp_path):
    written = plots.save_training_curves({"loss": [1.0, 0.5]}, tmp_path / "loss.png", tmp_path / "metric.png")
    assert written == [tmp_path / "loss.png"]
    assert not (tmp_path / "metric.png").exists()
    with pytest.raises(ValueError, match="val_mae"):
        plots.save_training_curves({"val_mae": [1.0]}, tmp_path / "loss.png", tmp_path / "metric.png")


# ---------------------------------------------------------------- pictures of an inspected part


def inspection_result(*, anomaly_value=0.125, display_range=(0.0, 0.25)):
    """A 32×32 gray part with one 6×4 defect whose anomaly map is `anomaly_value` there and 0 elsewhere."""
    from utils.blobs import find_blobs
    from utils.inspector import InspectionResult

    image = np.full((32, 32, 1), 0.5, np.float32)
    anomaly_map = np.zeros((32, 32), np.float32)
    anomaly_map[10:14, 8:14] = anomaly_value
    mask = anomaly_map > 0
    blobs = find_blobs(mask)
    return InspectionResult(verdict="NOK", score=anomaly_value, threshold=0.05, min_area=10,
                            max_blob_area=float(blobs[0].area), blobs=blobs, input=image, reconstruction=image * 0.9,
                            anomaly_map=anomaly_map, defect_mask=mask, map_name="l2", display_range=display_range)


def test_heat_map_is_scaled_by_the_display_range_of_the_map():
    inferno = plots.colormaps["inferno"]
    expected_top = np.round(np.array(inferno(1.0)[:3]) * 255)
    expected_middle = np.round(np.array(inferno(128 / 255)[:3]) * 255)
    values = np.array([[-1.0, 0.0, 0.125, 0.25, 7.0, np.nan]], np.float32)
    picture = plots.heat_map(values, (0.0, 0.25))  # an L2-like range: 0.25 is already full colour
    assert picture.dtype == np.uint8 and picture.shape == (1, 6, 3)
    np.testing.assert_array_equal(picture[0, 0], picture[0, 1])  # below low: like low
    np.testing.assert_allclose(picture[0, 2], expected_middle, atol=1)
    np.testing.assert_allclose(picture[0, 3], expected_top, atol=1)
    np.testing.assert_array_equal(picture[0, 4], picture[0, 3])  # above high: like high
    np.testing.assert_array_equal(picture[0, 5], picture[0, 1])  # NaN: like low
    shifted = plots.heat_map(values + 1.0, (1.0, 1.25))  # the range moves the scale, not a fixed [0, 1]
    np.testing.assert_array_equal(shifted[0, :5], picture[0, :5])
    with pytest.raises(ValueError, match=r"\(0.5, 0.5\)"):
        plots.heat_map(values, (0.5, 0.5))


def test_result_pictures_are_rgb_and_show_the_defect_in_red():
    result = inspection_result()
    pictures = plots.result_pictures(result)
    assert list(pictures) == list(plots.RESULT_PICTURE_KINDS)
    for picture in pictures.values():
        assert picture.dtype == np.uint8 and picture.shape == (32, 32, 3)
    np.testing.assert_array_equal(pictures["input"], 128)  # gray 0.5 on all three channels
    np.testing.assert_array_equal(pictures["reconstruction"], 115)  # 0.45 × 255, rounded
    np.testing.assert_array_equal(pictures["residual"][11, 10], plots.heat_map(np.full((1, 1), 0.125), (0, 0.25))[0, 0])
    defect = pictures["defect"]
    np.testing.assert_array_equal(defect[11, 10], (191, 64, 64))  # inside: half gray, half red
    np.testing.assert_array_equal(defect[10, 8], (255, 0, 0))  # the blob's box, drawn on its edge pixels
    np.testing.assert_array_equal(defect[0, 0], (128, 128, 128))  # away from the defect: the input


def test_saved_inspection_images_are_the_rendered_pictures(tmp_path):
    result = inspection_result()
    written = plots.save_inspection_images(result, tmp_path / "test" / "part", code=np.random.default_rng(0)
                                           .random((4, 4, 8), dtype=np.float32), title="part.png")
    assert [path.name for path in written] == ["input.png", "reconstruction.png", "code.png", "residual.png",
                                               "defect.png", "overlay.png", "panel.png"]
    pictures = plots.result_pictures(result)
    for name, kind in (("input", "input"), ("reconstruction", "reconstruction"), ("residual", "residual"),
                       ("overlay", "defect")):
        np.testing.assert_array_equal(read_png(tmp_path / "test" / "part" / f"{name}.png")[:, :, ::-1], pictures[kind])
    mask = read_png(tmp_path / "test" / "part" / "defect.png")[:, :, 0]
    np.testing.assert_array_equal(mask == 255, result.defect_mask)
    assert_drawn(read_png(written[-1]), 320, 1620)  # six pictures: (6 × 2.6 in + 0.6 in) × 3.2 in at 100 dpi
