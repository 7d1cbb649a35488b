"""Every painter returns (image, mask) and the mask says where the image changed: the demo set's numpy painters
and the training-time TensorFlow painter, plus the preview sheet of `python -m utils.defects`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils.defects import (ANY_SIZE_MAX_COVERAGE, DEFECT_TYPES, PAINTERS, TEXTURED_MAX_COVERAGE, add_denoising_noise,
                           add_training_defect, main, paint_defect)
from utils.synthetic import render_part

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(64, 64, 1), (48, 48, 3), (40, 56, 3)]  # square (turned fill) and not (shifted only), gray and RGB


def grown(mask: np.ndarray, pixels: int) -> np.ndarray:
    """`mask` dilated by `pixels` in every direction (a square neighbourhood)."""
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def textured(shape, low: float = 0.0, high: float = 1.0):
    """A random float image, so that any foreign fill differs from it at every pixel."""
    import tensorflow as tf

    return tf.constant(np.random.default_rng(shape[1]).uniform(low, high, shape).astype(np.float32))


def paint(painter: str, image, **keywords):
    """One training-time defect by `painter`; the textured one's other photo is another random image."""
    other = textured(tuple(image.shape), low=0.1, high=0.9)[::-1]  # differs from `image` at every pixel
    return add_training_defect(image, other, painter=painter, **keywords)


# ---------------------------------------------------------------- demo-set painters (numpy)


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_demo_mask_covers_exactly_the_painted_defect(defect):
    for seed in range(4):
        part = render_part((seed, 11), 64)
        image, mask = paint_defect(part, defect, np.random.default_rng(seed))
        changed = (image != part.image).any(axis=-1)
        assert mask.dtype == bool and mask.shape == (64, 64) and mask.any()
        assert np.array_equal(image[~mask], part.image[~mask]), "a pixel outside the mask changed"
        # The mask is the defect's area: a few of its pixels may round back to their old uint8 value, but none
        # lies more than a couple of pixels from a changed one.
        assert not (mask & ~grown(changed, 2)).any(), "the mask reaches beyond what was painted"
        assert changed[mask].mean() > 0.9, "most of the mask should really differ from the defect-free photo"
        assert 0.001 < mask.mean() < 0.04, f"defect covers {mask.mean():.2%} of the image"
        assert (part.part_alpha[mask] > 0).all(), "a defect is painted on the part, never on the table alone"


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_demo_painter_depends_on_its_generator_alone(defect):
    part = render_part(5, 64)
    first, first_mask = paint_defect(part, defect, np.random.default_rng(2))
    again, again_mask = paint_defect(part, defect, np.random.default_rng(2))
    other, _ = paint_defect(part, defect, np.random.default_rng(3))
    assert np.array_equal(first, again) and np.array_equal(first_mask, again_mask)
    assert not np.array_equal(first, other)


def test_demo_defects_land_in_different_places():
    part = render_part(0, 64)
    centroids = {tuple(np.argwhere(paint_defect(part, "dent", np.random.default_rng(seed))[1]).mean(0).round())
                 for seed in range(4)}
    assert len(centroids) == 4


def test_unknown_demo_defect_is_rejected_with_its_name():
    with pytest.raises(ValueError, match="bubble"):
        paint_defect(render_part(0, 64), "bubble", np.random.default_rng(0))


# ---------------------------------------------------------------- training-time painter (TensorFlow)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("painter", PAINTERS)
def test_training_mask_is_positive_exactly_where_pixels_changed(shape, painter):
    import tensorflow as tf

    image = textured(shape)
    for seed in range(12):
        painted, mask = paint(painter, image, probability=1.0, seed=tf.constant([seed, 1]))
        painted, mask, original = painted.numpy(), mask.numpy(), image.numpy()
        assert painted.shape == shape and mask.shape == shape[:2] + (1,)
        assert 0.0 <= painted.min() and painted.max() <= 1.0 and 0.0 <= mask.min() and mask.max() <= 1.0
        covered = mask[:, :, 0] > 0
        changed = (painted != original).any(axis=-1)
        assert np.array_equal(covered, changed), f"seed {seed}: mask and changed pixels disagree"
        assert np.array_equal(painted[~covered], original[~covered])  # bit-identical outside the mask
        largest = {"basic": 0.04, "textured": TEXTURED_MAX_COVERAGE, "any-size": ANY_SIZE_MAX_COVERAGE}[painter]
        assert 0 < covered.sum() <= 2 * largest * shape[0] * shape[1]  # the coverage plus a soft rim


def test_any_size_painter_paints_patches_beyond_the_textured_ones_and_keeps_small_ones_common():
    import tensorflow as tf

    image = textured((64, 64, 1))

    def coverages(painter: str) -> np.ndarray:
        masks = [paint(painter, image, probability=1.0, seed=tf.constant([seed, 5]))[1].numpy() for seed in range(60)]
        return np.array([(mask > 0).mean() for mask in masks])

    textured_sizes, any_sizes = coverages("textured"), coverages("any-size")
    assert textured_sizes.max() <= 2 * TEXTURED_MAX_COVERAGE
    assert (any_sizes > 2 * TEXTURED_MAX_COVERAGE).sum() >= 5  # uneven bands, wide stains
    assert (any_sizes < 0.05).sum() >= 20  # pits and strokes stay common


@pytest.mark.parametrize("painter", PAINTERS)
def test_training_mask_leaves_out_covered_pixels_the_fill_did_not_change(painter):
    """On a flat image a shifted copy of it is the image itself: such a defect changes nothing, so no mask."""
    import tensorflow as tf

    image = tf.fill([48, 48, 1], 0.5)
    empty = 0
    for seed in range(16):
        painted, mask = paint(painter, image, probability=1.0, seed=tf.constant([seed, 2]))
        changed = (painted.numpy() != image.numpy())[:, :, 0]
        assert np.array_equal(mask.numpy()[:, :, 0] > 0, changed), f"seed {seed}"
        empty += not changed.any()
    assert 0 < empty < 16  # both cases were drawn: an unchanged image (flat-image copy) and a painted one


@pytest.mark.parametrize("painter", PAINTERS)
def test_training_painter_keeps_pixels_outside_the_mask_even_out_of_range(painter):
    import tensorflow as tf

    image = textured((40, 40, 3), low=-0.3, high=1.3)  # the clip of the blend must not touch unpainted pixels
    for seed in range(6):
        painted, mask = paint(painter, image, probability=1.0, seed=tf.constant([seed, 3]))
        outside = mask.numpy()[:, :, 0] == 0
        assert np.array_equal(painted.numpy()[outside], image.numpy()[outside])


@pytest.mark.parametrize("painter", PAINTERS)
def test_training_painter_leaves_an_undamaged_image_untouched_with_an_empty_mask(painter):
    import tensorflow as tf

    image = textured((32, 40, 3))
    for seed in range(4):
        painted, mask = paint(painter, image, probability=0.0, seed=tf.constant([seed, 4]))
        assert np.array_equal(painted.numpy(), image.numpy())
        assert mask.shape == (32, 40, 1) and not mask.numpy().any()


@pytest.mark.parametrize("painter", PAINTERS)
def test_training_painter_repeats_its_draw_for_a_seed_and_not_for_another(painter):
    import tensorflow as tf

    image = textured((48, 48, 1))
    first = [tensor.numpy() for tensor in paint(painter, image, probability=1.0, seed=tf.constant([7, 0]))]
    again = [tensor.numpy() for tensor in paint(painter, image, probability=1.0, seed=tf.constant([7, 0]))]
    other = paint(painter, image, probability=1.0, seed=tf.constant([8, 0]))[0].numpy()
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other)


def test_denoising_noise_is_repeatable_clipped_and_draws_saturated_lines():
    import tensorflow as tf

    image = tf.fill([32, 32, 1], 0.4)
    noisy = add_denoising_noise(image, sigma=0.1, seed=tf.constant([1, 2])).numpy()
    assert np.array_equal(noisy, add_denoising_noise(image, sigma=0.1, seed=tf.constant([1, 2])).numpy())
    assert 0.0 <= noisy.min() and noisy.max() <= 1.0
    assert 0.05 < (noisy - 0.4).std() < 0.3 and (noisy == 1.0).sum() >= 3  # σ 0.1 plus at least one bright line


# ---------------------------------------------------------------- the preview sheet and running as a script


def test_preview_sheet_shows_every_painter_above_its_mask(tmp_path):
    out = tmp_path / "sheet.png"
    main(["--out", str(out), "--size", "32", "--seed", "1"])
    sheet = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    tiles = len(DEFECT_TYPES) + 3 * len(PAINTERS)  # the demo defects, then three of each training painter
    assert sheet.shape == (64, 32 * tiles, 3)
    mask_row = sheet[32:, :, 0]
    assert all(mask_row[:, 32 * tile:32 * (tile + 1)].any() for tile in range(tiles)), "a painter drew no mask"


@pytest.mark.parametrize("command", [["utils/defects.py", "--help"], ["-m", "utils.defects", "--help"]])
def test_module_runs_as_a_file_and_with_dash_m(command):
    # From the project root, as the README runs it: a file puts utils/ (not the root) on sys.path.
    finished = subprocess.run([sys.executable, *command], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "preview sheet" in finished.stdout
