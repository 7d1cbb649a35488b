"""Model registry: the names users type, mapped to model specs (models/spec.py: builder, training, anomaly maps).

Every builder has the signature `builder(input_shape, **hparams) -> (autoencoder, encoder)`: Keras
functional models, uncompiled, input (height, width, channels) with channels 1 or 3 and values in
[0, 1], output of the same shape through a sigmoid, no Lambda layers, stable layer names. The encoder
shares the autoencoder's layers and maps an input to its latent code.
"""

import inspect
from collections.abc import Sequence

from models.baseline_cae import build_baseline_cae
from models.inception_cae import build_inception_cae
from models.my_cae import build_my_cae, build_my_cae_optuna
from models.mvtec_cae import build_mvtec_cae
from models.resnet_cae import build_resnet_cae
from models.skip_cae import build_skip_cae
from models.segmentation_head import MAX_HEAD_LEVELS
from models.spec import ModelSpec, with_head

MODELS: dict[str, ModelSpec] = {
    "mvtecCAE": ModelSpec(build_mvtec_cae),
    "baselineCAE": ModelSpec(build_baseline_cae),
    "inceptionCAE": ModelSpec(build_inception_cae),
    "resnetCAE": ModelSpec(build_resnet_cae),
    "skipCAE": ModelSpec(build_skip_cae),
    "myCAE": ModelSpec(build_my_cae),
    "myCAE_optuna": ModelSpec(build_my_cae_optuna),
}


def spec(name: str, *, head: bool = False, members: int = 1, head_levels: int | None = None) -> ModelSpec:
    """The registry entry of model `name` (with a segmentation head: models/segmentation_head.py; `members` > 1:
    an ensemble of that many, which needs the head; `head_levels`: the head's depth, None for its default);
    ValueError listing the valid names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ValueError(f"members must be a positive integer; got {members!r}")
    if members > 1 and not head:
        raise ValueError("an ensemble (--members above 1) averages segmentation heads' maps: add --head")
    if head_levels is not None and (isinstance(head_levels, bool) or not isinstance(head_levels, int)
                                    or not 1 <= head_levels <= MAX_HEAD_LEVELS):
        raise ValueError(f"head levels must be an integer from 1 to {MAX_HEAD_LEVELS}; got {head_levels!r}")
    return with_head(MODELS[name], members=members, head_levels=head_levels) if head else MODELS[name]


def build(name: str, input_shape: Sequence[int], *, head: bool = False, members: int = 1,
          head_levels: int | None = None, **hparams):
    """Build the registered autoencoder `name` (with `head`: plus a segmentation head `head_levels` deep; `members`
    > 1: an ensemble of that many) for `input_shape`.

    Returns (model, encoder). Raises ValueError for an unknown name, an unknown hyperparameter,
    a bad hyperparameter value, or a size the architecture cannot take; each message lists what is valid.
    """
    builder = spec(name, head=head, members=members, head_levels=head_levels).builder
    valid = hparam_names(name)
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise ValueError(f"{name} has no hyperparameter {', '.join(unknown)}; valid: {', '.join(valid) or 'none'}")
    return builder(input_shape, **hparams)


def hparam_names(name: str) -> tuple[str, ...]:
    """The keyword hyperparameters that model `name` accepts."""
    builder = spec(name).builder
    if name == "myCAE_optuna":  # params_path plus any myCAE hyperparameter as an override
        return ("params_path", *hparam_names("myCAE"))
    parameters = inspect.signature(builder).parameters.values()
    return tuple(parameter.name for parameter in parameters if parameter.kind is inspect.Parameter.KEYWORD_ONLY)
