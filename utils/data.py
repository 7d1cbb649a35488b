"""Images in, model-ready tensors out: file discovery, decoding, colour modes and tf.data pipelines.

Every image the tool touches is decoded here (`decode_image`: uint8, RGB order) and brought to the run's colour
mode (`to_color_mode`); the run's preprocessing step (utils/preprocessing.py) then maps it to model inputs.

Two layouts are understood:

* MVTec AD: ``<root>/train/good/*``, ``<root>/test/<defect>/*``, ``<root>/ground_truth/<defect>/<stem>_mask.png``
* a plain folder of defect-free images (searched recursively).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
COLOR_MODES = ("grayscale", "rgb")
GOOD_LABEL = "good"

log = logging.getLogger(__name__)

LAYOUT_HELP = (
    "Expected either the MVTec AD layout (<root>/train/good/*.png, <root>/test/<defect>/*.png, "
    "<root>/ground_truth/<defect>/<name>_mask.png) or a plain folder of defect-free images "
    f"({', '.join(IMAGE_EXTENSIONS)})."
)


@dataclass(frozen=True)
class TestItem:
    """One labelled test image: its path, defect type ("good" for defect-free) and mask path if any."""

    path: Path
    defect: str
    mask_path: Path | None

    @property
    def is_defective(self) -> bool:
        return self.defect != GOOD_LABEL


@dataclass(frozen=True)
class DatasetLayout:
    """What was found under a data root. `kind` is "mvtec" or "folder"."""

    root: Path
    kind: str
    train_files: list[Path]
    test_items: list[TestItem] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.root.resolve().name


# ---------------------------------------------------------------- discovery


def list_images(folder: str | Path, *, recursive: bool = True) -> list[Path]:
    """Sorted image files under `folder`; a missing folder or one without images is a ValueError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Image folder {str(folder)!r} does not exist. {LAYOUT_HELP}")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"No images found in {str(folder)!r}. {LAYOUT_HELP}")
    return files


def mask_path_for(root: Path, defect: str, image_path: Path) -> Path | None:
    """The MVTec ground-truth mask of a test image, or None where there is none (good images, no masks)."""
    if defect == GOOD_LABEL:
        return None
    candidate = root / "ground_truth" / defect / f"{image_path.stem}_mask.png"
    return candidate if candidate.is_file() else None


def find_test_items(root: str | Path) -> list[TestItem]:
    """Labelled images of a test set: `root` may be an MVTec root (holding test/) or its test/ folder.

    Each sub-folder of test/ is a defect type; "good" holds the defect-free images. Masks are looked up in the
    sibling ground_truth/ folder.
    """
    root = Path(root)
    if (root / "test").is_dir():
        test_dir, dataset_root = root / "test", root
    else:  # `root` is the test/ folder itself; ground_truth/ is its sibling
        test_dir, dataset_root = root, root.parent
    defects = sorted(d.name for d in test_dir.iterdir() if d.is_dir()) if test_dir.is_dir() else []
    if not defects:
        raise ValueError(f"No labelled test folders under {str(root)!r}. {LAYOUT_HELP}")
    items = []
    for defect in defects:
        for path in list_images(test_dir / defect):
            items.append(TestItem(path, defect, mask_path_for(dataset_root, defect, path)))
    return items


def find_layout(root: str | Path) -> DatasetLayout:
    """Recognise an MVTec AD root or a plain folder of good images under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"Data folder {str(root)!r} does not exist. {LAYOUT_HELP}")
    if (root / "train" / GOOD_LABEL).is_dir():
        train_files = list_images(root / "train" / GOOD_LABEL)
        test_items = find_test_items(root) if (root / "test").is_dir() else []
        return DatasetLayout(root, "mvtec", train_files, test_items)
    return DatasetLayout(root, "folder", list_images(root))


def split_validation(files: Sequence[Path], *, fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Deterministic (train, validation) split of `files`; validation gets round(fraction × n), at least 1."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1); got {fraction!r}")
    shuffled = sorted(files)
    random.Random(seed).shuffle(shuffled)
    count = 0 if fraction == 0 else max(1, round(fraction * len(shuffled)))
    if count >= len(shuffled):
        raise ValueError(f"Only {len(shuffled)} training images: too few to hold out {fraction:.0%} for validation.")
    return sorted(shuffled[count:]), sorted(shuffled[:count])


# ---------------------------------------------------------------- decoding and preprocessing


def decode_image(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 H×W×C (C = 1 or 3, RGB order); ValueError naming the file if unreadable."""
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ValueError(f"Cannot read image {str(path)!r}: {error}") from error
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if image is None:
        raise ValueError(f"Cannot decode image {str(path)!r}: not an image or a corrupt/truncated file")
    return to_uint8_channels_last(image, bgr=True)


def to_uint8_channels_last(image: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """Any decoded array (H×W, H×W×1/3/4, uint8/uint16/float in [0,1]) → uint8 H×W×C with C = 1 or 3, RGB."""
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"Expected an H×W, H×W×1, H×W×3 or H×W×4 image; got shape {image.shape}")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.shape[2] == 3 and bgr:
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


def to_color_mode(image: np.ndarray, color_mode: str) -> np.ndarray:
    """Any decoded image → uint8 H×W×1 (grayscale) or H×W×3 (RGB), at its own size."""
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {COLOR_MODES}; got {color_mode!r}")
    image = to_uint8_channels_last(image)
    if color_mode == "grayscale" and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    if color_mode == "rgb" and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image


def decode_mask(path: str | Path | None) -> np.ndarray | None:
    """A ground-truth mask file → bool H×W at its own size (non-zero above 127 = defective); None stays None."""
    return None if path is None else decode_image(path)[:, :, 0] > 127


# ---------------------------------------------------------------- tf.data pipelines


def image_dataset(files: Sequence[Path], *, preprocessing, skipped: set[str]):
    """Stream `files` from disk as uint8 model-input tensors (``preprocessing.to_model_uint8``), in order.

    A file that cannot be decoded is skipped with a warning naming it and added to `skipped`, so the caller can
    report how many were lost; the pipeline goes on.
    """
    import tensorflow as tf

    shape = preprocessing.input_shape

    def load(path_tensor):
        path = path_tensor.numpy().decode()
        try:
            return preprocessing.to_model_uint8(decode_image(path)), True
        except ValueError as error:
            if path not in skipped:
                log.warning("Skipping: %s", error)
                skipped.add(path)
            return np.zeros(shape, np.uint8), False

    def load_in_graph(path):
        image, readable = tf.py_function(load, [path], [tf.uint8, tf.bool])
        image.set_shape(shape)
        readable.set_shape(())
        return image, readable

    dataset = tf.data.Dataset.from_tensor_slices([str(path) for path in files])
    dataset = dataset.map(load_in_graph, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.filter(_is_readable).map(_drop_flag)


def _is_readable(image, readable):
    return readable


def _drop_flag(image, readable):
    return image


def to_unit_float(image):
    """uint8 tensor → float32 in [0, 1]."""
    import tensorflow as tf

    return tf.cast(image, tf.float32) / 255.0


def make_augmenter(seed: int):
    """Random flips, small rotations (±10°) and brightness (±0.1) for float images in [0, 1]."""
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
            keras.layers.RandomRotation(10 / 360, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomBrightness(0.1, value_range=(0.0, 1.0), seed=seed + 2),
        ],
        name="augmentation",
    )


def random_seeds(seed, count: int):
    """`count` independent stateless-RNG seeds (count × 2 int64) from one: `seed` is a shape-[2] integer tensor,
    or None for a fresh random one. Stateless ops make a draw depend on its seed alone, so a training pipeline that
    hands every element its own seed is repeatable however its map runs in parallel."""
    import tensorflow as tf

    if seed is None:
        seed = tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int64)
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=count)


def add_denoising_noise(image, *, max_lines: int = 3, sigma: float = 0.1, seed=None):
    """The denoising input: 1–`max_lines` random bright line segments plus gaussian noise σ = `sigma`.

    `image` is an H×W×C float tensor in [0, 1]; the result is clipped to [0, 1]. The target stays the clean image,
    so the autoencoder learns to remove thin bright artefacts (as scratches look) rather than copy them. `seed`: a
    shape-[2] integer tensor for a repeatable draw (see `random_seeds`), or None.
    """
    import tensorflow as tf

    seeds = random_seeds(seed, 6)
    height, width = image.shape[0], image.shape[1]
    rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    per_line = [max_lines, 1, 1]  # broadcast one value per line over the pixel grid
    start_x = tf.random.stateless_uniform(per_line, seeds[0], 0.0, float(width))
    start_y = tf.random.stateless_uniform(per_line, seeds[1], 0.0, float(height))
    angle = tf.random.stateless_uniform(per_line, seeds[2], 0.0, np.pi)
    length = tf.random.stateless_uniform(per_line, seeds[3], 0.2, 0.6) * float(max(height, width))
    offset_x, offset_y = cols[None] - start_x, rows[None] - start_y
    along = tf.clip_by_value(offset_x * tf.cos(angle) + offset_y * tf.sin(angle), 0.0, length)
    distance = tf.sqrt((offset_x - along * tf.cos(angle)) ** 2 + (offset_y - along * tf.sin(angle)) ** 2)
    line_count = tf.random.stateless_uniform([], seeds[4], 1, max_lines + 1, dtype=tf.int32)
    active = tf.range(max_lines) < line_count
    on_line = tf.reduce_any((distance < 1.0) & tf.reshape(active, per_line), axis=0)[:, :, None]
    noisy = tf.where(on_line, tf.ones_like(image), image)
    noisy = noisy + tf.random.stateless_normal(tf.shape(image), seeds[5], stddev=sigma)
    return tf.clip_by_value(noisy, 0.0, 1.0)


def add_synthetic_defects(image, *, probability: float = 0.5, max_coverage: float = 0.04, seed=None):
    """The defect-removal input: with `probability`, a random blob or stroke painted over the image.

    `image` is an H×W×C float tensor in [0, 1]. Half the defects are blobs: the top 0.3 %–`max_coverage` of a
    bicubically upsampled coarse random field (3–8 cells a side). The other half are strokes: a random quadratic
    curve 1–3 px wide and 10–50 % of the image long (as scratches and cracks look). Both have soft edges and are
    filled, at 50–100 % opacity, either with the image itself turned and shifted (foreign structure) or with a flat
    random tone plus a little noise (a stain, rust, a dark crack, missing material). The target stays the clean
    image, so the autoencoder learns to paint defects out instead of copying them, and the residual map lights up
    where they are (after DRAEM's reconstructive training, Zavrtanik et al., ICCV 2021, without its texture set).
    `seed`: a shape-[2] integer tensor for a repeatable draw (see `random_seeds`), or None.
    """
    import tensorflow as tf

    seeds = random_seeds(seed, 10)
    damage = tf.random.stateless_uniform([], seeds[9]) < probability
    untouched = tf.zeros(tf.concat([tf.shape(image)[:2], [1]], axis=0), image.dtype)
    return tf.cond(damage, lambda: _paint_defect(image, seeds, max_coverage=max_coverage),
                   lambda: (image, untouched))


def _paint_defect(image, seeds, *, max_coverage: float):
    """(`image` with one blob or stroke painted on, its H×W×1 mask), every random choice drawn from `seeds`."""
    import tensorflow as tf

    height, width, channels = image.shape
    is_blob = tf.random.stateless_uniform([], seeds[0]) < 0.5
    mask = tf.cond(is_blob, lambda: _blob_mask(height, width, max_coverage=max_coverage, seed=seeds[1]),
                   lambda: _stroke_mask(height, width, seed=seeds[2]))[:, :, None]
    turns = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)
    turned = tf.image.rot90(image, turns) if height == width else image
    shift = tf.random.stateless_uniform([2], seeds[4], 0, max(height, width), dtype=tf.int32)
    shifted = tf.roll(turned, shift=shift, axis=[0, 1])
    flat_tone = (tf.random.stateless_uniform([1, 1, channels], seeds[5])
                 + tf.random.stateless_normal([height, width, channels], seeds[6], stddev=0.03))
    fill = tf.where(tf.random.stateless_uniform([], seeds[7]) < 0.5, shifted, flat_tone)
    opacity = tf.random.stateless_uniform([], seeds[8], 0.5, 1.0) * mask
    return tf.clip_by_value(image * (1.0 - opacity) + fill * opacity, 0.0, 1.0), mask


def _blob_mask(height: int, width: int, *, max_coverage: float, seed):
    """H×W float mask in [0, 1]: one or two smooth blobs covering 0.3 %–max_coverage of the image."""
    import tensorflow as tf

    seeds = random_seeds(seed, 3)
    cells = tf.random.stateless_uniform([], seeds[0], 3, 9, dtype=tf.int32)
    coarse = tf.random.stateless_uniform(tf.stack([1, cells, cells, 1]), seeds[1])
    field = tf.image.resize(coarse, [height, width], method="bicubic")[0, :, :, 0]
    coverage = tf.random.stateless_uniform([], seeds[2], 0.003, max_coverage)
    descending = tf.sort(tf.reshape(field, [-1]), direction="DESCENDING")
    cutoff = descending[tf.cast(coverage * height * width, tf.int32)]
    return tf.clip_by_value((field - cutoff) / 0.02, 0.0, 1.0)  # 0.02: a soft edge a pixel or two wide


def _stroke_mask(height: int, width: int, *, seed):
    """H×W float mask in [0, 1]: a quadratic Bézier curve 1–3 px wide, 10–50 % of the image's side long."""
    import tensorflow as tf

    seeds = random_seeds(seed, 5)
    side = float(max(height, width))
    points = max(16, int(side) // 2)  # about a pixel apart along the longest stroke, so it has no gaps
    start = tf.random.stateless_uniform([2], seeds[0]) * [float(height), float(width)]
    angle = tf.random.stateless_uniform([], seeds[1], 0.0, 2.0 * np.pi)
    length = tf.random.stateless_uniform([], seeds[2], 0.1, 0.5) * side
    end = start + length * tf.stack([tf.sin(angle), tf.cos(angle)])
    control = (start + end) / 2.0 + tf.random.stateless_normal([2], seeds[3], stddev=0.25) * length  # the bend
    t = tf.linspace(0.0, 1.0, points)[:, None]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t ** 2 * end  # points × (row, col)
    rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    distance = tf.reduce_min(tf.sqrt((rows[:, :, None] - curve[:, 0]) ** 2 + (cols[:, :, None] - curve[:, 1]) ** 2),
                             axis=-1)
    half_width = tf.random.stateless_uniform([], seeds[4], 0.5, 1.5)
    return tf.clip_by_value(half_width + 0.5 - distance, 0.0, 1.0)


def training_datasets(
    train_files: Sequence[Path],
    validation_files: Sequence[Path],
    *,
    preprocessing,
    batch_size: int,
    seed: int,
    augment: bool = False,
    noise: bool = False,
    defects: bool = False,
    skipped: set[str] | None = None,
    fit_example=None,
):
    """(train, validation) tf.data datasets of batches for training, as ``fit_example`` shapes them.

    Each element is first (input, clean target, defect mask H×W×1 in [0, 1]); ``fit_example(inputs, targets,
    masks)`` (a model spec's; default: (input, target), an autoencoder's pair) turns a batch into what the model
    fits. Decoded, preprocessed images are cached in memory as uint8 after the first epoch; shuffling,
    augmentation, denoising noise and synthetic defects are applied after the cache so they differ every epoch.
    Validation is always clean.
    """
    import tensorflow as tf

    fit_example = fit_example or _input_and_target
    skipped = set() if skipped is None else skipped
    train = image_dataset(train_files, preprocessing=preprocessing, skipped=skipped).cache()
    train = train.shuffle(max(1, len(train_files)), seed=seed, reshuffle_each_iteration=True).map(to_unit_float)
    if augment:
        augmenter = make_augmenter(seed)

        def augment_image(image):
            return tf.clip_by_value(augmenter(image, training=True), 0.0, 1.0)

        train = train.map(augment_image)
    # One seed per element, new every epoch but fixed by `seed`: stateful random ops in a map can repeat the
    # same draws epoch after epoch once Keras sets a global seed, and depend on the map's parallel order.
    element_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    train = tf.data.Dataset.zip(train, element_seeds)
    train = train.map(training_triple(noise=noise, defects=defects), num_parallel_calls=tf.data.AUTOTUNE)
    train = train.batch(batch_size).map(fit_example).prefetch(tf.data.AUTOTUNE)
    validation = image_dataset(validation_files, preprocessing=preprocessing, skipped=skipped).cache()
    validation = validation.map(to_unit_float).map(_clean_triple)
    return train, validation.batch(batch_size).map(fit_example).prefetch(tf.data.AUTOTUNE)


def training_triple(*, noise: bool, defects: bool):
    """(image, seed) → (input, target, mask): the target is the clean image; the input is damaged first, and the
    mask says where a synthetic defect was painted (all zeros without one)."""
    import tensorflow as tf

    def make_triple(image, seed):
        seeds = random_seeds(seed, 2)  # one for the defect, one for the noise
        if defects:
            damaged, mask = add_synthetic_defects(image, seed=seeds[0])
        else:
            damaged, mask = image, tf.zeros_like(image[:, :, :1])
        return (add_denoising_noise(damaged, seed=seeds[1]) if noise else damaged), image, mask

    return make_triple


def _clean_triple(image):
    import tensorflow as tf

    return image, image, tf.zeros_like(image[:, :, :1])


def _input_and_target(inputs, targets, masks):
    return inputs, targets
