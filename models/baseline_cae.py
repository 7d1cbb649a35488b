"""baselineCAE: the baseline convolutional autoencoder of natasasdj/anomalyDetection.

Source: N. Sarafijanovic-Djukic and J. Davis, "Fast Distance-based Anomaly Detection in Images Using
an Inception-like Autoencoder" (Discovery Science 2019) and its code, github.com/natasasdj/anomalyDetection
(`baselineCAE`). Each encoder level is Conv2D → BatchNorm → LeakyReLU(0.1) → 2×2 max-pooling, a dense
layer gives the latent vector, and the decoder runs Conv2D → BatchNorm → LeakyReLU(0.1) → 2×2
up-sampling back up, ending in Conv2D → BatchNorm → sigmoid. All kernels carry a small L2 penalty.

Changes for 256-pixel inputs: six levels (32, 32, 64, 64, 128, 128 filters) instead of three and 3×3
kernels instead of 5×5, as in the widely used MVTec adaptation; the decoder starts with a dense layer
back to the last feature map, so any valid size works rather than only 32×32.

Sizes: height and width multiples of 2**len(filters) (64 by default), at least that; 1 or 3 channels.
"""

from collections.abc import Sequence

import keras
from keras import layers, regularizers

from models.validation import check_filters, check_input_shape, check_non_negative_number, check_positive_int

NEGATIVE_SLOPE = 0.1  # the source's leaky ReLU slope


def build_baseline_cae(
    input_shape: tuple[int, int, int],
    *,
    filters: Sequence[int] = (32, 32, 64, 64, 128, 128),
    kernel_size: int = 3,
    encoding_dim: int = 64,
    weight_decay: float = 1e-6,
) -> tuple[keras.Model, keras.Model]:
    """Build the baselineCAE autoencoder and its encoder.

    input_shape: (height, width, channels), images in [0, 1]. filters: one width per level (each level
    halves the size). encoding_dim: length of the latent vector. weight_decay: L2 factor on kernels (>= 0).
    Returns (autoencoder: input → same-shape reconstruction in [0, 1], encoder: input → (encoding_dim,)).
    """
    filters = check_filters("filters", filters)
    kernel_size = check_positive_int("kernel_size", kernel_size)
    encoding_dim = check_positive_int("encoding_dim", encoding_dim)
    weight_decay = check_non_negative_number("weight_decay", weight_decay)
    downsampling = 2 ** len(filters)
    height, width, channels = check_input_shape(
        "baselineCAE", input_shape, multiple=downsampling, minimum=downsampling
    )
    block_options = {"kernel_size": kernel_size, "weight_decay": weight_decay}

    inputs = keras.Input(shape=(height, width, channels), name="input")
    features = inputs
    for level, level_filters in enumerate(filters, start=1):
        features = _conv_block(features, level_filters, prefix=f"encoder_level{level}", **block_options)
        features = layers.MaxPooling2D(2, name=f"encoder_level{level}_pool")(features)
    bottom_shape = (height // downsampling, width // downsampling, filters[-1])
    features = layers.Flatten(name="encoder_flatten")(features)
    latent = layers.Dense(encoding_dim, kernel_regularizer=_l2(weight_decay), name="encoder_dense")(features)
    latent = layers.LeakyReLU(NEGATIVE_SLOPE, name="encoder_dense_lrelu")(latent)

    reconstruction = _decoder(latent, filters, bottom_shape=bottom_shape, channels=channels, **block_options)
    autoencoder = keras.Model(inputs, reconstruction, name="baselineCAE")
    encoder = keras.Model(inputs, latent, name="baselineCAE_encoder")
    return autoencoder, encoder


def _decoder(latent, filters: list[int], *, bottom_shape, channels: int, kernel_size: int, weight_decay: float):
    """Dense back to the deepest feature map, then conv block + 2× up-sampling per level, then sigmoid."""
    size = bottom_shape[0] * bottom_shape[1] * bottom_shape[2]
    features = layers.Dense(size, kernel_regularizer=_l2(weight_decay), name="decoder_dense")(latent)
    features = layers.LeakyReLU(NEGATIVE_SLOPE, name="decoder_dense_lrelu")(features)
    features = layers.Reshape(bottom_shape, name="decoder_reshape")(features)
    for level in range(len(filters), 0, -1):
        features = _conv_block(
            features,
            filters[level - 1],
            kernel_size=kernel_size,
            weight_decay=weight_decay,
            prefix=f"decoder_level{level}",
        )
        features = layers.UpSampling2D(2, name=f"decoder_level{level}_upsample")(features)
    features = layers.Conv2D(
        channels, kernel_size, padding="same", kernel_regularizer=_l2(weight_decay), name="decoder_output_conv"
    )(features)
    features = layers.BatchNormalization(name="decoder_output_bn")(features)
    return layers.Activation("sigmoid", name="decoder_output")(features)


def _conv_block(features, filters: int, *, kernel_size: int, weight_decay: float, prefix: str):
    """Conv2D → BatchNorm → LeakyReLU(0.1), the source's unit at every level."""
    features = layers.Conv2D(
        filters, kernel_size, padding="same", kernel_regularizer=_l2(weight_decay), name=f"{prefix}_conv"
    )(features)
    features = layers.BatchNormalization(name=f"{prefix}_bn")(features)
    return layers.LeakyReLU(NEGATIVE_SLOPE, name=f"{prefix}_lrelu")(features)


def _l2(weight_decay: float):
    """An L2 kernel penalty, or none when weight_decay is 0."""
    return regularizers.L2(weight_decay) if weight_decay else None
