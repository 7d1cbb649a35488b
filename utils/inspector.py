"""The Inspector: the one path from image to verdict, shared by test.py, IoU_test.py and main.py.

    inspector = Inspector.from_run("saved_models/<run>")        # or None: the newest run
    results = inspector.inspect([image, ...])                  # decoded arrays of any size
    results[0].verdict, results[0].score, results[0].blobs

Images are prepared by the run's preprocessing step (utils/preprocessing.py). Per batch, the model's forward pass
and its anomaly map (the one its spec and config.json name, utils/anomaly_maps.py) run as one graph, the
Inspector's backend: a compiled TensorFlow graph of the Keras model (``KerasForward``, runtime "tensorflow"), or
the run's export run by ONNX Runtime or OpenVINO (utils/export.py), which needs no TensorFlow. The Inspector does
not know which map it is, nor which runtime computes it. Thresholding and connected components then run per image on
the CPU (OpenCV), at the preprocessing's decision resolution: model pixels for ``stretch`` (as the original
method), the photo's own pixels for ``keep-aspect`` and ``tiles`` (maps stitched back). Whatever the mode, a
result's pictures, map, defect mask and boxes are at the photo's own pixels (stretch: stretched back after the
decision, so verdicts and scores are the original method's); blob areas and min_area stay in the decision's pixels.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from utils import blobs as blobs_module
from utils.anomaly_maps import reconstruction_of
from utils.run import DEFAULT_RUNS_DIR, Run, load_run, resolve_run


@dataclass
class InspectionResult:
    """What the Inspector says about one image (arrays at the photo's own pixels)."""

    verdict: str  # "OK" or "NOK"
    score: float  # continuous, higher = more anomalous (calibrated rule: NOK ⇔ score ≥ threshold)
    threshold: float
    min_area: int
    max_blob_area: float
    blobs: list = field(repr=False)  # utils.blobs.Blob, largest first
    input: np.ndarray = field(repr=False)  # H×W×C float32 in [0, 1], the photo in the run's colour mode
    reconstruction: np.ndarray = field(repr=False)  # H×W×C float32
    anomaly_map: np.ndarray = field(repr=False)  # H×W float32, the run's map (e.g. 1 − SSIM)
    defect_mask: np.ndarray = field(repr=False)  # H×W bool
    rule: str = "calibrated"
    map_name: str = "ssim"  # which anomaly map (utils/anomaly_maps.py)
    display_range: tuple[float, float] = (0.0, 1.0)  # heat maps: low → black, high and above → full colour
    decision_map: np.ndarray | None = field(default=None, repr=False)  # the map the verdict was taken on
    # (decision resolution: model pixels for stretch, else anomaly_map itself)


class KerasForward:
    """The run's Keras model and anomaly map as one compiled TensorFlow graph: model inputs → (reconstructions,
    maps) as numpy arrays. The default backend; an export's backends (utils/export.py) have the same interface."""

    runtime = "tensorflow"

    def __init__(self, run: Run):
        import tensorflow as tf

        model, anomaly_map = run.autoencoder, run.anomaly_map
        self.anomaly_map = anomaly_map

        @tf.function(reduce_retracing=True)
        def forward(batch):
            outputs = model(batch, training=False)
            return reconstruction_of(outputs), anomaly_map.compute(batch, outputs)

        self._forward = forward

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reconstructions, maps = self._forward(batch)
        return reconstructions.numpy(), maps.numpy()


class Inspector:
    """Reconstruct, compare and decide, for batches of images of any size."""

    def __init__(self, run: Run, *, decision: str = "calibrated", batch_size: int = 8, forward=None):
        """`forward`: the backend (model inputs → reconstructions, maps; with `anomaly_map` and `runtime`
        attributes); default KerasForward(run)."""
        if decision not in blobs_module.DECISION_RULES:
            raise ValueError(f"decision must be one of {blobs_module.DECISION_RULES}; got {decision!r}")
        if decision == "calibrated" and not run.calibration:
            raise ValueError(f"Run {str(run.path)!r} has no calibration.json: calibrate it with "
                             f"`python train.py --calibrate {run.path}` or use --decision seed.")
        self.run = run
        self.decision = decision
        self.batch_size = batch_size
        self.forward = forward if forward is not None else KerasForward(run)
        self._decision_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="decide")

    @classmethod
    def from_run(cls, path: str | Path | None = None, *, decision: str = "calibrated", batch_size: int = 8,
                 runs_dir: str | Path = DEFAULT_RUNS_DIR, runtime: str = "tensorflow") -> "Inspector":
        """The Inspector of a run folder (None: the newest). `runtime`: "tensorflow" (the Keras model), "onnx" or
        "openvino" (its export in RUN/export/, no TensorFlow imported), or "auto" (an export when one is current
        and its runtime installed, else TensorFlow: utils.export.choose_runtime)."""
        if runtime != "tensorflow":
            from utils import export

            folder = resolve_run(path, runs_dir=runs_dir)
            runtime = export.choose_runtime(folder, runtime)
            if runtime != "tensorflow":
                run = load_run(folder, with_models=False)
                return cls(run, decision=decision, batch_size=batch_size, forward=export.load_forward(run, runtime))
            path = folder
        return cls(load_run(path, runs_dir=runs_dir), decision=decision, batch_size=batch_size)

    @property
    def runtime(self) -> str:
        return self.forward.runtime

    @property
    def anomaly_map(self):
        """The run's anomaly map (name, display range), as the backend computes it."""
        return self.forward.anomaly_map

    @property
    def model_name(self) -> str:
        return self.run.config["model"]

    @property
    def preprocessing(self):
        return self.run.preprocessing

    @property
    def size(self) -> int:
        return self.run.size

    @property
    def color_mode(self) -> str:
        return self.run.color_mode

    def prepare(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded images → the model inputs of all of them, stacked (a tiled photo gives several)."""
        plans = [self.preprocessing.plan(image) for image in images]
        return np.concatenate([plan.inputs(0, plan.count) for plan in plans])

    def reconstruct_and_map(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reconstructions N×h×w×C, anomaly maps N×h×w) for model inputs, in chunks of batch_size."""
        reconstructions, maps = [], []
        for start in range(0, len(batch), self.batch_size):
            chunk_reconstructions, chunk_maps = self.forward(batch[start:start + self.batch_size])
            reconstructions.append(chunk_reconstructions)
            maps.append(chunk_maps)
        return np.concatenate(reconstructions), np.concatenate(maps)

    def maps_for(self, images: Sequence[np.ndarray]) -> tuple[list, list, list]:
        """(views, reconstructions, anomaly maps) of each image at the decision resolution.

        The preprocessing plans every photo's model inputs (one, or its tiles); they run in batches of
        batch_size across photos, cut just before and blended into their photo's result just after each batch, so
        memory holds one batch of inputs and one running sum per photo, whatever the photos' size."""
        plans = [self.preprocessing.plan(image) for image in images]
        inputs = [(plan, index) for plan in plans for index in range(plan.count)]
        for start in range(0, len(inputs), self.batch_size):
            pieces = inputs[start:start + self.batch_size]
            batch = np.concatenate([plan.inputs(index, index + 1) for plan, index in pieces])
            reconstructions, maps = self.forward(batch)
            for offset, (plan, index) in enumerate(pieces):
                plan.add(index, reconstructions[offset:offset + 1], maps[offset:offset + 1])
        results = [plan.result() for plan in plans]
        views = [self.preprocessing.view(image) for image in images]
        return views, [result[0] for result in results], [result[1] for result in results]

    def decide(self, anomaly_map: np.ndarray) -> blobs_module.Decision:
        if self.decision == "seed":
            return blobs_module.decide(anomaly_map, rule="seed")
        calibration = self.run.calibration
        return blobs_module.decide(anomaly_map, rule="calibrated", threshold=float(calibration["threshold"]),
                                   min_area=int(calibration["min_area"]))

    def inspect(self, images: Sequence[np.ndarray]) -> list[InspectionResult]:
        """Inspect decoded images (any size, H×W or H×W×C, uint8 or float in [0, 1])."""
        if len(images) == 0:
            return []
        _, reconstructions, maps = self.maps_for(images)
        photos = [self.preprocessing.photo(image) for image in images]
        # OpenCV and NumPy release the GIL, so the per-image work uses every core, as the forward pass did.
        work = list(zip(photos, reconstructions, maps))
        return list(self._decision_pool.map(self._result, *zip(*work))) if len(work) > 1 else [self._result(*work[0])]

    def redecide(self, result: InspectionResult) -> InspectionResult:
        """The same inspection (maps not recomputed) under this Inspector's rule: e.g. the seed rule's verdict
        on the maps a calibrated Inspector computed."""
        # The reconstruction is at the photo's pixels already; stretching it back onto the photo leaves it as it is.
        return self._result(result.input, result.reconstruction, result.decision_map)

    def _result(self, photo: np.ndarray, reconstruction: np.ndarray, decision_map: np.ndarray) -> InspectionResult:
        """Decide on the map at the decision resolution, then report at the photo's own pixels."""
        decision = self.decide(decision_map)
        anomaly_map, defect_mask, blobs = decision_map, decision.defect_mask, decision.blobs
        if decision_map.shape != photo.shape[:2]:  # stretch: stretch the outputs back onto the photo
            reconstruction, anomaly_map, defect_mask = self.preprocessing.on_photo(
                reconstruction, decision_map, defect_mask, photo.shape)
            blobs = blobs_module.blobs_on_photo(blobs, decision_map.shape, photo.shape[:2])
        return InspectionResult(
            verdict=decision.verdict, score=float(decision.score), threshold=float(decision.threshold),
            min_area=int(decision.min_area), max_blob_area=float(decision.max_blob_area), blobs=blobs,
            input=photo, reconstruction=reconstruction, anomaly_map=anomaly_map, defect_mask=defect_mask,
            rule=decision.rule, map_name=self.anomaly_map.name, display_range=self.anomaly_map.display_range,
            decision_map=decision_map)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """The encoder's code for each model input of a batch (`prepare`'s output), for display."""
        if self.run.encoder is None:
            raise ValueError(f"Run {str(self.run.path)!r} has no encoder.keras.")
        return np.asarray(self.run.encoder(batch, training=False))
