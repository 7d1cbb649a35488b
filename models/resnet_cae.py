"""resnetCAE: a residual convolutional autoencoder in the spirit of RED-Net.

Sources: X.-J. Mao, C. Shen, Y.-B. Yang, "Image Restoration Using Very Deep Convolutional Encoder-Decoder
Networks with Symmetric Skip Connections" (RED-Net, NIPS 2016, arXiv 1606.08921) for the symmetric
convolution / transposed-convolution design, with the residual blocks of K. He et al., "Deep Residual
Learning for Image Recognition" (CVPR 2016).
Encoder: per level a 3×3 stride-2 convolution with ReLU, then a residual block (3×3 conv → ReLU → 3×3
conv, added to the block's input, → ReLU); a 1×1 convolution narrows the deepest map to the code.
Decoder, mirrored: a 1×1 convolution widens the code, then per level a residual block and a 4×4 stride-2
transposed convolution; a 3×3 convolution with sigmoid gives the image. Unlike RED-Net there are no
encoder-to-decoder connections, so everything passes through the code (see skipCAE for those).
BatchNorm after each convolution is available (`batch_norm=True`, as in ResNet) but off by default, as
in RED-Net: with batches of a few images it made training markedly slower.

Sizes: height and width multiples of 2**len(filters) (32 by default), at least that; 1 or 3 channels.
"""

from collections.abc import Sequence

import keras
from keras import layers

from models.validation import check_filters, check_input_shape, check_positive_int


def build_resnet_cae(
    input_shape: tuple[int, int, int],
    *,
    filters: Sequence[int] = (32, 32, 64, 64, 128),
    latent_channels: int = 16,
    batch_norm: bool = False,
) -> tuple[keras.Model, keras.Model]:
    """Build the resnetCAE autoencoder and its encoder.

    input_shape: (height, width, channels), images in [0, 1]. filters: width at each level (each level
    halves the size). latent_channels: channels of the code. batch_norm: BatchNorm after each convolution.
    Returns (autoencoder: input → same-shape reconstruction in [0, 1], encoder: input →
    (height / 2**levels, width / 2**levels, latent_channels) code).
    """
    filters = check_filters("filters", filters)
    latent_channels = check_positive_int("latent_channels", latent_channels)
    if not isinstance(batch_norm, bool):
        raise ValueError(f"batch_norm must be True or False; got {batch_norm!r}")
    downsampling = 2 ** len(filters)
    height, width, channels = check_input_shape(
        "resnetCAE", input_shape, multiple=downsampling, minimum=downsampling
    )

    inputs = keras.Input(shape=(height, width, channels), name="input")
    features = inputs
    for level, level_filters in enumerate(filters, start=1):
        prefix = f"encoder_level{level}"
        features = layers.Conv2D(
            level_filters, 3, strides=2, padding="same", use_bias=not batch_norm, name=f"{prefix}_down_conv"
        )(features)
        features = _normalise_and_relu(features, batch_norm, f"{prefix}_down")
        features = _residual_block(features, batch_norm=batch_norm, prefix=f"{prefix}_residual")
    latent = layers.Conv2D(latent_channels, 1, name="encoder_latent_conv")(features)

    features = layers.Conv2D(filters[-1], 1, name="decoder_latent_conv")(latent)
    features = _normalise_and_relu(features, batch_norm, "decoder_latent")
    for level in range(len(filters), 0, -1):
        prefix = f"decoder_level{level}"
        features = _residual_block(features, batch_norm=batch_norm, prefix=f"{prefix}_residual")
        up_filters = filters[max(level - 2, 0)]  # the width the encoder had one level up
        features = layers.Conv2DTranspose(
            up_filters, 4, strides=2, padding="same", use_bias=not batch_norm, name=f"{prefix}_up_deconv"
        )(features)
        features = _normalise_and_relu(features, batch_norm, f"{prefix}_up")
    reconstruction = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="decoder_output")(features)

    autoencoder = keras.Model(inputs, reconstruction, name="resnetCAE")
    encoder = keras.Model(inputs, latent, name="resnetCAE_encoder")
    return autoencoder, encoder


def _residual_block(features, *, batch_norm: bool, prefix: str):
    """Two 3×3 convolutions whose output is added to the block's input (identity shortcut), then ReLU."""
    width = features.shape[-1]
    residual = layers.Conv2D(width, 3, padding="same", use_bias=not batch_norm, name=f"{prefix}_conv1")(features)
    residual = _normalise_and_relu(residual, batch_norm, f"{prefix}_1")
    residual = layers.Conv2D(width, 3, padding="same", use_bias=not batch_norm, name=f"{prefix}_conv2")(residual)
    if batch_norm:
        residual = layers.BatchNormalization(name=f"{prefix}_bn2")(residual)
    summed = layers.Add(name=f"{prefix}_add")([features, residual])
    return layers.ReLU(name=f"{prefix}_relu")(summed)


def _normalise_and_relu(features, batch_norm: bool, prefix: str):
    """Optional BatchNorm, then ReLU."""
    if batch_norm:
        features = layers.BatchNormalization(name=f"{prefix}_bn")(features)
    return layers.ReLU(name=f"{prefix}_relu")(features)
