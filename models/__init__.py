"""Autoencoder registry: the model names users type, mapped to their builder functions.

Every builder has the signature `builder(input_shape, **hparams) -> (autoencoder, encoder)`: Keras
functional models, uncompiled, input (height, width, channels) with channels 1 or 3 and values in
[0, 1], output of the same shape through a sigmoid, no Lambda layers, stable layer names. The encoder
shares the autoencoder's layers and maps an input to its latent code.
"""

import inspect
from collections.abc import Callable, Sequence

from models.baseline_cae import build_baseline_cae
from models.inception_cae import build_inception_cae
from models.my_cae import build_my_cae, build_my_cae_optuna
from models.mvtec_cae import build_mvtec_cae
from models.resnet_cae import build_resnet_cae
from models.skip_cae import build_skip_cae

MODELS: dict[str, Callable] = {
    "mvtecCAE": build_mvtec_cae,
    "baselineCAE": build_baseline_cae,
    "inceptionCAE": build_inception_cae,
    "resnetCAE": build_resnet_cae,
    "skipCAE": build_skip_cae,
    "myCAE": build_my_cae,
    "myCAE_optuna": build_my_cae_optuna,
}


def build(name: str, input_shape: Sequence[int], **hparams):
    """Build the registered autoencoder `name` for `input_shape` (height, width, channels).

    Returns (autoencoder, encoder). Raises ValueError for an unknown name, an unknown hyperparameter,
    a bad hyperparameter value, or a size the architecture cannot take; each message lists what is valid.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    builder = MODELS[name]
    valid = hparam_names(name)
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise ValueError(f"{name} has no hyperparameter {', '.join(unknown)}; valid: {', '.join(valid) or 'none'}")
    return builder(input_shape, **hparams)


def hparam_names(name: str) -> tuple[str, ...]:
    """The keyword hyperparameters that model `name` accepts."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    if name == "myCAE_optuna":  # params_path plus any myCAE hyperparameter as an override
        return ("params_path", *hparam_names("myCAE"))
    parameters = inspect.signature(MODELS[name]).parameters.values()
    return tuple(parameter.name for parameter in parameters if parameter.kind is inspect.Parameter.KEYWORD_ONLY)
