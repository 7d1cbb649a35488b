"""Training losses and metrics for autoencoders on images in [0, 1].

* ``ssim``    1 − mean SSIM (gaussian window 11, σ 1.5; tf.image.ssim). Images must be at least 11 px.
* ``mssim``   1 − mean multi-scale SSIM (five scales, window 11; tf.image.ssim_multiscale). The image is halved
              four times and the smallest scale must still hold the 11 px window: size ≥ 176 px.
* ``l2``      mean squared error.
* ``ssim_l1`` ``ssim`` plus ``L1_WEIGHT`` × mean absolute error: SSIM alone ignores flat brightness shifts, the
              L1 term keeps the reconstruction's grey levels honest.
"""
from __future__ import annotations

from typing import Callable

from utils.anomaly_maps import SSIM_WINDOW

LOSS_NAMES = ("ssim", "mssim", "l2", "ssim_l1")
MSSIM_MIN_SIZE = SSIM_WINDOW * 2**4  # five scales: four halvings must leave the window room
L1_WEIGHT = 1.0


def ssim_loss(y_true, y_pred):
    """1 − mean SSIM over the batch; inputs N×H×W×C in [0, 1]."""
    import tensorflow as tf

    return 1.0 - tf.reduce_mean(tf.image.ssim(y_true, y_pred, max_val=1.0, filter_size=SSIM_WINDOW))


def mssim_loss(y_true, y_pred):
    """1 − mean multi-scale SSIM; needs H, W ≥ 176 (see module docstring)."""
    import tensorflow as tf

    return 1.0 - tf.reduce_mean(tf.image.ssim_multiscale(y_true, y_pred, max_val=1.0, filter_size=SSIM_WINDOW))


def l2_loss(y_true, y_pred):
    """Mean squared error."""
    import tensorflow as tf

    return tf.reduce_mean(tf.square(y_true - y_pred))


def ssim_l1_loss(y_true, y_pred):
    """SSIM loss plus a weighted mean absolute error."""
    import tensorflow as tf

    return ssim_loss(y_true, y_pred) + L1_WEIGHT * tf.reduce_mean(tf.abs(y_true - y_pred))


def ssim_metric(y_true, y_pred):
    """Mean SSIM (higher is better), reported beside every loss so runs can be compared."""
    import tensorflow as tf

    return tf.reduce_mean(tf.image.ssim(y_true, y_pred, max_val=1.0, filter_size=SSIM_WINDOW))


LOSSES: dict[str, Callable] = {"ssim": ssim_loss, "mssim": mssim_loss, "l2": l2_loss, "ssim_l1": ssim_l1_loss}


def get_loss(name: str, *, size: int | None = None) -> Callable:
    """The loss function called `name`; with `size`, also check the loss can handle that image size."""
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    if size is not None:
        minimum = MSSIM_MIN_SIZE if name == "mssim" else SSIM_WINDOW if "ssim" in name else 1
        if size < minimum:
            raise ValueError(f"Loss {name!r} needs images of at least {minimum} px; got size {size}. "
                             f"Use a larger --size or --loss ssim.")
    return LOSSES[name]
