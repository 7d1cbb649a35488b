"""How close the line comes to this machine's limit, per model, batch size and installed runtime: one table.

    python benchmarks/bench_speed.py [--models myCAE,mvtecCAE] [--size 256] [--batches 1,8] [--repeats 20]
    python benchmarks/bench_speed.py --smoke            # tiny sizes, a few repeats: checks the benchmark runs

Untrained models (speed does not depend on the weights), grayscale, exported to every runtime that is installed
(TensorFlow always; ONNX Runtime and OpenVINO through utils/export.py). Per row:

* gflop_per_image   multiply-adds × 2 of the model's convolution and dense layers, counted from their shapes, plus
                    the anomaly map's Gaussian filters (SSIM: 5 statistics × 2 separable passes);
* peak_gflops       a float32 matmul (numpy's BLAS, 2048²) measured in the same run: the practical limit here;
* forward_ips       the backend alone: model + anomaly map on a prepared batch (what the runtime computes);
* inspector_ips     Inspector.inspect on decoded images: preparation, forward + map, blobs, verdicts;
* line_ips          the whole line, part by part: PNG files decoded from disk → Inspector → journal → JSON →
                    MQTT publish (QoS 1) to a local Mosquitto, until the broker acknowledged every result (without a
                    `mosquitto` binary: journal only, and ``line_publishes`` is false). The line inspects one part
                    at a time, so this number is the same for every batch size of a runtime;
* seed_loop_ips     the original per-image loop (model.predict, scikit-image SSIM, seed rule), TensorFlow only:
                    the same for every row of a model;
* p50_ms, p99_ms    latency of one Inspector call on `batch` images (at batch 1: per part);
* peak_rss_mb       the process's peak resident memory so far (it only grows: rows are in the order measured).

Rates are the best of `--repeats` timed calls after a warm-up; on a shared machine, compare rows of one run.
Writes benchmarks/results/speed.json (a list of rows) unless --out says otherwise.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import pwd
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

ROW_KEYS = ("model", "size", "batch", "runtime", "gflop_per_image", "peak_gflops", "forward_ips", "inspector_ips",
            "line_ips", "seed_loop_ips", "p50_ms", "p99_ms", "peak_rss_mb")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="myCAE,mvtecCAE", help="registry names (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="image size, px (default: %(default)s)")
    parser.add_argument("--batches", default="1,8", help="batch sizes (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (default: %(default)s)")
    parser.add_argument("--line-parts", type=int, default=32, help="parts sent down the line (default: %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="64 px, batches 1 and 2, 3 repeats, 4 parts")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "speed.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.batches, args.repeats, args.line_parts = 64, "1,2", 3, 4
    return args


# ---------------------------------------------------------------- what the machine and the model cost


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the fastest float32 size² matmul (2·size³ flops), the better of numpy's BLAS and TensorFlow's."""
    import numpy as np
    import tensorflow as tf

    a, b = (np.random.default_rng(seed).random((size, size), dtype=np.float32) for seed in (0, 1))
    tf_a, tf_b = tf.constant(a), tf.constant(b)
    fastest = min(best_rate(lambda: a @ b, 1, repeats), best_rate(lambda: tf.matmul(tf_a, tf_b).numpy(), 1, repeats),
                  key=lambda rate: -rate)
    return 2 * size**3 * fastest / 1e9


def layer_flops(model) -> float:
    """2 × multiply-adds of every Conv2D, Conv2DTranspose, DepthwiseConv2D and Dense layer (nested models too)."""
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += layer_flops(layer)
            continue
        config = layer.get_config()
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, height, width, channels = layer.input.shape
            total += 2 * height * width * channels * _kernel_area(config) * config["filters"]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            _, height, width, channels = layer.output.shape
            total += 2 * height * width * channels * _kernel_area(config)
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, filters = layer.output.shape
            channels = layer.input.shape[-1] // config.get("groups", 1)
            total += 2 * height * width * filters * channels * _kernel_area(config)
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * config["units"]
    return total


def _kernel_area(config: dict) -> int:
    size = config["kernel_size"]
    return size[0] * size[1] if isinstance(size, (list, tuple)) else size * size


def map_flops(map_name: str, input_shape) -> float:
    """The anomaly map's Gaussian filtering: 5 statistics × 2 separable 11-tap passes × 2 flops per pixel."""
    height, width, channels = input_shape
    return 5 * 2 * 11 * 2 * height * width * channels if map_name.startswith("ssim") else 3 * height * width * channels


# ---------------------------------------------------------------- timing


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def best_rate(function, images: int, repeats: int) -> float:
    function()
    return images / min(_timed(function) for _ in range(repeats))


def latencies_ms(function, repeats: int) -> tuple[float, float]:
    import numpy as np

    function()
    times = [_timed(function) * 1e3 for _ in range(max(repeats, 1))]
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def seed_loop_rate(autoencoder, batch, repeats: int) -> float:
    """The original per-image path: predict one image, scikit-image SSIM map, seed rule."""
    from skimage.metrics import structural_similarity

    from utils.blobs import decide

    def loop():
        for image in batch:
            reconstruction = autoencoder.predict(image[None], verbose=0)[0]
            _, similarity = structural_similarity(image[:, :, 0], reconstruction[:, :, 0], win_size=11,
                                                  gaussian_weights=True, sigma=1.5, data_range=1.0, full=True)
            decide(1.0 - similarity, rule="seed")

    return best_rate(loop, len(batch), repeats)


# ---------------------------------------------------------------- the line, with a real broker


class LocalBroker:
    """Mosquitto on a free port of 127.0.0.1, without persistence, for as long as the benchmark runs."""

    def __init__(self, folder: Path):
        binary = shutil.which("mosquitto") or next(
            (path for path in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(path, os.X_OK)), None)
        self.process = None
        if binary is None:
            return
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = folder / "mosquitto.conf"
        user = f"user {pwd.getpwuid(os.getuid()).pw_name}\n"  # as root, mosquitto would switch to its own user
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n{user}")
        self.process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._accepts():
            time.sleep(0.05)  # waiting for a process to listen, not synchronising measurements
        if not self._accepts():
            self.close()

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def line_rate(inspector, parts_folder: Path, parts: int, broker: LocalBroker, scratch: Path) -> tuple[float, bool]:
    """Parts per second of the whole line on `parts` PNG files (decode → inspect → journal → publish, acked)."""
    import cv2

    from utils.journal import Journal
    from utils.line import InspectionLine
    from utils.mqtt import MqttPublisher, MqttSettings
    from utils.sources import open_source

    inspector.inspect([cv2.imread(str(next(parts_folder.iterdir())))])  # warm-up: first-call tracing and allocation
    journal = Journal(Path(tempfile.mkdtemp(dir=scratch)) / "line.jsonl")
    publisher = None
    if broker.process is not None:
        publisher = MqttPublisher(MqttSettings(host="127.0.0.1", port=broker.port, topic_prefix="bench/line"), journal)
        publisher.start()
    stop = threading.Event()
    line = InspectionLine(inspector=inspector, journal=journal, publisher=publisher, output=io.StringIO())
    started = time.perf_counter()
    line.run(open_source(str(parts_folder), stop=stop, poll_interval_s=0.5, already_inspected=None), stop)
    undelivered = publisher.close(timeout_s=60) if publisher else 0
    elapsed = time.perf_counter() - started
    journal.close()
    return (parts - undelivered) / elapsed, publisher is not None


def write_parts(folder: Path, count: int, size: int) -> Path:
    import cv2

    from utils.synthetic import render_sample

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = render_sample("test/scratch", index, seed=0, size=size)[0]
        cv2.imwrite(str(folder / f"part_{index:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder


# ---------------------------------------------------------------- one model, every runtime


def untrained_run(name: str, size: int, folder: Path):
    """An untrained run folder of `name`, calibrated nominally, exported to every installed runtime."""
    import importlib.util

    import models
    from utils import export
    from utils import run as run_module
    from utils.preprocessing import Stretch

    preprocessing = Stretch(size=size, color_mode="grayscale")
    autoencoder, _ = models.build(name, preprocessing.input_shape)
    folder.mkdir(parents=True)
    run_module.save_model(autoencoder, folder / run_module.MODEL_FILE)
    run_module.write_json(folder / run_module.CONFIG_FILE, {
        "model": name, "input_shape": list(preprocessing.input_shape), "anomaly_map": "ssim",
        "preprocessing": preprocessing.record(), "status": "untrained"})
    run_module.write_json(folder / run_module.CALIBRATION_FILE, {"threshold": 0.5, "min_area": 85})
    runtimes = ["tensorflow"]
    for runtime in export.RUNTIMES:
        if importlib.util.find_spec(export.RUNTIME_PACKAGES[runtime]) is not None:
            export.export_run(folder, runtime)
            runtimes.append(runtime)
    return run_module.load_run(folder), runtimes


def model_rows(name: str, args: argparse.Namespace, peak: float, broker: LocalBroker, scratch: Path) -> list[dict]:
    import numpy as np

    from utils import export
    from utils.inspector import Inspector, KerasForward
    from utils.run import load_run
    from utils.synthetic import render_sample

    run, runtimes = untrained_run(name, args.size, scratch / name)
    gflop = (layer_flops(run.autoencoder) + map_flops("ssim", run.preprocessing.input_shape)) / 1e9
    batches = [int(text) for text in args.batches.split(",")]
    images = [render_sample("test/scratch", index, seed=0, size=args.size)[0] for index in range(max(batches))]
    seed_batch = np.concatenate([run.preprocessing.split(image)[0] for image in images[:4]])
    seed_rate = seed_loop_rate(run.autoencoder, seed_batch, max(1, args.repeats // 4))
    parts = write_parts(scratch / "parts" / name, args.line_parts, args.size)
    rows = []
    for runtime in runtimes:
        exported_run = run if runtime == "tensorflow" else load_run(run.path, with_models=False)
        forward = KerasForward(run) if runtime == "tensorflow" else export.load_forward(exported_run, runtime)
        line_ips, publishes = line_rate(Inspector(exported_run, batch_size=1, forward=forward), parts,
                                        args.line_parts, broker, scratch)
        for batch in batches:
            inspector = Inspector(exported_run, batch_size=batch, forward=forward)
            prepared = inspector.prepare(images[:batch])
            forward_ips = best_rate(lambda: forward(prepared), batch, args.repeats)
            p50, p99 = latencies_ms(lambda: inspector.inspect(images[:batch]), args.repeats)
            rows.append({"model": name, "size": args.size, "batch": batch, "runtime": runtime,
                         "gflop_per_image": round(gflop, 4), "peak_gflops": round(peak, 1),
                         "forward_ips": forward_ips,
                         "inspector_ips": best_rate(lambda: inspector.inspect(images[:batch]), batch, args.repeats),
                         "line_ips": line_ips, "seed_loop_ips": seed_rate, "p50_ms": p50, "p99_ms": p99,
                         "peak_rss_mb": peak_rss_mb(), "line_publishes": publishes})
            print_row(rows[-1])
    return rows


def print_row(row: dict) -> None:
    achieved = row["gflop_per_image"] * row["forward_ips"]
    print(f"{row['model']:<10}{row['size']:>5}{row['batch']:>6} {row['runtime']:<11}{row['gflop_per_image']:>8.2f}"
          f"{achieved:>9.1f} ({achieved / row['peak_gflops']:>4.0%}){row['forward_ips']:>9.1f}"
          f"{row['inspector_ips']:>9.1f} ({row['inspector_ips'] / row['forward_ips']:.2f}){row['line_ips']:>8.1f}"
          f" ({row['line_ips'] / row['forward_ips']:.2f}){row['seed_loop_ips']:>8.1f}{row['p50_ms']:>8.1f}"
          f"{row['p99_ms']:>8.1f}{row['peak_rss_mb']:>8.0f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from utils.tensorflow_startup import import_tensorflow

    import_tensorflow()  # quietly, like the scripts
    peak = matmul_peak_gflops(1024 if args.smoke else 2048)
    print(f"matmul peak {peak:.1f} GFLOP/s; forward GFLOP/s (share of peak); ratios against the forward pass")
    print(f"{'model':<10}{'size':>5}{'batch':>6} {'runtime':<11}{'GFLOP':>8}{'GFLOP/s':>16}{'forward':>9}"
          f"{'inspector':>16}{'line':>15}{'seed':>8}{'p50 ms':>8}{'p99 ms':>8}{'RSS MB':>8}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="aivision-speed-") as scratch:
        broker = LocalBroker(Path(scratch))
        try:
            for name in args.models.split(","):
                rows.extend(model_rows(name, args, peak, broker, Path(scratch)))
        finally:
            broker.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
