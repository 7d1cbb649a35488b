"""Loaders: MVTec layout and plain folders, mixed sizes, a corrupt file, masks staying aligned, the split, and the
training pipeline (the painters themselves are tested in test_defects.py)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from utils import data
from utils.preprocessing import Stretch

GRAY_32 = Stretch(size=32, color_mode="grayscale")


def write_image(path: Path, height: int, width: int, value: int = 128, channels: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((height, width, channels), value, np.uint8)
    cv2.imwrite(str(path), image)
    return path


def test_plain_folder_is_recursive_sorted_and_skips_other_files(tmp_path):
    write_image(tmp_path / "b.png", 20, 30)
    write_image(tmp_path / "sub" / "a.jpg", 50, 10)
    write_image(tmp_path / "c.bmp", 8, 8)
    (tmp_path / "notes.txt").write_text("not an image")
    layout = data.find_layout(tmp_path)
    assert layout.kind == "folder"
    assert [p.name for p in layout.train_files] == ["b.png", "c.bmp", "a.jpg"]


def test_mvtec_layout_finds_labels_and_masks(tiny_demo):
    layout = data.find_layout(tiny_demo)
    assert layout.kind == "mvtec" and len(layout.train_files) == 16
    defective = [item for item in layout.test_items if item.is_defective]
    good = [item for item in layout.test_items if not item.is_defective]
    assert len(defective) == 10 and len(good) == 4
    assert all(item.mask_path is not None and item.mask_path.is_file() for item in defective)
    assert all(item.mask_path is None for item in good)
    assert data.find_test_items(tiny_demo / "test") == layout.test_items  # the test/ folder itself works too


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_folder_explains_the_layout(tmp_path, make):
    folder = tmp_path / "images"
    if make == "empty":
        folder.mkdir()
    with pytest.raises(ValueError, match="train/good"):
        data.find_layout(folder)


def test_decode_names_the_corrupt_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png"):
        data.decode_image(bad)


@pytest.mark.parametrize("color_mode, channels", [("grayscale", 1), ("rgb", 3)])
def test_color_mode_keeps_the_size_and_model_inputs_are_square_unit_range(color_mode, channels):
    for shape in [(100, 37), (13, 200, 3), (64, 64, 1)]:
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        converted = data.to_color_mode(image, color_mode)
        assert converted.shape == shape[:2] + (channels,) and converted.dtype == np.uint8
        prepared = Stretch(size=32, color_mode=color_mode).to_model(image)
        assert prepared.shape == (32, 32, channels) and prepared.dtype == np.float32
        assert 0.0 <= prepared.min() and prepared.max() <= 1.0


def test_colour_is_told_from_the_pixels_not_from_how_the_photo_is_stored(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(60, 200, (48, 48, 1), dtype=np.uint8)
    grey_as_rgb = np.clip(np.repeat(grey, 3, axis=2).astype(int) + rng.integers(-3, 4, (48, 48, 3)), 0, 255)
    rusty = np.repeat(grey, 3, axis=2)
    rusty[20:26, 20:26] = (170, 90, 40)  # 36 of 2304 pixels (1.6 %), orange
    faint = np.repeat(grey, 3, axis=2)
    faint[:4, :4] = (170, 90, 40)  # 16 pixels (0.7 %): below the fraction that makes a colour photo
    assert not data.carries_colour(grey) and not data.carries_colour(grey_as_rgb.astype(np.uint8))
    assert data.carries_colour(rusty) and not data.carries_colour(faint)

    files = [tmp_path / f"{index:02d}.png" for index in range(20)]
    for path in files:
        cv2.imwrite(str(path), grey_as_rgb.astype(np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert data.colour_mode_of([broken, *files]) == "grayscale"  # the unreadable one is passed over
    cv2.imwrite(str(files[-1]), rusty[:, :, ::-1])  # the last of 20: still among the photos looked at
    assert data.colour_mode_of(files) == "rgb"
    assert data.colour_mode_of([]) == "grayscale"


def test_mask_stays_aligned_with_its_image(tmp_path):
    """A bright square in a 300×120 image and the same square in its mask land on the same pixels: the mask is
    kept at the photo's own pixels, where every mode's outputs are compared with it."""
    image = np.zeros((120, 300), np.uint8)
    image[30:60, 150:210] = 255
    cv2.imwrite(str(tmp_path / "img.png"), image)
    cv2.imwrite(str(tmp_path / "img_mask.png"), image)
    preprocessing = Stretch(size=64, color_mode="grayscale")
    photo = data.decode_image(tmp_path / "img.png")
    mask = preprocessing.mask_for(data.decode_mask(tmp_path / "img_mask.png"), photo.shape)
    assert mask.shape == (120, 300) and mask.sum() == 30 * 60
    np.testing.assert_array_equal(mask, photo[..., 0] > 127)


def test_split_is_deterministic_and_disjoint():
    files = [Path(f"{index:03d}.png") for index in range(50)]
    train_a, validation_a = data.split_validation(files, fraction=0.1, seed=3)
    train_b, validation_b = data.split_validation(files, fraction=0.1, seed=3)
    _, validation_c = data.split_validation(files, fraction=0.1, seed=4)
    assert (train_a, validation_a) == (train_b, validation_b)
    assert len(validation_a) == 5 and not set(train_a) & set(validation_a)
    assert validation_a != validation_c


def test_pipeline_streams_mixed_sizes_and_skips_a_corrupt_file(tmp_path):
    files = [write_image(tmp_path / f"{index}.png", 20 + 7 * index, 45, value=40 * index) for index in range(5)]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    skipped: set[str] = set()
    train, validation = data.training_datasets(files[:4] + [corrupt], files[4:], batch_size=2, seed=0,
                                               preprocessing=Stretch(size=16, color_mode="rgb"), skipped=skipped)
    train_batches = [inputs.numpy() for inputs, targets in train]
    assert sum(len(batch) for batch in train_batches) == 4
    assert all(batch.shape[1:] == (16, 16, 3) for batch in train_batches)
    assert skipped == {str(corrupt)}
    (inputs, targets), = list(validation)
    np.testing.assert_allclose(inputs.numpy(), 160 / 255, atol=1e-6)
    np.testing.assert_array_equal(inputs.numpy(), targets.numpy())


def test_denoising_input_is_noisy_and_target_clean(tmp_path):
    files = [write_image(tmp_path / f"{index}.png", 32, 32, value=100) for index in range(4)]
    train, _ = data.training_datasets(files[:3], files[3:], preprocessing=GRAY_32, batch_size=3, seed=0, noise=True)
    inputs, targets = next(iter(train))
    np.testing.assert_allclose(targets.numpy(), 100 / 255, atol=1e-6)
    difference = inputs.numpy() - targets.numpy()
    assert 0.05 < difference.std() < 0.3  # gaussian σ 0.1 plus bright lines
    assert (inputs.numpy() >= 0.999).sum() >= 3  # at least one saturated bright line per image (clipping aside)


def test_training_triple_masks_exactly_where_the_input_was_damaged():
    import tensorflow as tf

    image = tf.constant(np.random.default_rng(0).uniform(0.2, 0.8, (32, 32, 1)).astype(np.float32))
    make_triple = data.training_triple(noise=False, defects=True)
    damaged_count = 0
    for seed in range(8):
        inputs, targets, masks = (tensor.numpy() for tensor in make_triple(image, image, tf.constant([seed, 0])))
        np.testing.assert_array_equal(targets, image.numpy())
        assert masks.shape == (32, 32, 1)
        np.testing.assert_array_equal(masks > 0, inputs != targets)
        damaged_count += bool(masks.any())
    assert 0 < damaged_count < 8  # each image is damaged with probability 1/2
    clean_inputs, _, clean_masks = data.training_triple(noise=True, defects=False)(image, image,
                                                                                 tf.constant([0, 0]))
    assert not clean_masks.numpy().any() and not np.array_equal(clean_inputs.numpy(), image.numpy())


def test_defect_removal_training_damages_inputs_only_and_repeatably(tmp_path):
    import keras

    keras.utils.set_random_seed(0)  # as training does
    rng = np.random.default_rng(0)
    files = []
    for index in range(5):  # textured, so that every painted defect changes pixels whatever fills it
        files.append(tmp_path / f"{index}.png")
        cv2.imwrite(str(files[-1]), (40 + 50 * index + rng.integers(-10, 11, (32, 32))).astype(np.uint8))
    clean = {round(float(GRAY_32.to_model(data.decode_image(path)).mean()), 4) for path in files[:4]}

    def epochs(seed: int, count: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
        train, _ = data.training_datasets(files[:4], files[4:], preprocessing=GRAY_32, batch_size=4, seed=seed,
                                          defects=True)
        return [(inputs.numpy(), targets.numpy()) for _ in range(count) for inputs, targets in train]

    first = epochs(0)
    damaged_images = 0
    for inputs, targets in first:
        assert {round(float(mean), 4) for mean in targets.reshape(4, -1).mean(axis=1)} == clean
        damaged_images += int((np.abs(inputs - targets).reshape(4, -1).max(axis=1) > 0.01).sum())
    assert 0 < damaged_images < 20  # each image is damaged with probability 1/2
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, epochs(0)))  # the same seed repeats the draws
    _, validation = data.training_datasets(files[:4], files[4:], preprocessing=GRAY_32, batch_size=4, seed=0,
                                           defects=True)
    (inputs, targets), = list(validation)
    np.testing.assert_array_equal(inputs.numpy(), targets.numpy())


def test_synthetic_defects_are_drawn_anew_every_epoch(tmp_path):
    import keras

    keras.utils.set_random_seed(0)  # as training does; stateful random ops would then repeat every epoch
    texture = np.random.default_rng(1).integers(0, 256, (32, 32)).astype(np.uint8)
    files = [tmp_path / f"{index}.png" for index in range(5)]
    for path in files:  # identical images, so that shuffling alone cannot make two epochs differ
        cv2.imwrite(str(path), texture)
    train, _ = data.training_datasets(files[:4], files[4:], preprocessing=GRAY_32, batch_size=4, seed=0,
                                      defects=True, noise=True)
    epochs = [np.concatenate([inputs.numpy() for inputs, _ in train]) for _ in range(3)]
    # The first epoch fills the cache; stateful random ops could repeat their draws from the second epoch on.
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_flips_give_mirror_images_only_repeatably_and_leave_the_painters_draws_alone(tmp_path):
    gradient = np.add.outer(np.arange(32) * 3, np.arange(32) * 5).astype(np.uint8)  # every mirror image differs
    files = [tmp_path / f"{index}.png" for index in range(5)]
    for path in files:
        cv2.imwrite(str(path), gradient)
    photo = GRAY_32.to_model(data.decode_image(files[0]))
    mirrors = [photo, photo[:, ::-1], photo[::-1], photo[::-1, ::-1]]

    def targets_and_masks(flips: bool, count: int = 6) -> tuple[list, list]:
        train, _ = data.training_datasets(files[:4], files[4:], preprocessing=GRAY_32, batch_size=4, seed=0,
                                          flips=flips, defects=True, fit_example=lambda x, y, m: (y, m))
        pairs = [(targets.numpy(), masks.numpy()) for _ in range(count) for targets, masks in train]
        return [image for targets, _ in pairs for image in targets], [mask for _, masks in pairs for mask in masks]

    targets, masks = targets_and_masks(True)
    kinds = [next(kind for kind, mirror in enumerate(mirrors) if np.array_equal(target, mirror)) for target in targets]
    assert set(kinds) == {0, 1, 2, 3}  # all four mirror images, and nothing else (next() would raise)
    assert all(np.array_equal(a, b) for a, b in zip(targets, targets_and_masks(True)[0]))  # a seed repeats them
    unflipped_targets, unflipped_masks = targets_and_masks(False)
    assert all(np.array_equal(target, photo) for target in unflipped_targets)
    # The painter drew the same defects: the same images damaged, in the same places (a pixel or two may differ
    # where a fill happens to equal the flipped photo, which the mask leaves out).
    assert [mask.any() for mask in masks] == [mask.any() for mask in unflipped_masks] and any(m.any() for m in masks)
    for mask, unflipped in zip(masks, unflipped_masks):
        if mask.any():
            assert ((mask > 0) & (unflipped > 0)).sum() >= 0.9 * ((mask > 0) | (unflipped > 0)).sum()


def test_relight_changes_brightness_smoothly_by_at_most_the_gain_and_repeatably(tmp_path):
    files = [tmp_path / f"{index}.png" for index in range(5)]
    for path in files:
        cv2.imwrite(str(path), np.full((32, 32), 120, np.uint8))  # flat, so the ratio to it is the gain itself
    photo = GRAY_32.to_model(data.decode_image(files[0]))

    def targets() -> list[np.ndarray]:
        train, _ = data.training_datasets(files[:4], files[4:], preprocessing=GRAY_32, batch_size=4, seed=0,
                                          relight=True, fit_example=lambda x, y, m: y)
        return [image for _ in range(5) for batch in train for image in batch.numpy()]

    relit = targets()
    gains = [target[:, :, 0] / photo[:, :, 0] for target in relit]
    assert all(np.abs(gain - 1).max() <= data.RELIGHT_GAIN + 0.01 for gain in gains)
    assert sum(np.abs(gain - 1).max() > 0.02 for gain in gains) >= 10  # most photos are relit noticeably
    # Smooth: neighbouring pixels' gains differ far less than the gain varies across the photo.
    steps = [max(np.abs(np.diff(gain, axis=0)).max(), np.abs(np.diff(gain, axis=1)).max()) for gain in gains]
    spreads = [gain.max() - gain.min() for gain in gains]
    assert all(step <= 0.5 * spread + 0.01 for step, spread in zip(steps, spreads))
    assert all(np.array_equal(a, b) for a, b in zip(relit, targets()))  # a seed repeats them
