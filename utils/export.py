"""Export: a run's whole inference graph for a runtime without TensorFlow, and the line's backends that run it.

    python train.py --export saved_models/<run> --format onnx        # or openvino

The exported graph is the Inspector's forward pass: a batch of model inputs (already preprocessed, N×h×w×C
float32 in [0, 1]) → ``reconstruction`` (N×h×w×C) and ``anomaly_map`` (N×h×w, the run's own map from its model
spec: 1 − SSIM, the segmentation head's probability, …). It is written by Keras 3's own ``model.export`` into
``RUN/export/`` (``model.onnx``; ``model.xml`` + ``model.bin``) with ``export.json`` beside it:
per format the file, the tensor names, the anomaly map's name and display range, the preprocessing record, the
SHA-256 of the model.keras it came from, and the largest difference from Keras found when the export was checked.
config.json and calibration.json stay where they are, in the run folder, and are read from there: a
recalibration needs no new export, a retrained model.keras makes the export stale (refused until re-exported).

Every export is checked before it replaces the previous one: the runtime (when installed) runs the file on a
fixed batch and must agree with the Keras graph within ``PARITY_TOLERANCE``.

The backends (``load_forward``) need numpy and their runtime only: ONNX Runtime (``onnx``) or OpenVINO
(``openvino``). OpenVINO's CPU plugin computes in bfloat16 on processors that support it unless told otherwise
(differences of 2e-4 in the map); it is asked for float32 here, which keeps parity. LiteRT is not offered:
Keras' LiteRT export of these graphs keeps TensorFlow ("Flex") convolutions, so running it needs TensorFlow again.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from utils.anomaly_maps import AnomalyMap
from utils.run import MODEL_FILE, Run, read_json, write_json

log = logging.getLogger(__name__)

EXPORT_DIR = "export"
MANIFEST_FILE = "export.json"
FORMATS = ("onnx", "openvino")  # what train.py --export writes: the runtimes the Inspector can run it with
RUNTIMES = FORMATS
PREFERRED_RUNTIMES = ("onnx", "openvino")  # runtime "auto": the first exported and installed
RUNTIME_PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}
FORMAT_FILES = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}
INPUT_NAME = "image"
OUTPUT_NAMES = ("reconstruction", "anomaly_map")
PARITY_TOLERANCE = 1e-4  # largest |export − Keras| accepted, in map units (and in reconstruction values)


# ---------------------------------------------------------------- writing an export (needs TensorFlow and Keras)


def inference_graph(run: Run):
    """The run's forward pass and anomaly map as one Keras model: inputs → {reconstruction, anomaly_map}."""
    import keras

    from utils.anomaly_maps import reconstruction_of

    class InferenceGraph(keras.Model):
        def __init__(self, autoencoder, anomaly_map: AnomalyMap):
            super().__init__(name="inference_graph")
            self.autoencoder = autoencoder
            self.anomaly_map = anomaly_map

        def call(self, inputs):
            outputs = self.autoencoder(inputs, training=False)
            return {"reconstruction": reconstruction_of(outputs), "anomaly_map": self.anomaly_map.compute(inputs, outputs)}

    graph = InferenceGraph(run.autoencoder, run.anomaly_map)
    graph(check_batch(run.preprocessing.input_shape))  # builds it (Keras exports only models that were called)
    return graph


def check_batch(input_shape) -> np.ndarray:
    """A fixed batch of two model inputs: uniform noise and a smooth gradient with a dark square."""
    height, width, channels = (int(side) for side in input_shape)
    noise = np.random.default_rng(0).random((height, width, channels), dtype=np.float32)
    rows, columns = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    smooth = np.repeat((0.25 + 0.5 * rows * columns)[..., None], channels, axis=-1).astype(np.float32)
    smooth[height // 4:height // 2, width // 4:width // 2] = 0.1
    return np.stack([noise, smooth])


def export_run(path: str | Path, export_format: str) -> Path:
    """Write RUN/export/<file> for `export_format` (one of FORMATS), checked against Keras; returns the file."""
    from utils.run import load_run

    if export_format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got {export_format!r}")
    run = load_run(path)
    graph = inference_graph(run)
    folder = run.path / EXPORT_DIR
    folder.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".writing-") as scratch:
        written = _write_format(graph, run, Path(scratch), export_format)
        difference = _check_parity(graph, run, written, export_format)
        for name in FORMAT_FILES[export_format]:
            (Path(scratch) / name).replace(folder / name)
    entry = {"file": FORMAT_FILES[export_format][0], "input": INPUT_NAME, "outputs": list(OUTPUT_NAMES),
             "input_shape": [None, *run.preprocessing.input_shape], "model": run.config["model"],
             "head": bool(run.config.get("head", False)), "anomaly_map": _map_record(run.anomaly_map),
             "preprocessing": run.preprocessing.record(), "model_sha256": file_sha256(run.path / MODEL_FILE),
             "max_abs_difference": difference, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "versions": _versions(export_format)}
    manifest_path = folder / MANIFEST_FILE
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    write_json(manifest_path, {**manifest, export_format: entry})
    return folder / entry["file"]


def _write_format(graph, run: Run, folder: Path, export_format: str) -> Path:
    import keras

    target = folder / FORMAT_FILES[export_format][0]
    signature = [keras.InputSpec(shape=(None, *run.preprocessing.input_shape), dtype="float32", name=INPUT_NAME)]
    graph.export(str(target), format=export_format, input_signature=signature, verbose=False)
    return target


def _check_parity(graph, run: Run, written: Path, export_format: str) -> float | None:
    """max |export − Keras| over the check batch (ValueError above PARITY_TOLERANCE); None without the runtime."""
    batch = check_batch(run.preprocessing.input_shape)
    expected = graph(batch)
    if importlib.util.find_spec(RUNTIME_PACKAGES[export_format]) is None:
        log.warning("%s is not installed: the %s export was not checked against Keras",
                    RUNTIME_PACKAGES[export_format], export_format)
        return None
    else:
        outputs = dict(zip(OUTPUT_NAMES, _BACKENDS[export_format](written, _map_record(run.anomaly_map))(batch)))
    difference = max(float(np.max(np.abs(outputs[name] - np.asarray(expected[name])))) for name in OUTPUT_NAMES)
    if not difference <= PARITY_TOLERANCE:
        raise ValueError(f"the {export_format} export differs from the Keras model by {difference:.3g} "
                         f"(more than {PARITY_TOLERANCE:g}); nothing was replaced in {written.parent.parent}")
    return difference


def _map_record(anomaly_map: AnomalyMap) -> dict:
    return {"name": anomaly_map.name, "display_range": list(anomaly_map.display_range),
            "description": anomaly_map.description, "settings": dict(anomaly_map.settings)}


def _versions(export_format: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    packages = ["keras", "tensorflow", {"onnx": "tf2onnx", "openvino": "openvino"}[export_format]]
    found = {}
    for package in dict.fromkeys(packages):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- running an export (numpy and the runtime only)


def exported_entry(run_folder: Path, runtime: str) -> tuple[dict | None, str]:
    """(the manifest entry of `runtime`'s export, "") when it can be used, else (None, why not)."""
    manifest_path = Path(run_folder) / EXPORT_DIR / MANIFEST_FILE
    if not manifest_path.is_file():
        return None, f"{manifest_path} does not exist"
    entry = read_json(manifest_path).get(runtime)
    if not isinstance(entry, dict):
        return None, f"{manifest_path} has no {runtime} export"
    if not (manifest_path.parent / entry["file"]).is_file():
        return None, f"{manifest_path.parent / entry['file']} is missing"
    if entry.get("model_sha256") != file_sha256(Path(run_folder) / MODEL_FILE):
        return None, (f"the {runtime} export in {manifest_path.parent} was made from another {MODEL_FILE} "
                      f"(retrained since?): re-export with `python train.py --export {run_folder} --format {runtime}`")
    return entry, ""


def choose_runtime(run_folder: Path, requested: str = "auto") -> str:
    """The runtime to inspect `run_folder` with: `requested`, checked; "auto": an installed runtime whose export is
    current (PREFERRED_RUNTIMES order), else "tensorflow". ValueError saying what to do when none can be used."""
    choices = ("auto", "tensorflow", *RUNTIMES)
    if requested not in choices:
        raise ValueError(f"runtime must be one of {', '.join(choices)}; got {requested!r}")
    if requested == "tensorflow":
        return requested
    reasons = []
    for runtime in PREFERRED_RUNTIMES if requested == "auto" else (requested,):
        entry, why = exported_entry(run_folder, runtime)
        if entry is not None and importlib.util.find_spec(RUNTIME_PACKAGES[runtime]) is None:
            why = f"{RUNTIME_PACKAGES[runtime]} is not installed (pip install -r requirements-line.txt)"
        if not why:
            return runtime
        reasons.append(why)
    if requested == "auto" and importlib.util.find_spec("tensorflow") is not None:
        log.info("inspecting with TensorFlow: %s", "; ".join(reasons))
        return "tensorflow"
    advice = "" if requested != "auto" else "; TensorFlow is not installed either"
    raise ValueError(f"cannot inspect {run_folder} with runtime {requested}: {'; '.join(reasons)}{advice}. Export "
                     f"the run with `python train.py --export {run_folder} --format onnx` (or openvino) where it was "
                     "trained, and copy the whole run folder")


class ExportedForward:
    """An export's forward pass + anomaly map: model inputs → (reconstructions, maps) as float32 numpy arrays.

    The Inspector's backend for a runtime other than TensorFlow; `anomaly_map` describes the map (name, display
    range) as the run's model spec does, without importing the spec."""

    runtime = "export"

    def __init__(self, path: Path, map_record: dict):
        self.path = Path(path)
        self.anomaly_map = AnomalyMap(map_record["name"], _computed_in_the_export, tuple(map_record["display_range"]),
                                      map_record.get("description", ""), dict(map_record.get("settings", {})))

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def _computed_in_the_export(inputs, outputs):
    raise TypeError("this anomaly map is computed inside the exported graph; inspect through the Inspector")


class OnnxForward(ExportedForward):
    runtime = "onnx"

    def __init__(self, path: Path, map_record: dict):
        import onnxruntime

        super().__init__(path, map_record)
        self._session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reconstructions, maps = self._session.run(list(OUTPUT_NAMES), {self._input: np.ascontiguousarray(batch, np.float32)})
        return reconstructions, maps


class OpenVinoForward(ExportedForward):
    runtime = "openvino"

    def __init__(self, path: Path, map_record: dict):
        import openvino

        super().__init__(path, map_record)
        self._compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self._outputs = [next(output for output in self._compiled.outputs if name in output.get_names())
                         for name in OUTPUT_NAMES]
        self._request = self._compiled.create_infer_request()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        results = self._request.infer([np.ascontiguousarray(batch, np.float32)])
        reconstructions, maps = (np.array(results[output]) for output in self._outputs)  # copies: the request reuses its buffers
        return reconstructions, maps


_BACKENDS = {"onnx": OnnxForward, "openvino": OpenVinoForward}


def load_forward(run: Run, runtime: str) -> ExportedForward:
    """The backend that runs `run`'s `runtime` export; ValueError when the export is missing, stale or belongs to
    another anomaly map or preprocessing than the run's config.json names."""
    entry, why = exported_entry(run.path, runtime)
    if entry is None:
        raise ValueError(why)
    configured_map = run.config.get("anomaly_map")
    if configured_map is not None and configured_map != entry["anomaly_map"]["name"]:
        raise ValueError(f"the {runtime} export computes the {entry['anomaly_map']['name']!r} map but config.json "
                         f"names {configured_map!r}: re-export with `python train.py --export {run.path} --format {runtime}`")
    if entry["preprocessing"] != json.loads(json.dumps(run.preprocessing.record())):  # as JSON stores it
        raise ValueError(f"the {runtime} export was made for preprocessing {entry['preprocessing']} but config.json "
                         f"records {run.preprocessing.record()}: re-export the run")
    return _BACKENDS[runtime](run.path / EXPORT_DIR / entry["file"], entry["anomaly_map"])

