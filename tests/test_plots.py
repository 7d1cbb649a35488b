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
    fpr, pro = metrics.pro_curve([mask], [anomaly_map])
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
