"""Anomaly maps: how a model's outputs for a batch become one score per pixel (higher = more anomalous).

A model spec (models/__init__.py) lists the maps it can give; a run records which one it uses in config.json
(``anomaly_map``). The Inspector calls ``anomaly_map.compute(inputs, outputs)`` inside its compiled forward pass
and knows nothing else about it: calibration, evaluation, pictures and the line read the map's name and display
range from here.

The autoencoders' maps compare the input with the reconstruction (N×H×W×C in [0, 1]):

* ``ssim``     1 − SSIM (Gaussian window 11, σ 1.5), in [0, 2]: the original method;
* ``l2``       squared difference averaged over channels, in [0, 1];
* ``ssim_l1``  1 − SSIM plus the absolute difference averaged over channels, in [0, 3]: SSIM alone is blind to
               a flat change of brightness (a stain of even tone), the L1 term sees it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

SSIM_WINDOW = 11  # Gaussian window of the SSIM map (and of the SSIM losses), px
SSIM_SIGMA = 1.5  # its standard deviation, px


@dataclass(frozen=True)
class AnomalyMap:
    """One way of turning (inputs, model outputs) into an N×H×W float32 map."""

    name: str
    compute: Callable[[Any, Any], Any]  # (inputs N×H×W×C tensor, the model's outputs) → N×H×W float32 tensor
    display_range: tuple[float, float]  # pictures: `low` shows black, `high` and above full colour
    description: str
    settings: dict = field(default_factory=dict)  # recorded in calibration.json beside the threshold


def reconstruction_of(outputs):
    """The reconstruction among a model's outputs: the output itself, or the first of several."""
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def ssim_map(inputs, outputs):
    from utils.residuals import ssim_residual_map

    return ssim_residual_map(inputs, reconstruction_of(outputs), data_range=1.0, window_size=SSIM_WINDOW,
                             sigma=SSIM_SIGMA)


def l2_map(inputs, outputs):
    from utils.residuals import l2_residual_map

    return l2_residual_map(inputs, reconstruction_of(outputs))


def ssim_l1_map(inputs, outputs):
    import tensorflow as tf

    absolute = tf.reduce_mean(tf.abs(tf.cast(inputs, tf.float32) - tf.cast(reconstruction_of(outputs), tf.float32)),
                              axis=-1)
    return ssim_map(inputs, outputs) + absolute


SSIM = AnomalyMap("ssim", ssim_map, (0.0, 1.0), "1 − SSIM between input and reconstruction",
                  {"ssim_window": SSIM_WINDOW, "ssim_sigma": SSIM_SIGMA})
L2 = AnomalyMap("l2", l2_map, (0.0, 0.25), "squared difference between input and reconstruction")
SSIM_L1 = AnomalyMap("ssim_l1", ssim_l1_map, (0.0, 1.0), "1 − SSIM plus absolute difference",
                     {"ssim_window": SSIM_WINDOW, "ssim_sigma": SSIM_SIGMA})
RECONSTRUCTION_MAPS: tuple[AnomalyMap, ...] = (SSIM, L2, SSIM_L1)  # the autoencoders' maps, default first


def choose(maps: Sequence[AnomalyMap], name: str | None, *, model: str) -> AnomalyMap:
    """The map called `name` among a model's `maps` (None: its default, the first); ValueError lists the valid."""
    if name is None:
        return maps[0]
    for anomaly_map in maps:
        if anomaly_map.name == name:
            return anomaly_map
    raise ValueError(f"{model} gives no anomaly map {name!r}; valid: {', '.join(m.name for m in maps)}")
