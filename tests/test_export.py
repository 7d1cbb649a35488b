"""Export: every registry model's inference graph exported to ONNX and OpenVINO gives the Keras map and verdicts,
and the line inspects from an export without importing TensorFlow or Keras."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import PROJECT_ROOT, TINY_SIZE

FORMATS = ("onnx", "openvino")
TOLERANCE = 1e-4  # the parity bound, in map units
# (model, size, head, members): the smallest size each architecture takes; the head on myCAE, alone and two of them
MODEL_CASES = [(name, 64 if name in ("mvtecCAE", "baselineCAE", "inceptionCAE") else TINY_SIZE, False, 1)
               for name in ("mvtecCAE", "baselineCAE", "inceptionCAE", "resnetCAE", "skipCAE", "myCAE", "myCAE_optuna")]
MODEL_CASES += [("myCAE", TINY_SIZE, True, 1), ("myCAE", TINY_SIZE, True, 2)]


def test_the_cases_cover_every_registry_model():
    import models

    assert {name for name, _, _, _ in MODEL_CASES} == set(models.MODELS)
    assert any(head for _, _, head, _ in MODEL_CASES) and any(members > 1 for *_, members in MODEL_CASES)


def write_untrained_run(folder: Path, name: str, size: int, *, head: bool = False, members: int = 1,
                        anomaly_map: str | None = None) -> Path:
    """A run folder as train.py writes it (model.keras, config.json), for an untrained model: parity needs no training."""
    import models
    from utils.preprocessing import Stretch
    from utils.run import save_model, write_json

    folder.mkdir(parents=True)
    model, encoder = models.build(name, (size, size, 1), head=head, members=members)
    # Untrained, a head says ≈0.5 everywhere; sharpened, its map differs between images as a trained one's.
    heads = [model] if members == 1 else [model.get_layer(f"member{index + 1}") for index in range(members)]
    for with_head in heads if head else []:
        kernel, bias = with_head.get_layer("segmentation").get_weights()
        with_head.get_layer("segmentation").set_weights([kernel * 30.0, bias])
    save_model(model, folder / "model.keras")
    save_model(encoder, folder / "encoder.keras")
    preprocessing = Stretch(size, "grayscale")
    map_name = models.spec(name, head=head).anomaly_map(anomaly_map, model=name).name
    write_json(folder / "config.json", {"model": name, "head": head, "anomaly_map": map_name,
                                        "input_shape": list(preprocessing.input_shape),
                                        "preprocessing": preprocessing.record()})
    return folder


def calibrate_between_scores(run_dir: Path, images: list, min_area: int) -> float:
    """Write a calibration.json whose threshold lies in the widest gap between the middle Keras blob scores, so
    some images are OK and some NOK and none is within the parity tolerance of the threshold; returns the margin."""
    from utils.blobs import blob_score
    from utils.inspector import Inspector
    from utils.run import write_json

    maps = Inspector.from_run(run_dir, decision="seed").maps_for(images)[2]
    scores = np.sort([blob_score(np.asarray(values, np.float64), min_area) for values in maps])
    middle = scores[len(scores) // 4:len(scores) - len(scores) // 4]
    gap = int(np.argmax(np.diff(middle)))
    threshold = float(middle[gap] + middle[gap + 1]) / 2
    write_json(run_dir / "calibration.json", {"threshold": threshold, "min_area": min_area, "method": "test"})
    return float(middle[gap + 1] - middle[gap]) / 2


@pytest.fixture(scope="module")
def demo_test_images(tiny_demo):
    from utils.data import decode_image

    return [decode_image(path) for path in sorted((tiny_demo / "test").glob("*/*.png"))]


@pytest.mark.parametrize(("name", "size", "head", "members"), MODEL_CASES,
                         ids=[f"{name}{'+head' if head else ''}{f'x{members}' if members > 1 else ''}"
                              for name, _, head, members in MODEL_CASES])
def test_the_exported_map_and_verdicts_equal_the_keras_ones(name, size, head, members, demo_test_images, tmp_path):
    from utils.export import export_run
    from utils.inspector import Inspector

    run_dir = write_untrained_run(tmp_path / "run", name, size, head=head, members=members)
    margin = calibrate_between_scores(run_dir, demo_test_images, min_area=4)
    assert margin > TOLERANCE, "the test images give no threshold clear of the tolerance: verdicts would prove nothing"
    expected = Inspector.from_run(run_dir, runtime="tensorflow").inspect(demo_test_images)
    assert {result.verdict for result in expected} == {"OK", "NOK"}
    for export_format in FORMATS:
        exported_file = export_run(run_dir, export_format)
        assert exported_file.parent == run_dir / "export" and exported_file.is_file()
        inspector = Inspector.from_run(run_dir, runtime=export_format)
        assert inspector.runtime == export_format and inspector.run.autoencoder is None
        results = inspector.inspect(demo_test_images)
        for keras_result, result in zip(expected, results, strict=True):
            np.testing.assert_allclose(result.anomaly_map, keras_result.anomaly_map, rtol=0, atol=TOLERANCE)
            np.testing.assert_allclose(result.reconstruction, keras_result.reconstruction, rtol=0, atol=TOLERANCE)
            assert abs(result.score - keras_result.score) <= TOLERANCE
            assert (result.map_name, result.display_range) == (keras_result.map_name, keras_result.display_range)
        assert [result.verdict for result in results] == [result.verdict for result in expected]
        assert [result.blobs for result in results] == [result.blobs for result in expected]


def test_the_export_records_what_the_line_needs(tmp_path):
    from utils.export import export_run

    run_dir = write_untrained_run(tmp_path / "run", "myCAE", TINY_SIZE, anomaly_map="ssim_l1")
    export_run(run_dir, "onnx")
    entry = json.loads((run_dir / "export" / "export.json").read_text())["onnx"]
    assert entry["file"] == "model.onnx" and entry["input_shape"] == [None, TINY_SIZE, TINY_SIZE, 1]
    assert entry["anomaly_map"]["name"] == "ssim_l1" and entry["anomaly_map"]["display_range"] == [0.0, 1.0]
    assert entry["preprocessing"] == {"mode": "stretch", "size": TINY_SIZE, "color_mode": "grayscale"}
    assert 0 <= entry["max_abs_difference"] <= 1e-4
    assert sorted(path.name for path in (run_dir / "export").iterdir()) == ["export.json", "model.onnx"]


@pytest.fixture(scope="module")
def exported_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny trained run (calibrated by training) exported with train.py --export to both formats."""
    import train

    run_dir = tmp_path_factory.mktemp("exported") / tiny_run.name
    shutil.copytree(tiny_run, run_dir)
    for export_format in FORMATS:
        assert train.main(["--export", str(run_dir), "--format", export_format]) == 0
    return run_dir


# Runs main.py's main() with TensorFlow and Keras made unimportable, then reports which of them got imported.
WITHOUT_TENSORFLOW = """
import importlib.abc, json, sys
attempts = []
class RefuseTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in ("tensorflow", "keras", "tf2onnx"):
            attempts.append(name)
            raise ImportError(f"{name} is not installed on this line PC")
sys.meta_path.insert(0, RefuseTensorFlow())
sys.path.insert(0, sys.argv[1])
import main
status = main.main(sys.argv[2:])
loaded = sorted(module for module in sys.modules if module.partition(".")[0] in ("tensorflow", "keras"))
print(json.dumps({"status": status, "attempts": attempts, "loaded": loaded}))
"""


def journal_results(path: Path) -> list[dict]:
    return [record for record in map(json.loads, path.read_text().splitlines()) if record["type"] == "result"]


@pytest.fixture(scope="module")
def keras_journal(exported_run, tiny_demo, tmp_path_factory) -> Path:
    """The journal of main.py inspecting the test images with TensorFlow, the export present but not used."""
    import main as line_main

    journal = tmp_path_factory.mktemp("keras_line") / "keras.jsonl"
    assert line_main.main(["--model", str(exported_run), "--source", str(tiny_demo / "test" / "*" / "*.png"),
                           "--journal", str(journal), "--runtime", "tensorflow"]) == 0
    return journal


@pytest.mark.parametrize("runtime", ["auto", *FORMATS])
def test_the_line_inspects_from_the_export_without_tensorflow(runtime, exported_run, keras_journal, tiny_demo,
                                                              tmp_path):
    source = tiny_demo / "test"
    journal = tmp_path / "line.jsonl"
    completed = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, str(PROJECT_ROOT), "--model", str(exported_run),
         "--source", str(source / "*" / "*.png"), "--journal", str(journal), "--runtime", runtime],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report == {"status": 0, "attempts": [], "loaded": []}
    assert f"inspecting with {'onnx' if runtime == 'auto' else runtime}" in completed.stderr
    expected, results = journal_results(keras_journal), journal_results(journal)
    assert len(results) == len(expected) == 14
    for keras_record, record in zip(expected, results):
        assert record.keys() == keras_record.keys()
        assert (record["source"], record["verdict"], record["blobs"]) == (
            keras_record["source"], keras_record["verdict"], keras_record["blobs"])
        assert abs(record["score"] - keras_record["score"]) <= TOLERANCE


def test_a_stale_export_is_refused_and_auto_falls_back_to_tensorflow(exported_run, tmp_path):
    import models
    from utils.inspector import Inspector
    from utils.run import save_model

    run_dir = tmp_path / exported_run.name
    shutil.copytree(exported_run, run_dir)
    retrained, _ = models.build("myCAE", (TINY_SIZE, TINY_SIZE, 1))
    save_model(retrained, run_dir / "model.keras")  # as a retraining would: the export no longer matches it
    with pytest.raises(ValueError, match="made from another model.keras.*re-export with `python train.py --export"):
        Inspector.from_run(run_dir, runtime="onnx")
    assert Inspector.from_run(run_dir, runtime="auto").runtime == "tensorflow"
    assert Inspector.from_run(exported_run, runtime="auto").runtime == "onnx"


def test_export_options_go_together(tiny_run, capsys):
    import train

    assert train.main(["--format", "onnx"]) == 2
    assert "--export RUN and --format FORMAT go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--export", str(tiny_run), "--format", "litert"])


def test_the_speed_benchmark_smoke_mode_writes_every_key(tmp_path):
    out = tmp_path / "speed.json"
    completed = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "bench_speed.py"), "--smoke",
                                "--models", "myCAE", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = json.loads(out.read_text())
    keys = {"model", "size", "batch", "runtime", "gflop_per_image", "peak_gflops", "forward_ips", "inspector_ips",
            "line_ips", "seed_loop_ips", "p50_ms", "p99_ms", "peak_rss_mb"}
    assert [(row["runtime"], row["batch"]) for row in rows] == [(runtime, batch) for runtime in ("tensorflow", *FORMATS)
                                                                for batch in (1, 2)]
    for row in rows:
        assert keys <= row.keys() and row["model"] == "myCAE" and row["size"] == 64
        assert all(row[key] > 0 for key in keys - {"model", "size", "batch", "runtime"}), row
        assert row["p50_ms"] <= row["p99_ms"]
