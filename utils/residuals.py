"""Residual maps: where, and how strongly, a reconstruction differs from its input.

Both functions take a batch of images and their reconstructions (N×H×W×C, numpy arrays or tf tensors) and return
an N×H×W float32 ``tf.Tensor``, one value per pixel, higher = more different. Everything runs inside TensorFlow,
so the functions can be called from a ``tf.function`` and run on the accelerator with the model.
"""

from __future__ import annotations

import numbers

import tensorflow as tf

from utils.anomaly_maps import SSIM_SIGMA, SSIM_WINDOW

# Local variances are E[x²] − E[x]², which cancels in float32 where the image is flat (errors up to 2e-4 in
# 1 − SSIM, because C2 is only 9e-4). Centring the values on half the data range before taking moments (variances
# are shift-invariant) keeps float32 within 4e-5 of scikit-image at a quarter of float64's cost.
COMPUTE_DTYPE = tf.float32


def ssim_residual_map(
    images,
    reconstructions,
    *,
    data_range: float,
    window_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    k1: float = 0.01,
    k2: float = 0.03,
) -> tf.Tensor:
    """Per-pixel structural dissimilarity ``1 - SSIM`` between images and their reconstructions.

    For every pixel, Gaussian-weighted local statistics over a ``window_size``² window give the SSIM index of
    Wang et al. (2004), "Image quality assessment: from error visibility to structural similarity",
    IEEE Trans. Image Processing 13(4):600-612::

        SSIM(x, y) = ((2 μx μy + C1) (2 σxy + C2)) / ((μx² + μy² + C1) (σx² + σy² + C2)),
        C1 = (k1 · data_range)²,  C2 = (k2 · data_range)²

    with weighted means μ, population (not sample) variances σ² and covariance σxy. The map is ``1 - SSIM``;
    for RGB (C > 1) the per-channel maps are averaged.

    Args:
        images, reconstructions: N×H×W×C float arrays or tensors of equal shape, H and W ≥ ``window_size``.
            Values are expected in ``[0, data_range]``.
        data_range: width of the value range (1.0 for images in [0, 1]); required, as in scikit-image.
        window_size: odd side of the Gaussian window. The default 11 equals the window scikit-image derives from
            sigma = 1.5 (radius ``int(3.5 * sigma + 0.5)``), which is what makes the two agree.
        sigma: standard deviation of the Gaussian weights, in pixels.
        k1, k2: the SSIM stabilising constants.

    Returns:
        N×H×W float32 tensor in [0, 2]: 0 where the images agree, 1 for uncorrelated structure, up to 2 for
        inverted structure. (Computed in float32 on values centred on ``data_range / 2``: see ``COMPUTE_DTYPE``.)

    Border: the output keeps the input's height and width. Within ``window_size // 2`` pixels of the border
    (5 px by default) the window reaches past the image, which is then mirrored (half-sample symmetric,
    ``dcba|abcd``, scipy's and scikit-image's "reflect"), so the values agree with scikit-image's full SSIM map
    there too. They rest partly on mirrored copies rather than on new pixels: a defect touching the border is
    still seen, but the strip is less reliable, and scikit-image leaves it out of its mean SSIM.
    """
    _validate_ssim_options(data_range, window_size, sigma, k1, k2)
    images, reconstructions = _as_float_batch(images, reconstructions, minimum_side=window_size)
    kernel = _gaussian_kernel(window_size, sigma)
    centre = 0.5 * data_range
    images, reconstructions = images - centre, reconstructions - centre
    statistics = [images, reconstructions, images * images, reconstructions * reconstructions,
                  images * reconstructions]
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = tf.split(
        _gaussian_filter(tf.concat(statistics, axis=-1), kernel), 5, axis=-1)
    variance_x = mean_xx - mean_x * mean_x
    variance_y = mean_yy - mean_y * mean_y
    covariance = mean_xy - mean_x * mean_y
    mean_x, mean_y = mean_x + centre, mean_y + centre
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    ssim = ((2.0 * mean_x * mean_y + c1) * (2.0 * covariance + c2)) / (
        (mean_x * mean_x + mean_y * mean_y + c1) * (variance_x + variance_y + c2))
    return tf.cast(tf.reduce_mean(1.0 - ssim, axis=-1), tf.float32)


def l2_residual_map(images, reconstructions) -> tf.Tensor:
    """Per-pixel squared difference, averaged over channels.

    Args:
        images, reconstructions: N×H×W×C float arrays or tensors of equal shape.

    Returns:
        N×H×W float32 tensor, ``mean_c (image - reconstruction)²``; in [0, 1] for images in [0, 1].
    """
    images, reconstructions = _as_float_batch(images, reconstructions, minimum_side=1)
    return tf.cast(tf.reduce_mean(tf.square(images - reconstructions), axis=-1), tf.float32)


def _validate_ssim_options(data_range, window_size, sigma, k1, k2) -> None:
    if not isinstance(data_range, numbers.Real) or not data_range > 0:
        raise ValueError(f"data_range must be a positive number, got {data_range!r}")
    if not isinstance(window_size, numbers.Integral) or window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd integer, got {window_size!r}")
    if not isinstance(sigma, numbers.Real) or not sigma > 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    for name, value in (("k1", k1), ("k2", k2)):
        if not isinstance(value, numbers.Real) or not value >= 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")


def _as_float_batch(images, reconstructions, *, minimum_side: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Checks the static shapes (rank 4, equal, H and W ≥ minimum_side) and casts both to COMPUTE_DTYPE."""
    images = tf.cast(tf.convert_to_tensor(images), COMPUTE_DTYPE)
    reconstructions = tf.cast(tf.convert_to_tensor(reconstructions), COMPUTE_DTYPE)
    if images.shape.rank != 4 or reconstructions.shape.rank != 4:
        raise ValueError(
            f"images and reconstructions must be N×H×W×C (rank 4), got shapes {images.shape} and "
            f"{reconstructions.shape}")
    if not images.shape.is_compatible_with(reconstructions.shape):
        raise ValueError(
            f"images and reconstructions must have the same shape, got {images.shape} and "
            f"{reconstructions.shape}")
    for side in images.shape[1:3]:
        if side is not None and side < minimum_side:
            raise ValueError(
                f"image height and width must be at least the window size {minimum_side}, got shape "
                f"{images.shape}")
    return images, reconstructions


def _gaussian_kernel(window_size: int, sigma: float) -> tf.Tensor:
    """Normalised 1-D Gaussian of ``window_size`` taps, sampled at integer offsets like scipy's."""
    radius = window_size // 2
    offsets = tf.range(-radius, radius + 1, dtype=COMPUTE_DTYPE)
    weights = tf.exp(-0.5 * tf.square(offsets / sigma))
    return weights / tf.reduce_sum(weights)


def _gaussian_filter(stack: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """Separable Gaussian filter of every channel of an N×H×W×K stack; same size out (mirrored border)."""
    radius = (kernel.shape[0] - 1) // 2
    padded = tf.pad(stack, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    channels = tf.shape(stack)[-1]
    vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    filtered = tf.nn.depthwise_conv2d(padded, vertical, strides=[1, 1, 1, 1], padding="VALID")
    return tf.nn.depthwise_conv2d(filtered, horizontal, strides=[1, 1, 1, 1], padding="VALID")
