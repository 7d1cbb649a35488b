"""Calibration, the Inspector and test.py on a tiny trained run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SIZE
from test_tensorflow_startup import assert_quiet_start
from test_train import load_script, run_script
from utils import calibration
from utils.blobs import decide
from utils.data import decode_image, find_test_items


@pytest.fixture(scope="module")
def inspector(tiny_run):
    from utils.inspector import Inspector

    return Inspector.from_run(tiny_run, batch_size=3)


def test_default_min_area_scales_the_seed_85_px_with_image_area():
    assert calibration.default_min_area(256) == 85
    assert calibration.default_min_area(512) == 340
    assert calibration.default_min_area(32) == 4  # floor: a couple of pixels is noise, not a defect


def test_best_balanced_threshold_on_known_scores():
    scores = np.array([0.1, 0.2, 0.22, 0.5, 0.6, 0.25])
    labels = np.array([False, False, False, True, True, True])
    threshold, balanced = calibration.best_balanced_threshold(scores, labels)
    assert threshold == 0.25 and balanced == 1.0


def test_finetune_finds_the_area_that_separates_constructed_maps():
    """Good maps hold a bright 3×3 speck, defective ones a bright 6×6 patch: only min areas in (9, 36] separate."""
    good, defective = np.zeros((4, 32, 32)), np.zeros((4, 32, 32))
    for index in range(4):
        good[index, 5 + index:8 + index, 5:8] = 0.9
        defective[index, 10:16, 10 + index:16 + index] = 0.6
    maps = np.concatenate([good, defective])
    labels = np.array([False] * 4 + [True] * 4)
    best = calibration.finetune(maps, labels)
    assert best["balanced_accuracy"] == 1.0
    assert 9 < best["min_area"] <= 36 and 0.0 < best["threshold"] <= 0.6


def test_synthetic_calibration_takes_the_best_balanced_threshold_on_painted_held_out_images(tiny_run, tmp_path):
    from utils.blobs import blob_score
    from utils.evaluation import synthetic_pairs
    from utils.inspector import Inspector

    run_copy = Path(shutil.copytree(tiny_run, tmp_path / tiny_run.name))
    result = run_script("train.py", "--calibrate", str(run_copy), "--threshold-from", "synthetic")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(synthetic)" in result.stdout
    saved = json.loads((run_copy / "calibration.json").read_text())
    validation_threshold = saved["validation_max_score"] + 1e-6  # the default rule, at the same min area
    inspector = Inspector.from_run(run_copy)
    assert saved["method"] == "synthetic" and inspector.run.calibration["threshold"] == saved["threshold"]
    scores, labels = [], []
    for seed in calibration.SYNTHETIC_SEEDS:
        images, painted = synthetic_pairs(inspector, seed=seed)
        scores += [blob_score(anomaly_map, saved["min_area"]) for anomaly_map in inspector.maps_for(images)[2]]
        labels += painted
    scores, labels = np.array(scores), np.array(labels)
    assert saved["synthetic_images"] == len(scores) == 2 * len(saved["validation_images"]) * 3

    def balanced(threshold: float) -> float:
        flagged = scores >= threshold
        return 0.5 * ((flagged & labels).mean() / labels.mean() + (~flagged & ~labels).mean() / (~labels).mean())

    assert saved["synthetic_balanced_accuracy"] == pytest.approx(balanced(saved["threshold"]))
    assert balanced(saved["threshold"]) >= max(balanced(validation_threshold), *map(balanced, scores)) - 1e-9
    refused = run_script("train.py", "--calibrate", str(run_copy), "--threshold-from", "synthetic", "--finetune",
                         str(tmp_path))
    assert refused.returncode == 2 and "choose one of --finetune DIR and --threshold-from synthetic" in refused.stderr


def test_calibration_json_and_no_validation_image_flagged(tiny_run, inspector):
    saved = json.loads((tiny_run / "calibration.json").read_text())
    assert saved["method"] == "validation" and saved["min_area"] == calibration.default_min_area(TINY_SIZE)
    assert saved["ssim_window"] == 11 and saved["ssim_sigma"] == 1.5
    images = [decode_image(path) for path in saved["validation_images"]]
    assert images and all(result.verdict == "OK" for result in inspector.inspect(images))  # MVTec procedure
    assert saved["threshold"] > saved["validation_max_score"]


def test_batch_inspection_equals_one_by_one(tiny_demo, inspector):
    images = [decode_image(item.path) for item in find_test_items(tiny_demo)[:5]]
    together = inspector.inspect(images)
    for image, batched in zip(images, together):
        alone = inspector.inspect([image])[0]
        assert alone.verdict == batched.verdict
        np.testing.assert_allclose(alone.anomaly_map, batched.anomaly_map, atol=1e-5)
        assert alone.score == pytest.approx(batched.score, abs=1e-4)
        assert batched.anomaly_map.shape == image.shape[:2] and batched.input.shape == (*image.shape[:2], 1)
        assert batched.decision_map.shape == (TINY_SIZE, TINY_SIZE)  # stretch decides at model resolution


def test_any_size_and_rgb_input_is_accepted(inspector):
    import cv2

    rgb = (np.random.default_rng(0).random((50, 90, 3)) * 255).astype(np.uint8)
    result = inspector.inspect([rgb, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)])
    assert [r.anomaly_map.shape for r in result] == [(50, 90)] * 2
    np.testing.assert_allclose(result[0].anomaly_map, result[1].anomaly_map, atol=1e-5)  # RGB → grayscale


def test_seed_decision_is_the_seed_rule_on_the_same_map(tiny_run, tiny_demo):
    from utils.inspector import Inspector

    seed_inspector = Inspector.from_run(tiny_run, decision="seed")
    image = decode_image(find_test_items(tiny_demo)[-1].path)
    result = seed_inspector.inspect([image])[0]
    expected = decide(result.decision_map, rule="seed")
    assert result.rule == "seed" and result.verdict == expected.verdict and result.score == expected.score
    # another rule on the same maps, as IoU_test.py --decision both does, gives what that rule's Inspector gives
    redecided = Inspector.from_run(tiny_run).redecide(result)
    direct = Inspector.from_run(tiny_run).inspect([image])[0]
    assert (redecided.verdict, redecided.score, redecided.rule) == (direct.verdict, direct.score, "calibrated")
    np.testing.assert_array_equal(redecided.defect_mask, direct.defect_mask)


def test_stretch_reports_at_the_photo_pixels_what_it_decided_at_model_pixels(inspector):
    """A 45 × 130 photo: verdict and score come from the model-size map; map, mask, pictures and boxes are stretched
    back onto the photo, and every box covers the mask pixels of its blob."""
    import cv2

    from utils.blobs import find_blobs

    photo = (np.random.default_rng(1).random((45, 130)) * 255).astype(np.uint8)
    photo[10:30, 60:90] = 255  # something to find
    result = inspector.inspect([photo])[0]
    assert result.decision_map.shape == (TINY_SIZE, TINY_SIZE)
    assert result.anomaly_map.shape == result.defect_mask.shape == (45, 130)
    assert result.input.shape == result.reconstruction.shape == (45, 130, 1)
    np.testing.assert_allclose(result.input[..., 0], photo / 255.0, atol=1e-6)  # the photo itself, not resized
    at_model = decide(result.decision_map, rule="calibrated", threshold=result.threshold, min_area=result.min_area)
    assert (result.verdict, result.score) == (at_model.verdict, float(at_model.score))
    stretched = cv2.resize(at_model.defect_mask.astype(np.uint8), (130, 45), interpolation=cv2.INTER_NEAREST) > 0
    np.testing.assert_array_equal(result.defect_mask, stretched)
    # a low threshold so there are blobs to check: the same maps, decided again
    low = decide(result.decision_map, rule="calibrated", threshold=float(np.quantile(result.decision_map, 0.7)),
                 min_area=result.min_area)
    from utils.blobs import blobs_on_photo

    boxes = blobs_on_photo(low.blobs, low.defect_mask.shape, (45, 130))
    assert len(boxes) == len(low.blobs) > 0
    photo_mask = cv2.resize(low.defect_mask.astype(np.uint8), (130, 45), interpolation=cv2.INTER_NEAREST)
    for blob, on_photo in zip(low.blobs, boxes):
        x0, y0, x1, y1 = on_photo.bbox
        assert 0 <= x0 < x1 <= 130 and 0 <= y0 < y1 <= 45 and on_photo.area == blob.area
        own = np.zeros((TINY_SIZE, TINY_SIZE), np.uint8)
        mx0, my0, mx1, my1 = blob.bbox
        own[my0:my1, mx0:mx1] = low.defect_mask[my0:my1, mx0:mx1]
        own_on_photo = cv2.resize(own, (130, 45), interpolation=cv2.INTER_NEAREST) > 0
        ys, xs = np.nonzero(own_on_photo & (photo_mask > 0))
        if len(xs):
            assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    assert find_blobs(photo_mask)  # the stretched mask still holds the blobs


TEST_PICTURES = ["input.png", "code.png", "reconstruction.png", "residual.png", "defect.png", "overlay.png",
                 "panel.png"]


def test_test_script_prints_a_verdict_and_saves_every_picture(tiny_run, tiny_demo):
    result = run_script("test.py", "--model", str(tiny_run), "--data", str(tiny_demo), "--index", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert_quiet_start(result.stderr)
    first_line = result.stdout.strip().splitlines()[0]
    assert first_line.split()[0] in ("OK", "NOK") and "score" in first_line and "largest blob" in first_line
    item = find_test_items(tiny_demo)[0]
    folder = tiny_run / "test" / f"{item.defect}_{item.path.stem}"
    for name in TEST_PICTURES:
        assert (folder / name).stat().st_size > 0, name


def test_test_script_rejects_an_unreadable_image_with_exit_2(tiny_run, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    result = run_script("test.py", "--model", str(tiny_run), "--image", str(broken))
    assert result.returncode == 2 and "broken.png" in result.stderr


def picture_folder_of(stdout: str) -> Path:
    lines = [line for line in stdout.splitlines() if line.startswith("pictures: ")]
    assert len(lines) == 1, stdout
    return Path(lines[0].removeprefix("pictures: "))


def test_same_named_images_of_different_folders_keep_their_own_pictures(tiny_run, tiny_demo, tmp_path, capsys):
    """crack/006.png and dent/006.png used to share RUN/test/006/: the second overwrote the first's pictures."""
    script = load_script("test.py")
    sources = {defect: next(item.path for item in find_test_items(tiny_demo) if item.defect == defect)
               for defect in ("crack", "dent")}
    folders = {}
    for defect, source in sources.items():
        (tmp_path / defect).mkdir()
        shutil.copy(source, tmp_path / defect / "006.png")
        assert script.main(["--model", str(tiny_run), "--image", str(tmp_path / defect / "006.png")]) == 0
        folders[defect] = picture_folder_of(capsys.readouterr().out)
    assert folders["crack"] != folders["dent"]
    assert all(folder.parent == tiny_run / "test" and defect in folder.name for defect, folder in folders.items())
    # Each folder still shows its own image (the two sources differ, so their input pictures differ too).
    assert not np.array_equal(decode_image(folders["crack"] / "input.png"), decode_image(folders["dent"] / "input.png"))

@pytest.mark.parametrize("file_name", ["...png", "..png", ".png", "-.png"])
def test_a_dot_named_image_writes_inside_the_test_folder(tiny_run, tiny_demo, tmp_path, capsys, file_name):
    """Path("...png").stem is "..": RUN/test/.. is the run folder itself."""
    run = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("test", "results"))
    image = tmp_path / file_name
    shutil.copy(find_test_items(tiny_demo)[0].path, image)
    assert load_script("test.py").main(["--model", str(run), "--image", str(image)]) == 0
    folder = picture_folder_of(capsys.readouterr().out)
    assert folder.parent == run / "test" and folder.name not in ("", ".", "..")
    assert not folder.name.startswith(".")  # no hidden picture folders either
    assert (folder / "input.png").is_file() and not (run / "input.png").exists()
