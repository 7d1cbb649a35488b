"""What a registry entry says about a model: how to build it, how it trains, and which anomaly maps it gives.

A new kind of model (say an autoencoder with a segmentation head) is one new `ModelSpec`; the training loop,
the Inspector, calibration, evaluation and the line read everything they need from it and the run's config.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from utils.anomaly_maps import RECONSTRUCTION_MAPS, AnomalyMap, choose


def compile_reconstruction(model, options: Any) -> None:
    """Adam at `options.lr` on the reconstruction loss `options.loss`, with mean SSIM and MAE reported."""
    import keras

    from utils.losses import get_loss, ssim_metric

    metrics = [keras.metrics.MeanMetricWrapper(ssim_metric, name="ssim"), keras.metrics.MeanAbsoluteError(name="mae")]
    model.compile(optimizer=keras.optimizers.Adam(options.lr), loss=get_loss(options.loss), metrics=metrics)


def reconstruction_example(inputs, targets, masks):
    """An autoencoder learns (possibly damaged) input → clean target; the defect mask is not used."""
    return inputs, targets


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry. `builder(input_shape, **hparams) -> (model, encoder)`; the rest has CAE defaults."""

    builder: Callable
    anomaly_maps: tuple[AnomalyMap, ...] = RECONSTRUCTION_MAPS  # the first is the default
    compile: Callable[[Any, Any], None] = compile_reconstruction  # (model, training options) → compiled model
    # (inputs, clean targets, defect masks H×W×1) of a training batch → (x, y) as the compiled model fits them
    fit_example: Callable[[Any, Any, Any], tuple] = reconstruction_example

    def anomaly_map(self, name: str | None, *, model: str) -> AnomalyMap:
        """The map `name` (None: the default); ValueError naming the valid ones."""
        return choose(self.anomaly_maps, name, model=model)


def with_head(base: ModelSpec, *, members: int = 1, head_levels: int | None = None) -> ModelSpec:
    """`base` (an autoencoder's spec) with a segmentation head on (input, reconstruction): restore and segment;
    with `members` > 1, an ensemble of that many, their maps averaged; the head `head_levels` deep (None: the default,
    HEAD_LEVELS). Its default map is the head's; the autoencoder's maps stay available."""
    from functools import partial

    from models.segmentation_head import (HEAD_LEVELS, build_with_head, compile_ensemble, compile_with_head,
                                          ensemble_example, head_example, segmentation_map)

    segmentation = AnomalyMap("segmentation", segmentation_map, (0.0, 1.0),
                              "the segmentation head's probability of a defect")
    ensemble = members > 1
    return ModelSpec(builder=partial(build_with_head, base.builder, members=members,
                                     head_levels=HEAD_LEVELS if head_levels is None else head_levels),
                     anomaly_maps=(segmentation, *base.anomaly_maps),
                     compile=compile_ensemble if ensemble else compile_with_head,
                     fit_example=ensemble_example(members) if ensemble else head_example)
