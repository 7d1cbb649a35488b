"""IoU_test.py and utils.evaluation on a tiny trained run: files, values recomputed from per_image.csv, edge sets."""
from __future__ import annotations

import csv
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from test_train import run_script
from utils.evaluation import METRIC_KEYS, RESULT_FILES, WORST_PER_KIND, DecisionRecord, dataset_name, evaluate
from utils.data import find_test_items

CSV_COLUMNS = ["path", "defect", "label", "verdict", "score", "max_blob_area", "iou_bbox", "iou_bbox_regions",
               "iou_mask"]


def read_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def optional_floats(rows: list[dict], key: str) -> list[float]:
    return [float(row[key]) for row in rows if row[key] != ""]


@pytest.fixture(scope="module")
def calibrated_results(tiny_run, tiny_demo):
    """One IoU_test.py run with the default (calibrated) rule: (completed process, results folder)."""
    result = run_script("IoU_test.py", "--model", str(tiny_run), "--data", str(tiny_demo), "--batch-size", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    return result, tiny_run / "results" / tiny_demo.name


# ---------------------------------------------------------------- bookkeeping


def test_worst_images_kept_are_the_lowest_scored_defective_and_highest_scored_good():
    record = DecisionRecord("calibrated")
    outcome = SimpleNamespace(threshold=0.5, min_area=4, blobs=[])
    scores = [0.9, 0.1, 0.7, 0.3, 0.5, 0.2, 0.8, 0.4]
    for order, score in enumerate(scores):
        for label in ("OK", "NOK"):
            row = {"path": f"{label}/{order}.png", "defect": "x", "label": label, "score": score,
                   "verdict": "NOK" if score >= 0.5 else "OK"}
            record.add(row, outcome, np.zeros((4, 4, 1), np.float32), [], 2 * order + (label == "NOK"))
    kept_defective = sorted(-priority for priority, _, _ in record.worst_defective)
    kept_good = sorted(priority for priority, _, _ in record.worst_good)
    assert kept_defective == sorted(scores)[:WORST_PER_KIND]
    assert kept_good == sorted(scores)[-WORST_PER_KIND:]
    assert len(record.rows) == 2 * len(scores)


def test_dataset_name_is_the_folder_or_the_parent_of_test(tmp_path):
    assert dataset_name(tmp_path / "magnetic_tile") == "magnetic_tile"
    assert dataset_name(tmp_path / "magnetic_tile" / "test") == "magnetic_tile"


def test_bad_options_are_rejected_before_any_model_is_loaded(tiny_demo, tmp_path):
    with pytest.raises(ValueError, match="maybe"):
        evaluate(None, tiny_demo, decision="maybe")
    with pytest.raises(ValueError, match="0"):
        evaluate(None, tiny_demo, batch_size=0)
    with pytest.raises(ValueError, match="No labelled test folders"):
        evaluate(None, tmp_path)


# ---------------------------------------------------------------- IoU_test.py end to end


def test_script_writes_every_metric_key_one_row_per_image_and_the_plots(calibrated_results, tiny_demo):
    result, folder = calibrated_results
    saved = json.loads((folder / "metrics.json").read_text())
    assert list(saved) == list(METRIC_KEYS)
    assert saved["decision"] == "calibrated" and saved["n_images"] == len(find_test_items(tiny_demo))
    for key in ("image_auroc", "pixel_auroc", "aupro", "iou_bbox_mean", "iou_mask_mean", "threshold"):
        assert isinstance(saved[key], float), key  # this set has both classes and masks: nothing is null
    rows = read_rows(folder / "per_image.csv")
    assert list(rows[0]) == CSV_COLUMNS and len(rows) == saved["n_images"]
    for name in RESULT_FILES:
        assert (folder / name).stat().st_size > 0, name
    for text in ("image AUROC", "AUPRO", "per defect type", "scratch", str(folder)):
        assert text in result.stdout, text


def test_metrics_json_agrees_with_a_recomputation_from_per_image_csv(calibrated_results):
    _, folder = calibrated_results
    saved = json.loads((folder / "metrics.json").read_text())
    rows = read_rows(folder / "per_image.csv")
    truth = np.array([row["label"] == "NOK" for row in rows])
    flagged = np.array([row["verdict"] == "NOK" for row in rows])
    scores = np.array([float(row["score"]) for row in rows])
    assert saved["accuracy"] == pytest.approx(np.mean(truth == flagged))
    assert saved["tpr"] == pytest.approx(flagged[truth].mean())
    assert saved["tnr"] == pytest.approx((~flagged[~truth]).mean())
    assert saved["balanced_accuracy"] == pytest.approx((saved["tpr"] + saved["tnr"]) / 2)
    assert saved["image_auroc"] == pytest.approx(roc_auc_score(truth, scores))
    assert saved["iou_bbox_mean"] == pytest.approx(np.mean(optional_floats(rows, "iou_bbox")))
    assert saved["iou_mask_mean"] == pytest.approx(np.mean(optional_floats(rows, "iou_mask")))
    assert len(optional_floats(rows, "iou_bbox")) == truth.sum()  # every defective image has a mask here
    assert np.array_equal(flagged, scores >= saved["threshold"])  # the calibrated rule: NOK ⇔ score ≥ threshold
    for defect, entry in saved["per_defect"].items():
        subset = [row for row in rows if row["defect"] == defect]
        assert entry["count"] == len(subset)
        assert entry["detected"] == sum(row["verdict"] == "NOK" for row in subset)
        if defect == "good":
            assert entry["image_auroc"] is None
        else:  # this defect type against the good images
            against_good = [row for row in rows if row["defect"] in ("good", defect)]
            assert entry["image_auroc"] == pytest.approx(roc_auc_score(
                [row["defect"] == defect for row in against_good], [float(row["score"]) for row in against_good]))


def test_decision_both_writes_each_rule_side_by_side(calibrated_results, tiny_run, tiny_demo):
    result = run_script("IoU_test.py", "--model", str(tiny_run), "--data", str(tiny_demo / "test"),
                        "--decision", "both")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tiny_run / "results" / tiny_demo.name  # a test/ folder is named after its parent
    seed, calibrated = (json.loads((folder / rule / "metrics.json").read_text()) for rule in ("seed", "calibrated"))
    assert seed["decision"] == "seed" and calibrated["decision"] == "calibrated"
    assert seed["threshold"] is None and seed["min_area"] == 85  # the seed rule thresholds each image itself
    single = json.loads((calibrated_results[1] / "metrics.json").read_text())
    assert calibrated == single  # one network pass, two rules: the calibrated half equals the calibrated run
    seed_rows = read_rows(folder / "seed" / "per_image.csv")
    assert [row["verdict"] == "NOK" for row in seed_rows] == [float(row["score"]) >= 85 for row in seed_rows]
    comparison = read_rows(folder / "comparison.csv")
    assert list(comparison[0]) == ["metric", "seed", "calibrated"]
    header = next(line for line in result.stdout.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "seed", "calibrated"]
    for rule in ("seed", "calibrated"):
        for name in RESULT_FILES:
            assert (folder / rule / name).is_file(), (rule, name)


def test_set_without_masks_and_with_a_corrupt_image(tiny_run, tiny_demo, tmp_path):
    shutil.copytree(tiny_demo / "test", tmp_path / "nomask" / "test")
    (tmp_path / "nomask" / "test" / "scratch" / "999.png").write_bytes(b"\x89PNG truncated")
    report = evaluate(tiny_run, tmp_path / "nomask" / "test")
    saved = report.evaluations["calibrated"].metrics
    expected = len(find_test_items(tiny_demo))
    assert saved["n_images"] == expected and len(report.skipped) == 1 and "999.png" in report.skipped[0]
    assert "999.png" in report.text and "skipped" in report.text
    for key in ("pixel_auroc", "aupro", "iou_bbox_mean", "iou_mask_mean"):
        assert saved[key] is None, key
    assert isinstance(saved["image_auroc"], float) and isinstance(saved["accuracy"], float)
    assert sum("no ground-truth masks" in note for note in report.notes) == 1
    folder = tiny_run / "results" / "nomask"
    rows = read_rows(folder / "per_image.csv")
    assert len(rows) == expected and not any("999.png" in row["path"] for row in rows)
    assert json.loads((folder / "metrics.json").read_text())["pixel_auroc"] is None
    assert not (folder / "pro.png").exists() and (folder / "roc.png").is_file()


def test_good_only_set_gives_null_auroc_and_says_why(tiny_run, tiny_demo, tmp_path):
    shutil.copytree(tiny_demo / "test" / "good", tmp_path / "goodonly" / "test" / "good")
    report = evaluate(tiny_run, tmp_path / "goodonly", decision="seed")
    saved = report.evaluations["seed"].metrics
    assert saved["image_auroc"] is None and saved["tpr"] is None and saved["balanced_accuracy"] is None
    assert saved["pixel_auroc"] is None and saved["aupro"] is None
    assert saved["accuracy"] == saved["tnr"] and saved["accuracy"] is not None
    assert any("only good images" in note for note in report.notes) and "only good images" in report.text
    folder = tiny_run / "results" / "goodonly"
    assert not (folder / "roc.png").exists() and (folder / "score_histogram.png").is_file()


def test_the_synthetic_check_scores_clean_and_painted_validation_images(tiny_run):
    from utils.evaluation import synthetic_check

    validation = json.loads((tiny_run / "config.json").read_text())["validation_files"]
    check = synthetic_check(tiny_run, seed=0)
    assert check["n_images"] == 2 * len(validation) and 0.0 <= check["synthetic_auroc"] <= 1.0
    assert synthetic_check(tiny_run, seed=0) == check  # the painted defects are fixed by the seed


@pytest.mark.parametrize("factor", [1.0, 0.25])
def test_synthetic_defects_are_painted_at_the_models_scale_as_training_paints_them(factor):
    import cv2
    import tensorflow as tf

    from utils.defects import add_synthetic_defects
    from utils.evaluation import painted_at_model_scale

    rows, columns = np.mgrid[0:256, 0:192]
    view = (0.2 + 0.6 * columns / 192 + 0.1 * np.sin(rows / 17))[:, :, None].astype(np.float32)  # smooth, no repeats
    size = (round(192 * factor), round(256 * factor))

    def shrunk(image: np.ndarray) -> np.ndarray:  # the photo on its way into the model
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], 1)

    overlaps = []
    for seed in range(12):
        clean, damaged = painted_at_model_scale(view, factor, seed=(seed, 0))
        assert clean.shape == damaged.shape == view.shape
        if factor == 1.0:
            np.testing.assert_array_equal(clean, view)  # the stretch mode's views are the model inputs already
        # Where the model sees damage is where the painter draws at the model's scale (strokes 1-3 model px
        # wide), not a defect painted at the photo's pixels and thinned on the way in (mean overlap 0.56 then).
        drawn = add_synthetic_defects(tf.constant(shrunk(view)), probability=1.0, seed=tf.constant((seed, 0)))[0]
        expected = np.abs(drawn.numpy() - shrunk(view)) > 0.02
        seen = np.abs(shrunk(damaged) - shrunk(clean)) > 0.02
        overlaps.append((expected & seen).sum() / max(1, (expected | seen).sum()))
    assert np.mean(overlaps) >= 0.75, np.round(overlaps, 2)
