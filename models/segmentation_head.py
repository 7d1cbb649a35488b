"""Restore and segment (after DRAEM, Zavrtanik et al., ICCV 2021): any CAE plus a segmentation head.

The autoencoder learns to restore the clean photo from a synthetically damaged one; a small U-Net sees
(input, reconstruction) side by side and learns where the damage was (the painter's exact masks). At inspection
the head's per-pixel probability is the anomaly map; the autoencoder's 1 − SSIM stays available
(``--anomaly-map ssim``). Both parts train together: the head's loss also teaches the autoencoder to make
defects stand out.

    model: input → [reconstruction (as the CAE's), segmentation (H×W×1, sigmoid)]

Losses: the reconstruction loss of ``--loss`` on the restoration (``ssim_l1`` is what DRAEM's L2 + SSIM amounts
to here), and a focal loss (γ = 2) on the segmentation, which keeps the many easy background pixels from
drowning the few damaged ones.

An ensemble (``--members N``): N such models side by side in one Keras model, each from its own initial weights,
all fitting the same batches with their own losses (on the ``member_*`` outputs, the members' outputs stacked
along channels: the losses average over channels, so over members); the first two outputs are the members'
averages, so the Inspector, calibration and exports read it as one model. Members' errors are partly
independent, and averaging their maps lowers the false alarms any one of them raises.
"""
from __future__ import annotations

from typing import Any

HEAD_LEVELS = 3  # U-Net depth (--head-levels): each level halves the image, so sizes must be multiples of 2**levels
MAX_HEAD_LEVELS = 5  # a 64 px input is then 2 px at the bottom
HEAD_FIRST_FILTERS = 16  # the first level's; each level doubles them (16, 32, 64), the bottom 2× the last
FOCAL_GAMMA = 2.0
SEGMENTATION_WEIGHT = 1.0  # relative to the reconstruction loss
# Batch statistics' running averages follow within ~10 steps (Keras' 0.99 takes ~100): at inspection the head
# then sees what it was trained with, also after short runs.
BN_MOMENTUM = 0.9
PRIOR_LOGIT = -4.6  # the head starts at p ≈ 0.01 damaged per pixel (focal loss's prior initialisation)


def build_with_head(builder, input_shape, *, members: int = 1, head_levels: int = HEAD_LEVELS, **hparams):
    """(model with outputs [reconstruction, segmentation], the CAE's encoder) for the CAE `builder` builds; with
    `members` > 1 an ensemble of that many (outputs [reconstruction, segmentation, member_reconstructions,
    member_segmentations], the first member's encoder); the head `head_levels` deep (`hparams` are the CAE's own:
    its `levels` are the autoencoder's). `members` and `head_levels` are checked by models.spec, the one way in."""
    if members == 1:
        return _build_one(builder, input_shape, head_levels=head_levels, **hparams)
    return _build_ensemble(builder, input_shape, members, head_levels=head_levels, **hparams)


def _build_ensemble(builder, input_shape, members: int, *, head_levels: int, **hparams):
    import keras
    from keras import layers

    copies = [_build_one(builder, input_shape, name=f"member{index + 1}", head_levels=head_levels, **hparams)
              for index in range(members)]
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    outputs = [member(inputs) for member, _ in copies]
    reconstructions, segmentations = [output[0] for output in outputs], [output[1] for output in outputs]
    model = keras.Model(inputs, [layers.Average(name="reconstruction")(reconstructions),
                                 layers.Average(name="segmentation")(segmentations),
                                 layers.Concatenate(name="member_reconstructions")(reconstructions),
                                 layers.Concatenate(name="member_segmentations")(segmentations)],
                        name=f"{copies[0][0].name}_x{members}")
    return model, copies[0][1]


def _build_one(builder, input_shape, *, head_levels: int, name: str | None = None, **hparams):
    import keras
    from keras import layers

    autoencoder, encoder = builder(input_shape, **hparams)
    height, width, _ = (int(side) for side in input_shape)
    if height % 2**head_levels or width % 2**head_levels:
        raise ValueError(f"--head needs sizes that are multiples of {2**head_levels} ({head_levels} levels); got "
                         f"{height}×{width}")
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    reconstruction = layers.Identity(name="reconstruction")(autoencoder(inputs))
    difference = layers.Subtract(name="head_difference")([inputs, reconstruction])  # the residual, signed
    features = layers.Concatenate(name="head_input")([inputs, reconstruction, difference])
    skips = []
    filters_per_level = [HEAD_FIRST_FILTERS * 2**level for level in range(head_levels)]
    for level, filters in enumerate(filters_per_level, start=1):
        features = _double_conv(features, filters, f"head_down{level}")
        skips.append(features)
        features = layers.MaxPooling2D(2, name=f"head_down{level}_pool")(features)
    features = _double_conv(features, 2 * filters_per_level[-1], "head_bottom")
    for level, filters in reversed(list(enumerate(filters_per_level, start=1))):
        features = layers.UpSampling2D(2, name=f"head_up{level}_upsample")(features)
        features = layers.Concatenate(name=f"head_up{level}_skip")([features, skips[level - 1]])
        features = _double_conv(features, filters, f"head_up{level}")
    segmentation = layers.Conv2D(1, 1, activation="sigmoid", name="segmentation",
                                 bias_initializer=keras.initializers.Constant(PRIOR_LOGIT))(features)
    return keras.Model(inputs, [reconstruction, segmentation], name=name or f"{autoencoder.name}_head"), encoder


def _double_conv(features, filters: int, prefix: str):
    from keras import layers

    for index in (1, 2):
        features = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{prefix}_conv{index}")(features)
        features = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_bn{index}")(features)
        features = layers.Activation("relu", name=f"{prefix}_act{index}")(features)
    return features


def compile_with_head(model, options: Any) -> None:
    """Adam at `options.lr`; `options.loss` on the reconstruction, focal loss on the segmentation."""
    _compile(model, options, "reconstruction", "segmentation")


def head_example(inputs, targets, masks):
    """The head model fits (damaged input) → (clean target, damage mask)."""
    return inputs, {"reconstruction": targets, "segmentation": masks}


def compile_ensemble(model, options: Any) -> None:
    """As `compile_with_head`, each member on its own outputs (the averages train through their members' losses);
    the AUC is the ensemble's (the averaged map's)."""
    _compile(model, options, "member_reconstructions", "member_segmentations",
             untrained=("reconstruction", "segmentation"))


def _compile(model, options: Any, reconstruction: str, segmentation: str, untrained: tuple[str, ...] = ()) -> None:
    """Adam at `options.lr`, `options.loss` on the output `reconstruction`, focal loss on `segmentation`, no loss
    on the `untrained` outputs, and the AUC of the output named "segmentation"."""
    import keras

    from utils.losses import get_loss

    model.compile(
        optimizer=keras.optimizers.Adam(options.lr),
        loss={reconstruction: get_loss(options.loss),
              segmentation: keras.losses.BinaryFocalCrossentropy(gamma=FOCAL_GAMMA),
              **{name: None for name in untrained}},
        loss_weights={reconstruction: 1.0, segmentation: SEGMENTATION_WEIGHT, **{name: 0.0 for name in untrained}},
        metrics={"segmentation": [keras.metrics.AUC(name="auc", num_thresholds=100)]},
    )


def ensemble_example(members: int):
    """The ensemble fits (damaged input) → every member's (clean target, damage mask), and the averages'."""

    def example(inputs, targets, masks):
        import tensorflow as tf

        return inputs, {"reconstruction": targets, "segmentation": masks,
                        "member_reconstructions": tf.tile(targets, [1, 1, 1, members]),
                        "member_segmentations": tf.tile(masks, [1, 1, 1, members])}

    return example


def segmentation_map(inputs, outputs):
    """The head's probability of damage per pixel, N×H×W in [0, 1]."""
    return outputs[1][..., 0]
