"""inceptionCAE: the inception-like convolutional autoencoder of natasasdj/anomalyDetection.

Source: N. Sarafijanovic-Djukic and J. Davis, "Fast Distance-based Anomaly Detection in Images Using
an Inception-like Autoencoder" (Discovery Science 2019) and its code, github.com/natasasdj/anomalyDetection
(`inceptionCAE`). Each inception block runs four parallel branches on the same input: 1×1, 3×3 and 5×5
convolutions and a 3×3 max-pooling followed by a 1×1 convolution, each branch with BatchNorm and
LeakyReLU(0.1), concatenated (4 × filters channels). The encoder alternates blocks and 2×2 max-pooling,
the decoder blocks and 2×2 up-sampling; a 3×3 convolution → BatchNorm → sigmoid gives the image.
Kernels carry a small L2 penalty, as in the source.

Changes for 256-pixel inputs: six levels instead of three, so the code is small (4×4 at 256×256),
with half the source's widths (16, 16, 32, 32, 64, 64) to keep it trainable on a CPU.

Sizes: height and width multiples of 2**len(filters) (64 by default), at least that; 1 or 3 channels.
"""

from collections.abc import Sequence

import keras
from keras import layers, regularizers

from models.validation import check_filters, check_input_shape, check_non_negative_number

NEGATIVE_SLOPE = 0.1  # the source's leaky ReLU slope


def build_inception_cae(
    input_shape: tuple[int, int, int],
    *,
    filters: Sequence[int] = (16, 16, 32, 32, 64, 64),
    weight_decay: float = 1e-6,
) -> tuple[keras.Model, keras.Model]:
    """Build the inceptionCAE autoencoder and its encoder.

    input_shape: (height, width, channels), images in [0, 1]. filters: branch width of the inception
    block at each level (each level halves the size; a block outputs 4 × filters channels).
    weight_decay: L2 factor on kernels (>= 0). Returns (autoencoder: input → same-shape reconstruction
    in [0, 1], encoder: input → (height / 2**levels, width / 2**levels, 4 × filters[-1]) code).
    """
    filters = check_filters("filters", filters)
    weight_decay = check_non_negative_number("weight_decay", weight_decay)
    downsampling = 2 ** len(filters)
    height, width, channels = check_input_shape(
        "inceptionCAE", input_shape, multiple=downsampling, minimum=downsampling
    )
    regularizer = regularizers.L2(weight_decay) if weight_decay else None

    inputs = keras.Input(shape=(height, width, channels), name="input")
    features = inputs
    for level, level_filters in enumerate(filters, start=1):
        features = _inception_block(
            features, level_filters, regularizer=regularizer, prefix=f"encoder_level{level}"
        )
        features = layers.MaxPooling2D(2, name=f"encoder_level{level}_pool")(features)
    latent = features

    for level in range(len(filters), 0, -1):
        features = _inception_block(
            features, filters[level - 1], regularizer=regularizer, prefix=f"decoder_level{level}"
        )
        features = layers.UpSampling2D(2, name=f"decoder_level{level}_upsample")(features)
    features = layers.Conv2D(channels, 3, padding="same", kernel_regularizer=regularizer, name="decoder_output_conv")(
        features
    )
    features = layers.BatchNormalization(name="decoder_output_bn")(features)
    reconstruction = layers.Activation("sigmoid", name="decoder_output")(features)

    autoencoder = keras.Model(inputs, reconstruction, name="inceptionCAE")
    encoder = keras.Model(inputs, latent, name="inceptionCAE_encoder")
    return autoencoder, encoder


def _inception_block(features, filters: int, *, regularizer, prefix: str):
    """Four parallel branches (1×1, 3×3, 5×5 conv; 3×3 max-pool → 1×1 conv) concatenated on channels."""
    pooled = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{prefix}_pool_branch_pool")(features)
    branches = []
    for branch_name, kernel_size, branch_input in (
        ("conv1x1", 1, features),
        ("conv3x3", 3, features),
        ("conv5x5", 5, features),
        ("pool_branch", 1, pooled),
    ):
        branch = layers.Conv2D(
            filters, kernel_size, padding="same", kernel_regularizer=regularizer, name=f"{prefix}_{branch_name}_conv"
        )(branch_input)
        branch = layers.BatchNormalization(name=f"{prefix}_{branch_name}_bn")(branch)
        branches.append(layers.LeakyReLU(NEGATIVE_SLOPE, name=f"{prefix}_{branch_name}_lrelu")(branch))
    return layers.Concatenate(axis=-1, name=f"{prefix}_concat")(branches)
