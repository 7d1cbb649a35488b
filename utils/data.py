"""Images in, model-ready tensors out: file discovery, decoding, colour modes and tf.data pipelines.

Every image the tool touches is decoded here (`decode_image`: uint8, RGB order) and brought to the run's colour
mode (`to_color_mode`); the run's preprocessing step (utils/preprocessing.py) then maps it to model inputs.
`training_datasets` streams them for fitting, damaged by `training_triple` with the training-time painters of
utils/defects.py (synthetic defects with their masks, denoising noise), which this module re-exports.

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

# Every painter lives in utils/defects; training_triple paints with these, and callers (test.py) still import
# add_denoising_noise from here.
from utils.defects import add_denoising_noise, add_training_defect, random_seeds

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
COLOR_MODES = ("grayscale", "rgb")
COLOR_CHOICES = ("auto", *COLOR_MODES)  # the --color option: auto picks one of COLOR_MODES from the photos
COLOUR_SAMPLE = 16  # photos looked at to decide --color auto
COLOUR_SPREAD = 8  # a pixel carries colour when its channels differ by more than this (of 255): above JPEG noise
COLOUR_FRACTION = 0.01  # a photo carries colour when more than this fraction of its pixels do
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


def carries_colour(image: np.ndarray) -> bool:
    """Whether a decoded photo holds colour: three channels, and more than COLOUR_FRACTION of its pixels with
    channels more than COLOUR_SPREAD levels apart (a grey photo stored as RGB, or its JPEG noise, does not)."""
    image = to_uint8_channels_last(image)
    if image.shape[2] == 1:
        return False
    spread = image.max(axis=2).astype(np.int16) - image.min(axis=2)
    return float((spread > COLOUR_SPREAD).mean()) > COLOUR_FRACTION


def colour_mode_of(files: Sequence[Path], *, sample: int = COLOUR_SAMPLE) -> str:
    """--color auto: "rgb" if any of up to `sample` photos spread evenly over `files` carries colour (a colour
    camera: rust, burn marks and stains differ from the part in hue), else "grayscale" (a monochrome camera: three
    equal channels would add nothing). Unreadable photos are passed over; none readable → "grayscale"."""
    files = list(files)
    picked = [files[round(index)] for index in np.linspace(0, len(files) - 1, min(sample, len(files)))] if files else []
    for path in picked:
        try:
            if carries_colour(decode_image(path)):
                return "rgb"
        except ValueError as error:
            log.warning("Skipping for --color auto: %s", error)
    return "grayscale"


def decode_mask(path: str | Path | None) -> np.ndarray | None:
    """A ground-truth mask file → bool H×W at its own size (non-zero above 127 = defective); None stays None."""
    return None if path is None else decode_image(path)[:, :, 0] > 127


# ---------------------------------------------------------------- tf.data pipelines


def image_dataset(files: Sequence[Path], *, preprocessing, skipped: set[str]):
    """Stream `files` from disk as uint8 training-input tensors (``preprocessing.to_model_uint8``), in order: of
    the model's input shape, or whole (scaled) photos of any size for tiles, which are cropped later.

    A file that cannot be decoded is skipped with a warning naming it and added to `skipped`, so the caller can
    report how many were lost; the pipeline goes on.
    """
    import tensorflow as tf

    shape = preprocessing.input_shape
    if preprocessing.mode == "tiles":
        shape = (None, None, shape[2])

    def load(path_tensor):
        path = path_tensor.numpy().decode()
        try:
            return preprocessing.to_model_uint8(decode_image(path)), True
        except ValueError as error:
            if path not in skipped:
                log.warning("Skipping: %s", error)
                skipped.add(path)
            return np.zeros(preprocessing.input_shape, np.uint8), False

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


def training_datasets(
    train_files: Sequence[Path],
    validation_files: Sequence[Path],
    *,
    preprocessing,
    batch_size: int,
    seed: int,
    augment: bool = False,
    flips: bool = False,
    relight: bool = False,
    noise: bool = False,
    defects: bool = False,
    painter: str = "basic",
    skipped: set[str] | None = None,
    fit_example=None,
    damaged_validation: bool = False,
):
    """(train, validation) tf.data datasets of batches for training, as ``fit_example`` shapes them.

    Each element is first (input, clean target, defect mask H×W×1 in [0, 1]); ``fit_example(inputs, targets,
    masks)`` (a model spec's; default: (input, target), an autoencoder's pair) turns a batch into what the model
    fits. Decoded, preprocessed images are cached in memory as uint8 after the first epoch; shuffling,
    augmentation (``flips``: mirror images only; ``relight``: smooth lighting), denoising noise and synthetic
    defects are applied after the cache so they differ every epoch.
    Validation is clean, unless `damaged_validation`: then it gets synthetic defects drawn once (the same every
    epoch, so its losses compare), for models that learn to find them.
    """
    import tensorflow as tf

    fit_example = fit_example or _input_and_target
    skipped = set() if skipped is None else skipped
    train = image_dataset(train_files, preprocessing=preprocessing, skipped=skipped).cache()
    train = train.shuffle(max(1, len(train_files)), seed=seed, reshuffle_each_iteration=True).map(to_unit_float)
    if preprocessing.mode == "tiles":
        train = random_tiles(train, preprocessing.tile, seed=seed, new_each_epoch=True)
    if augment:
        augmenter = make_augmenter(seed)

        def augment_image(image):
            return tf.clip_by_value(augmenter(image, training=True), 0.0, 1.0)

        train = train.map(augment_image)
    # One seed per element, new every epoch but fixed by `seed`: stateful random ops in a map can repeat the
    # same draws epoch after epoch once Keras sets a global seed, and depend on the map's parallel order.
    element_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    train = tf.data.Dataset.zip(train, element_seeds)
    if flips:
        train = train.map(mirrored, num_parallel_calls=tf.data.AUTOTUNE)
    if relight:
        train = train.map(relit, num_parallel_calls=tf.data.AUTOTUNE)
    train = with_other_photos(train, batch_size)
    train = train.map(training_triple(noise=noise, defects=defects, painter=painter),
                      num_parallel_calls=tf.data.AUTOTUNE)
    train = train.batch(batch_size).map(fit_example).prefetch(tf.data.AUTOTUNE)
    validation = image_dataset(validation_files, preprocessing=preprocessing, skipped=skipped).cache()
    validation = validation.map(to_unit_float)
    if preprocessing.mode == "tiles":  # the same crops every epoch, so validation losses compare
        validation = random_tiles(validation, preprocessing.tile, seed=seed, new_each_epoch=False)
    if damaged_validation:
        fixed_seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=False).batch(2)
        validation = with_other_photos(tf.data.Dataset.zip(validation, fixed_seeds), batch_size)
        validation = validation.map(training_triple(noise=False, defects=True, painter=painter))
    else:
        validation = validation.map(_clean_triple)
    return train, validation.batch(batch_size).map(fit_example).prefetch(tf.data.AUTOTUNE)


def random_tiles(photos, tile: int, *, seed: int, new_each_epoch: bool):
    """Each photo (float H×W×C, at least tile × tile) → as many random tile × tile crops as tiles cover it once.

    Any crop of any photo can be drawn, and none reaches outside the photo; the draws are stateless, fixed by
    `seed`, and new every epoch when `new_each_epoch`."""
    import tensorflow as tf

    def crops(photo, photo_seed):
        shape = tf.shape(photo)
        count = ((shape[0] + tile - 1) // tile) * ((shape[1] + tile - 1) // tile)
        seeds = tf.random.experimental.stateless_split(photo_seed, num=count)
        size = tf.stack([tile, tile, shape[2]])
        return tf.data.Dataset.from_tensor_slices(seeds).map(
            lambda crop_seed: tf.image.stateless_random_crop(photo, size, crop_seed))

    photo_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=new_each_epoch).batch(2)
    channels = photos.element_spec.shape[-1]
    cropped = tf.data.Dataset.zip(photos, photo_seeds).flat_map(crops)
    return cropped.map(lambda image: tf.ensure_shape(image, (tile, tile, channels)))


def mirrored(image, seed):
    """(image, seed) → (the image flipped left-right and up-down, each with probability ½, seed). The flips draw
    from a seed folded out of the element's own, so the element's other draws (painter, noise) stay as they were."""
    import tensorflow as tf

    flip_seeds = random_seeds(tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 0x0F11), 2)
    image = tf.image.stateless_random_flip_left_right(image, flip_seeds[0])
    return tf.image.stateless_random_flip_up_down(image, flip_seeds[1]), seed


RELIGHT_GAIN = 0.2  # the largest change of brightness `relit` makes anywhere, as a fraction


def relit(image, seed):
    """(image, seed) → (the image under smooth random lighting, seed): multiplied by a gain of 1 ± up to
    RELIGHT_GAIN that varies slowly across it (a bicubic field of 2–4 cells a side), clipped to [0, 1]. Its draws
    come from a seed folded out of the element's own, as `mirrored`'s do."""
    import tensorflow as tf

    seeds = random_seeds(tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 0x119), 3)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    cells = tf.random.stateless_uniform([2], seeds[0], 2, 5, dtype=tf.int32)
    coarse = tf.random.stateless_uniform(tf.concat([[1], cells, [1]], axis=0), seeds[1], -1.0, 1.0)
    field = tf.image.resize(coarse, tf.stack([height, width]), method="bicubic")[0]
    amplitude = tf.random.stateless_uniform([], seeds[2], 0.0, RELIGHT_GAIN)
    return tf.clip_by_value(image * (1.0 + amplitude * tf.clip_by_value(field, -1.0, 1.0)), 0.0, 1.0), seed


def with_other_photos(pairs, group: int):
    """(image, seed) elements → (image, other, seed): `other` is another image of the same group of `group`
    consecutive elements (the next one, cyclically; the image itself in a group of one), a fill for painters that
    take foreign structure from the data set itself."""
    import tensorflow as tf

    def pair_up(images, seeds):
        return images, tf.roll(images, shift=-1, axis=0), seeds

    return pairs.batch(max(1, group)).map(pair_up).unbatch()


def training_triple(*, noise: bool, defects: bool, painter: str = "basic"):
    """(image, other, seed) → (input, target, mask): the target is the clean image; the input is damaged first
    (by the named painter, which may take its fill from `other`), and the mask says where a synthetic defect was
    painted (all zeros without one)."""
    import tensorflow as tf

    def make_triple(image, other, seed):
        seeds = random_seeds(seed, 2)  # one for the defect, one for the noise
        if defects:
            damaged, mask = add_training_defect(image, other, painter=painter, seed=seeds[0])
        else:
            damaged, mask = image, tf.zeros_like(image[:, :, :1])
        return (add_denoising_noise(damaged, seed=seeds[1]) if noise else damaged), image, mask

    return make_triple


def _clean_triple(image):
    import tensorflow as tf

    return image, image, tf.zeros_like(image[:, :, :1])


def _input_and_target(inputs, targets, masks):
    return inputs, targets
