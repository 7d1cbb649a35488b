"""The demo set generator: determinism, MVTec layout, files that hold what the painters drew, the command line.

The painters themselves (masks that match exactly what was painted) are tested in test_defects.py.
"""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils.synthetic import (
    DEFECT_TYPES,
    PART_KINDS,
    ensure_demo_set,
    generate_demo_set,
    render_part,
    render_sample,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(size=64, n_train_good=3, n_test_good=2, n_defective=len(DEFECT_TYPES), seed=3)


def file_bytes(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return generate_demo_set(tmp_path_factory.mktemp("demo") / "set", **SMALL)


def test_same_seed_gives_byte_identical_files(demo_root, tmp_path):
    again = generate_demo_set(tmp_path / "again", **SMALL)
    assert file_bytes(again) == file_bytes(demo_root)


def test_other_seed_gives_other_photos(demo_root, tmp_path):
    other = generate_demo_set(tmp_path / "other", **{**SMALL, "seed": 4})
    assert (other / "train/good/000.png").read_bytes() != (demo_root / "train/good/000.png").read_bytes()


def test_each_folder_draws_its_own_photos(demo_root):
    """Test photos must be new parts, not copies of training photos with the same index."""
    photos = [demo_root / "train/good/000.png", demo_root / "test/good/000.png"]
    photos += [demo_root / f"test/{defect}/000.png" for defect in DEFECT_TYPES]
    decoded = [cv2.imread(str(path)).astype(np.float32) for path in photos]
    for position, photo in enumerate(decoded[1:], start=1):
        assert np.abs(photo - decoded[0]).mean() > 4, photos[position]


def test_mvtec_layout_and_counts(demo_root):
    expected = {"demo.json", "train/good/000.png", "train/good/001.png", "train/good/002.png",
                "test/good/000.png", "test/good/001.png"}
    for defect in DEFECT_TYPES:
        expected |= {f"test/{defect}/000.png", f"ground_truth/{defect}/000_mask.png"}
    assert set(file_bytes(demo_root)) == expected
    assert not [p for p in demo_root.parent.iterdir() if p != demo_root], "staging folder left behind"
    recorded = json.loads((demo_root / "demo.json").read_text())
    assert {key: recorded[key] for key in SMALL} == SMALL


def test_photos_are_rgb_and_masks_are_binary_nonempty_and_same_size(demo_root):
    for defect in DEFECT_TYPES:
        image = cv2.imread(str(demo_root / f"test/{defect}/000.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(demo_root / f"ground_truth/{defect}/000_mask.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 255}, defect


def test_files_hold_exactly_what_render_sample_draws(demo_root):
    """Ties the files to the lower-level functions, so the mask tests of test_defects.py speak for the written set."""
    for defect in DEFECT_TYPES:
        image, mask = render_sample(f"test/{defect}", 0, seed=SMALL["seed"], size=SMALL["size"])
        stored = cv2.cvtColor(cv2.imread(str(demo_root / f"test/{defect}/000.png")), cv2.COLOR_BGR2RGB)
        stored_mask = cv2.imread(str(demo_root / f"ground_truth/{defect}/000_mask.png"), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(stored, image)
        assert np.array_equal(stored_mask > 0, mask)


def test_good_photos_vary_in_kind_pose_and_light():
    photos = [render_part(seed, 64) for seed in range(12)]
    assert {photo.kind for photo in photos} == set(PART_KINDS)
    first = photos[0].image.astype(np.float32)
    differences = [np.abs(first - photo.image.astype(np.float32)).mean() for photo in photos[1:]]
    assert min(differences) > 4, differences


def test_photo_does_not_depend_on_how_many_are_generated(demo_root, tmp_path):
    fewer = generate_demo_set(tmp_path / "fewer", **{**SMALL, "n_train_good": 1, "n_defective": 0})
    assert (fewer / "train/good/000.png").read_bytes() == (demo_root / "train/good/000.png").read_bytes()
    assert not (fewer / "ground_truth").exists()


def test_defective_photos_split_evenly_with_remainder_to_the_first_types(tmp_path):
    root = generate_demo_set(tmp_path / "uneven", size=32, n_train_good=1, n_test_good=0, n_defective=7)
    counts = [len(list((root / "test" / defect).glob("*.png"))) for defect in DEFECT_TYPES]
    assert counts == [2, 2, 1, 1, 1]


def test_ensure_reuses_a_matching_set_and_regenerates_otherwise(tmp_path):
    root = ensure_demo_set(tmp_path / "demo", **SMALL)
    (root / "marker.txt").write_text("survives only while the set is reused")
    ensure_demo_set(root, **SMALL)
    assert (root / "marker.txt").exists()

    (root / "test/good/001.png").unlink()  # an incomplete set is regenerated
    ensure_demo_set(root, **SMALL)
    assert (root / "test/good/001.png").exists() and not (root / "marker.txt").exists()

    ensure_demo_set(root, **{**SMALL, "n_train_good": 4})
    assert len(list((root / "train/good").glob("*.png"))) == 4
    assert json.loads((root / "demo.json").read_text())["n_train_good"] == 4


def test_refuses_to_replace_a_folder_that_is_not_a_demo_set(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "mine.png").write_bytes(b"precious")
    with pytest.raises(ValueError, match="not a demo set"):
        generate_demo_set(tmp_path / "photos", **SMALL)
    assert (tmp_path / "photos" / "mine.png").read_bytes() == b"precious"


@pytest.mark.parametrize("arguments, echoed", [
    ({"size": 16}, "16"), ({"n_train_good": 0}, "0"), ({"seed": -1}, "-1"), ({"n_defective": 2.5}, "2.5"),
])
def test_bad_parameters_are_rejected_with_the_value_echoed(tmp_path, arguments, echoed):
    with pytest.raises(ValueError, match=echoed):
        generate_demo_set(tmp_path / "bad", **{**SMALL, **arguments})
    assert not (tmp_path / "bad").exists()


def test_unknown_label_or_part_kind_is_rejected():
    with pytest.raises(ValueError, match="gear"):
        render_part(0, 64, kind="gear")
    with pytest.raises(ValueError, match="test/bubble"):
        render_sample("test/bubble", 0, seed=0, size=64)


@pytest.mark.parametrize("command", [["utils/synthetic.py"], ["-m", "utils.synthetic"]])
def test_command_line_runs_as_a_file_and_with_dash_m(command, tmp_path):
    """A file run puts utils/ on sys.path instead of the project root: the script must import utils.defects anyway."""
    finished = subprocess.run([sys.executable, *command, str(tmp_path / "demo"), "--size", "32", "--n-train-good", "1",
                               "--n-test-good", "0", "--n-defective", "1"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip().splitlines()[-1] == str(tmp_path / "demo")
    assert (tmp_path / "demo/test/scratch/000.png").is_file() and (tmp_path / "demo/ground_truth/scratch").is_dir()
