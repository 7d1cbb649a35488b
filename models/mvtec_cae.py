"""mvtecCAE: the convolutional autoencoder of the SSIM-autoencoder and MVTec AD papers.

Source: P. Bergmann, S. Löwe, M. Fauser, D. Sattlegger, C. Steger, "Improving Unsupervised Defect
Segmentation by Applying Structural Similarity to Autoencoders" (VISAPP 2019, arXiv 1807.02011),
Table 1; the same network is the autoencoder baseline of the MVTec AD paper (Bergmann et al., CVPR 2019).
Encoder: 4×4 stride-2 and 3×3 stride-1 convolutions with 32, 32, 32, 64, 64, 128, 64, 32 filters and
LeakyReLU(0.2); a last convolution whose kernel covers the whole remaining map gives a 1×1×latent_dim
code. The decoder mirrors the encoder with transposed convolutions and ends in a sigmoid.

The paper takes 128×128 crops through four halvings; like the common 256-pixel adaptation, this
version starts with one more 4×4 stride-2 convolution (32 filters), so five halvings in all. At 256×256
the latent convolution therefore sees an 8×8 map, exactly as in the paper at 128×128. Kernels start
from He initialisation (the paper does not say which it used).

Sizes: height and width multiples of 32, at least 64 (64, 96, 128, ..., 256, ...); 1 or 3 channels.
"""

import keras
from keras import layers

from models.validation import check_input_shape, check_positive_int

# (filters, kernel size, stride) of each encoder convolution before the latent one: the extra
# stride-2 layer for large inputs, then Table 1's Conv1 to Conv8.
ENCODER_LAYERS = (
    (32, 4, 2),
    (32, 4, 2),
    (32, 4, 2),
    (32, 3, 1),
    (64, 4, 2),
    (64, 3, 1),
    (128, 4, 2),
    (64, 3, 1),
    (32, 3, 1),
)
DOWNSAMPLING = 32  # five stride-2 layers
NEGATIVE_SLOPE = 0.2  # the paper's leaky ReLU slope
# He initialisation keeps the signal's scale through twenty un-normalised leaky-ReLU layers; with Keras'
# default (Glorot) it shrinks layer by layer and training sits on a long plateau before it starts.
INITIALIZER = "he_uniform"


def build_mvtec_cae(
    input_shape: tuple[int, int, int], *, latent_dim: int = 100
) -> tuple[keras.Model, keras.Model]:
    """Build the mvtecCAE autoencoder and its encoder.

    input_shape: (height, width, channels), images in [0, 1]. latent_dim: length of the 1×1 latent code
    (the paper's d, 100 by default). Returns (autoencoder: input → reconstruction of the same shape in
    [0, 1], encoder: input → (1, 1, latent_dim) code), both uncompiled and sharing weights.
    """
    latent_dim = check_positive_int("latent_dim", latent_dim)
    height, width, channels = check_input_shape(
        "mvtecCAE", input_shape, multiple=DOWNSAMPLING, minimum=64
    )
    map_size = (height // DOWNSAMPLING, width // DOWNSAMPLING)

    inputs = keras.Input(shape=(height, width, channels), name="input")
    features = inputs
    for index, (filters, kernel_size, stride) in enumerate(ENCODER_LAYERS, start=1):
        features = layers.Conv2D(
            filters,
            kernel_size,
            strides=stride,
            padding="same",
            kernel_initializer=INITIALIZER,
            name=f"encoder_conv{index}",
        )(features)
        features = layers.LeakyReLU(NEGATIVE_SLOPE, name=f"encoder_lrelu{index}")(features)
    latent = layers.Conv2D(
        latent_dim, map_size, padding="valid", kernel_initializer=INITIALIZER, name="encoder_latent_conv"
    )(features)
    latent = layers.LeakyReLU(NEGATIVE_SLOPE, name="encoder_latent_lrelu")(latent)

    reconstruction = _decoder(latent, map_size=map_size, channels=channels)
    autoencoder = keras.Model(inputs, reconstruction, name="mvtecCAE")
    encoder = keras.Model(inputs, latent, name="mvtecCAE_encoder")
    return autoencoder, encoder


def _decoder(latent, *, map_size: tuple[int, int], channels: int):
    """Mirror the encoder: each transposed convolution undoes the encoder layer of the same number."""
    features = layers.Conv2DTranspose(
        ENCODER_LAYERS[-1][0], map_size, padding="valid", kernel_initializer=INITIALIZER, name="decoder_latent_deconv"
    )(latent)
    features = layers.LeakyReLU(NEGATIVE_SLOPE, name="decoder_latent_lrelu")(features)
    for index in range(len(ENCODER_LAYERS), 1, -1):
        _, kernel_size, stride = ENCODER_LAYERS[index - 1]
        filters = ENCODER_LAYERS[index - 2][0]  # back to the width that entered encoder layer `index`
        features = layers.Conv2DTranspose(
            filters,
            kernel_size,
            strides=stride,
            padding="same",
            kernel_initializer=INITIALIZER,
            name=f"decoder_deconv{index}",
        )(features)
        features = layers.LeakyReLU(NEGATIVE_SLOPE, name=f"decoder_lrelu{index}")(features)
    _, kernel_size, stride = ENCODER_LAYERS[0]
    return layers.Conv2DTranspose(
        channels, kernel_size, strides=stride, padding="same", activation="sigmoid", name="decoder_output"
    )(features)
