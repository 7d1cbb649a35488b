import numpy as np
import pytest
import tensorflow as tf
from skimage.metrics import structural_similarity

from utils.residuals import l2_residual_map, ssim_residual_map

BORDER = 5  # window radius of the default 11-tap window
TOLERANCE = 1e-4


def reference_residual(image: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """1 − scikit-image's full SSIM map with the settings of Wang et al. (2004), for one H×W pair.

    In float64: for float32 input scikit-image computes in float32 and is itself off by about 1e-4 in flat areas.
    """
    _, ssim_map = structural_similarity(
        image.astype(np.float64), reconstruction.astype(np.float64), full=True, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=1)
    return 1.0 - ssim_map


def residual_of_pair(image: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    maps = ssim_residual_map(image[None, ..., None], reconstruction[None, ..., None], data_range=1.0)
    return maps.numpy()[0]


def structured_image(size: int, shift: int) -> np.ndarray:
    """Smooth gradient with a bright rectangle and a dark disc: flat areas are where float32 SSIM goes wrong."""
    rows, columns = np.mgrid[0:size, 0:size] / (size - 1)
    image = 0.15 + 0.6 * columns + 0.1 * rows
    image[10 + shift:25 + shift, 8:30] = 0.95
    image[(rows - 0.7) ** 2 + (columns - 0.65) ** 2 < 0.03] = 0.05
    return image


def test_shape_and_dtype():
    maps = ssim_residual_map(np.zeros((2, 40, 48, 1), np.float32), np.ones((2, 40, 48, 1), np.float32),
                             data_range=1.0)
    assert maps.shape == (2, 40, 48)
    assert maps.dtype == tf.float32


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scikit_image_on_random_images(seed):
    generator = np.random.default_rng(seed)
    image, reconstruction = generator.random((2, 48, 40)).astype(np.float32)
    difference = np.abs(residual_of_pair(image, reconstruction) - reference_residual(image, reconstruction))
    assert difference[BORDER:-BORDER, BORDER:-BORDER].max() <= TOLERANCE
    assert difference.max() <= TOLERANCE  # the mirrored border agrees as well


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_scikit_image_on_structured_images(seed):
    generator = np.random.default_rng(seed)
    image = structured_image(64, shift=0)
    # A plausible reconstruction: the shape slightly displaced plus faint noise, so most of the map is near 0.
    reconstruction = np.clip(structured_image(64, shift=2) + generator.normal(0, 2e-3, image.shape), 0, 1)
    image, reconstruction = image.astype(np.float32), reconstruction.astype(np.float32)
    expected = reference_residual(image, reconstruction)
    difference = np.abs(residual_of_pair(image, reconstruction) - expected)
    assert expected.max() > 0.3  # the displaced edge is clearly visible
    assert difference[BORDER:-BORDER, BORDER:-BORDER].max() <= TOLERANCE
    assert difference.max() <= TOLERANCE


def test_identical_images_give_zero_map():
    image = structured_image(32, shift=0)[None, ..., None]
    np.testing.assert_allclose(ssim_residual_map(image, image, data_range=1.0).numpy(), 0.0, atol=1e-6)


def test_rgb_is_mean_of_channel_maps():
    generator = np.random.default_rng(3)
    images = generator.random((1, 32, 32, 3)).astype(np.float32)
    reconstructions = np.clip(images + generator.normal(0, 0.1, images.shape), 0, 1).astype(np.float32)
    rgb_map = ssim_residual_map(images, reconstructions, data_range=1.0).numpy()
    channel_maps = [ssim_residual_map(images[..., [c]], reconstructions[..., [c]], data_range=1.0).numpy()
                    for c in range(3)]
    np.testing.assert_allclose(rgb_map, np.mean(channel_maps, axis=0), atol=1e-6)
    _, reference = structural_similarity(
        images[0].astype(np.float64), reconstructions[0].astype(np.float64), full=True, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1, channel_axis=-1)
    assert np.abs(rgb_map[0] - (1.0 - reference).mean(axis=-1)).max() <= TOLERANCE


def test_batch_equals_one_image_at_a_time():
    generator = np.random.default_rng(4)
    images = generator.random((3, 32, 32, 1)).astype(np.float32)
    reconstructions = generator.random((3, 32, 32, 1)).astype(np.float32)
    batch = ssim_residual_map(images, reconstructions, data_range=1.0).numpy()
    for index in range(3):
        single = ssim_residual_map(images[index:index + 1], reconstructions[index:index + 1], data_range=1.0)
        np.testing.assert_allclose(batch[index], single.numpy()[0], atol=1e-6)


def test_works_inside_tf_function_with_unknown_batch_size():
    specification = tf.TensorSpec([None, 32, 32, 1], tf.float32)

    @tf.function(input_signature=[specification, specification])
    def residual(images, reconstructions):
        return ssim_residual_map(images, reconstructions, data_range=1.0)

    generator = np.random.default_rng(5)
    images = generator.random((2, 32, 32, 1)).astype(np.float32)
    reconstructions = generator.random((2, 32, 32, 1)).astype(np.float32)
    eager = ssim_residual_map(images, reconstructions, data_range=1.0).numpy()
    np.testing.assert_allclose(residual(images, reconstructions).numpy(), eager, atol=1e-6)


def test_data_range_scales_the_constants():
    """Images in [0, 255] with data_range=255 give the same map as the same images in [0, 1]."""
    generator = np.random.default_rng(6)
    images, reconstructions = generator.random((2, 1, 32, 32, 1))
    unit = ssim_residual_map(images, reconstructions, data_range=1.0).numpy()
    bytes_range = ssim_residual_map(images * 255, reconstructions * 255, data_range=255.0).numpy()
    np.testing.assert_allclose(bytes_range, unit, atol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"data_range": 0}, "data_range must be a positive number, got 0"),
    ({"data_range": None}, "got None"),
    ({"data_range": 1.0, "window_size": 10}, "window_size must be a positive odd integer, got 10"),
    ({"data_range": 1.0, "sigma": -1.0}, "sigma must be a positive number, got -1.0"),
])
def test_rejects_bad_options(options, message):
    images = np.zeros((1, 32, 32, 1), np.float32)
    with pytest.raises(ValueError, match=message):
        ssim_residual_map(images, images, **options)


@pytest.mark.parametrize("first, second, message", [
    ((1, 32, 32, 1), (1, 32, 30, 1), "same shape"),
    ((32, 32, 1), (32, 32, 1), "rank 4"),
    ((1, 8, 32, 1), (1, 8, 32, 1), "at least the window size 11"),
])
def test_rejects_bad_shapes(first, second, message):
    with pytest.raises(ValueError, match=message):
        ssim_residual_map(np.zeros(first, np.float32), np.zeros(second, np.float32), data_range=1.0)


def test_l2_residual_map_is_mean_squared_difference_over_channels():
    images = np.zeros((1, 4, 4, 3), np.float32)
    reconstructions = np.zeros((1, 4, 4, 3), np.float32)
    reconstructions[0, 1, 2] = [0.5, 0.2, 0.0]
    maps = l2_residual_map(images, reconstructions).numpy()
    assert maps.shape == (1, 4, 4)
    assert maps[0, 1, 2] == pytest.approx((0.25 + 0.04) / 3)
    assert np.count_nonzero(maps) == 1


@pytest.mark.parametrize("label", ["train/good", "test/scratch", "test/missing_material"])
def test_matches_scikit_image_on_generated_demo_photos(label):
    """Demo photos against a blurred copy (a typical blurry reconstruction), inside the 5 px border."""
    import cv2

    from utils.synthetic import render_sample

    photo = cv2.cvtColor(render_sample(label, 3, seed=0, size=96)[0], cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    reconstruction = cv2.GaussianBlur(photo, (0, 0), 2.0)
    ours = residual_of_pair(photo, reconstruction)
    expected = reference_residual(photo, reconstruction)
    inside = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    assert np.abs(ours[inside] - expected[inside]).max() <= TOLERANCE
