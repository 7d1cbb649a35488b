"""myCAE and myCAE_optuna: the project's own configurable convolutional autoencoder.

A plain encoder-decoder without skip connections, built level by level: each encoder level is
`convs_per_level` convolutions (optionally BatchNorm) with one activation each, then 2×2 max-pooling;
a narrow convolution (`latent_channels` wide) forms the code; each decoder level is 2× up-sampling
followed by the same number of convolutions; a last convolution with sigmoid gives the image.
Defaults: 4 levels of two 3×3 convolutions with 32 filters, ReLU, a 16-channel code (16×16×16 at
256×256, a sixteenth of the grayscale pixels).

myCAE_optuna is myCAE with hyperparameters read from a JSON file of the same names (by default
models/myCAE_optuna.json, which an Optuna study can overwrite); explicit hyperparameters win over
the file.

Sizes: height and width multiples of 2**levels (16 by default), at least that; 1 or 3 channels.
"""

import inspect
import json
from collections.abc import Sequence
from pathlib import Path

import keras
from keras import layers

from models.validation import ACTIVATIONS, check_choice, check_filters, check_input_shape, check_positive_int

DEFAULT_PARAMS_PATH = Path(__file__).with_name("myCAE_optuna.json")
# The hyperparameters a params JSON may hold: exactly the keyword options of build_my_cae.
MY_CAE_HPARAMS = (
    "filters",
    "levels",
    "convs_per_level",
    "kernel_size",
    "latent_channels",
    "activation",
    "batch_norm",
)


def build_my_cae(
    input_shape: tuple[int, int, int],
    *,
    filters: int | Sequence[int] = 32,
    levels: int = 4,
    convs_per_level: int = 2,
    kernel_size: int = 3,
    latent_channels: int = 16,
    activation: str = "relu",
    batch_norm: bool = False,
) -> tuple[keras.Model, keras.Model]:
    """Build the myCAE autoencoder and its encoder.

    input_shape: (height, width, channels), images in [0, 1]. filters: one width for every level or a
    list with one per level. activation: one of relu, leaky_relu, elu, selu. batch_norm: BatchNorm
    after each convolution. Returns (autoencoder: input → same-shape reconstruction in [0, 1], encoder:
    input → (height / 2**levels, width / 2**levels, latent_channels) code), uncompiled.
    """
    hparams = {
        "filters": filters,
        "levels": levels,
        "convs_per_level": convs_per_level,
        "kernel_size": kernel_size,
        "latent_channels": latent_channels,
        "activation": activation,
        "batch_norm": batch_norm,
    }
    return _build("myCAE", input_shape, **hparams)


def _build(model_name: str, input_shape, **hparams) -> tuple[keras.Model, keras.Model]:
    """Validate myCAE hyperparameters, then build the named autoencoder and encoder."""
    levels = check_positive_int("levels", hparams["levels"])
    filters = check_filters("filters", hparams["filters"], levels=levels)
    convs_per_level = check_positive_int("convs_per_level", hparams["convs_per_level"])
    latent_channels = check_positive_int("latent_channels", hparams["latent_channels"])
    conv_options = {
        "kernel_size": check_positive_int("kernel_size", hparams["kernel_size"]),
        "activation": check_choice("activation", hparams["activation"], ACTIVATIONS),
        "batch_norm": hparams["batch_norm"],
    }
    if not isinstance(conv_options["batch_norm"], bool):
        raise ValueError(f"batch_norm must be True or False; got {conv_options['batch_norm']!r}")
    height, width, channels = check_input_shape(model_name, input_shape, multiple=2**levels, minimum=2**levels)

    inputs = keras.Input(shape=(height, width, channels), name="input")
    features = inputs
    for level in range(1, levels + 1):
        for index in range(1, convs_per_level + 1):
            features = _conv(features, filters[level - 1], prefix=f"encoder_level{level}_conv{index}", **conv_options)
        features = layers.MaxPooling2D(2, name=f"encoder_level{level}_pool")(features)
    latent = _conv(features, latent_channels, prefix="bottleneck_conv", **conv_options)

    features = latent
    for level in range(levels, 0, -1):
        features = layers.UpSampling2D(2, name=f"decoder_level{level}_upsample")(features)
        for index in range(1, convs_per_level + 1):
            features = _conv(features, filters[level - 1], prefix=f"decoder_level{level}_conv{index}", **conv_options)
    reconstruction = layers.Conv2D(
        channels, conv_options["kernel_size"], padding="same", activation="sigmoid", name="decoder_output"
    )(features)
    autoencoder = keras.Model(inputs, reconstruction, name=model_name)
    encoder = keras.Model(inputs, latent, name=f"{model_name}_encoder")
    return autoencoder, encoder


def _conv(features, filters: int, *, kernel_size: int, activation: str, batch_norm: bool, prefix: str):
    """Conv2D ("same" padding), optional BatchNorm, activation; layers named prefix, prefix_bn, prefix_act."""
    features = layers.Conv2D(filters, kernel_size, padding="same", use_bias=not batch_norm, name=prefix)(features)
    if batch_norm:
        features = layers.BatchNormalization(name=f"{prefix}_bn")(features)
    return layers.Activation(activation, name=f"{prefix}_act")(features)


def build_my_cae_optuna(
    input_shape: tuple[int, int, int], *, params_path: str | Path | None = None, **overrides
) -> tuple[keras.Model, keras.Model]:
    """Build myCAE from a params JSON (keys: any of MY_CAE_HPARAMS); explicit `overrides` win over the file.

    params_path defaults to models/myCAE_optuna.json. A missing or malformed file, or an unknown key in
    the file or in `overrides`, is an error naming the file and the valid keys.
    """
    return _build("myCAE_optuna", input_shape, **resolve_params(params_path, **overrides))


def resolve_params(params_path: str | Path | None = None, **overrides) -> dict:
    """Every myCAE hyperparameter: myCAE's defaults, then the params file's values, then `overrides`."""
    unknown = sorted(set(overrides) - set(MY_CAE_HPARAMS))
    if unknown:
        raise ValueError(
            f"myCAE_optuna got unknown hyperparameters {unknown}; valid: params_path, {', '.join(MY_CAE_HPARAMS)}"
        )
    return {**my_cae_defaults(), **load_params(params_path), **overrides}


def my_cae_defaults() -> dict:
    """myCAE's default hyperparameters, read from build_my_cae's signature so they live in one place."""
    parameters = inspect.signature(build_my_cae).parameters
    return {name: parameters[name].default for name in MY_CAE_HPARAMS}


def load_params(params_path: str | Path | None = None) -> dict:
    """Read a myCAE params JSON (an object whose keys are MY_CAE_HPARAMS); checks keys, not values."""
    path = Path(params_path) if params_path is not None else DEFAULT_PARAMS_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"myCAE_optuna params file not found: {path} (write a JSON object with any of "
            f"{', '.join(MY_CAE_HPARAMS)}, e.g. from an Optuna study, or pass params_path)"
        )
    try:
        params = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"myCAE_optuna params file {path} is not valid JSON: {error}") from None
    if not isinstance(params, dict):
        raise ValueError(f"myCAE_optuna params file {path} must hold a JSON object; got {type(params).__name__}")
    unknown = sorted(set(params) - set(MY_CAE_HPARAMS))
    if unknown:
        raise ValueError(
            f"myCAE_optuna params file {path} has unknown keys {unknown}; valid: {', '.join(MY_CAE_HPARAMS)}"
        )
    return params
