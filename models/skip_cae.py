"""skipCAE: a convolutional encoder-decoder with symmetric skip connections, after RED-Net.

Source: X.-J. Mao, C. Shen, Y.-B. Yang, "Image Restoration Using Very Deep Convolutional Encoder-Decoder
Networks with Symmetric Skip Connections" (RED-Net, NIPS 2016, arXiv 1606.08921). Convolution layers
are mirrored by transposed-convolution layers; the output of each convolution layer is added to the
output of its mirrored transposed convolution, and the sum goes through ReLU. ReLU everywhere, 3×3
kernels. Unlike RED-Net (which keeps the full resolution for denoising), every layer here has stride 2
and a 1×1 convolution narrows the deepest map to a code, as autoencoders for defect detection need.

Skips carry image detail around the code, which also lets defects through: `skip_connections` keeps
only the deepest ones (None = every level, as in RED-Net; 0 = a plain autoencoder).

Sizes: height and width multiples of 2**len(filters) (32 by default), at least that; 1 or 3 channels.
"""

from collections.abc import Sequence

import keras
from keras import layers

from models.validation import check_filters, check_input_shape, check_positive_int


def build_skip_cae(
    input_shape: tuple[int, int, int],
    *,
    filters: Sequence[int] = (32, 64, 64, 128, 128),
    latent_channels: int = 16,
    skip_connections: int | None = None,
) -> tuple[keras.Model, keras.Model]:
    """Build the skipCAE autoencoder and its encoder.

    input_shape: (height, width, channels), images in [0, 1]. filters: width of each stride-2 convolution.
    latent_channels: channels of the code. skip_connections: how many of the deepest len(filters) - 1
    convolution layers feed their mirror (None = all). Returns (autoencoder: input → same-shape
    reconstruction in [0, 1], encoder: input → (height / 2**levels, width / 2**levels, latent_channels)).
    """
    filters = check_filters("filters", filters)
    latent_channels = check_positive_int("latent_channels", latent_channels)
    skip_connections = _check_skip_connections(skip_connections, available=len(filters) - 1)
    downsampling = 2 ** len(filters)
    height, width, channels = check_input_shape(
        "skipCAE", input_shape, multiple=downsampling, minimum=downsampling
    )

    inputs = keras.Input(shape=(height, width, channels), name="input")
    encoder_outputs = []
    features = inputs
    for level, level_filters in enumerate(filters, start=1):
        features = layers.Conv2D(level_filters, 3, strides=2, padding="same", name=f"encoder_conv{level}")(features)
        features = layers.ReLU(name=f"encoder_relu{level}")(features)
        encoder_outputs.append(features)
    latent = layers.Conv2D(latent_channels, 1, name="encoder_latent_conv")(features)
    latent = layers.ReLU(name="encoder_latent_relu")(latent)

    features = layers.Conv2DTranspose(filters[-1], 1, name="decoder_latent_deconv")(latent)
    features = layers.ReLU(name="decoder_latent_relu")(features)
    shallowest_skipped_layer = len(filters) - skip_connections
    for level in range(len(filters), 1, -1):
        # This transposed convolution mirrors encoder layer `level`: it returns to the shape of layer level - 1.
        features = layers.Conv2DTranspose(
            filters[level - 2], 3, strides=2, padding="same", name=f"decoder_deconv{level}"
        )(features)
        if level - 1 >= shallowest_skipped_layer:
            features = layers.Add(name=f"decoder_skip{level - 1}_add")([features, encoder_outputs[level - 2]])
        features = layers.ReLU(name=f"decoder_relu{level}")(features)
    reconstruction = layers.Conv2DTranspose(
        channels, 3, strides=2, padding="same", activation="sigmoid", name="decoder_output"
    )(features)

    autoencoder = keras.Model(inputs, reconstruction, name="skipCAE")
    encoder = keras.Model(inputs, latent, name="skipCAE_encoder")
    return autoencoder, encoder


def _check_skip_connections(skip_connections: object, *, available: int) -> int:
    """Return the number of skip connections to build (all `available` ones for None)."""
    if skip_connections is None:
        return available
    is_integer = isinstance(skip_connections, int) and not isinstance(skip_connections, bool)
    if not is_integer or not 0 <= skip_connections <= available:
        raise ValueError(
            f"skip_connections must be None or an integer from 0 to {available}; got {skip_connections!r}"
        )
    return skip_connections
