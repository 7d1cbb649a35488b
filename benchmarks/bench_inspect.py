"""How fast the Inspector turns images into verdicts, against two baselines measured in the same process.

    python benchmarks/bench_inspect.py [--model RUN] [--size 256] [--batch 8] [--repeats 5]
    python benchmarks/bench_inspect.py --tile 128 [--photos 512x512,2048x2048,6000x2000]   # large photos, tiled

* forward      the bare autoencoder forward pass on the same batch (compiled): the ceiling.
* inspector    Inspector.inspect: preprocessing, reconstruction + SSIM map in one graph, blob decisions.
* seed loop    the original method's way: per image model.predict, scikit-image SSIM map, seed rule.

With --tile T (or a tiled --model run), photos of the --photos sizes (width x height, ascending) are inspected
tile batch by tile batch instead, and the table gives images/s, tiles/s and the process's peak resident memory
after each size (sizes ascend, so each peak belongs to its size): benchmarks/results/inspect_photos.json.

Without --model, an untrained model of the chosen architecture is used (speed does not depend on the weights).
Prints a table and writes benchmarks/results/inspect.json. No path to a verdict can beat the forward pass it
contains, so forward_vs_seed_loop is the most any Inspector could gain over the seed loop on this machine: where
the per-image loop already keeps the processor busy (a CPU), that ceiling is low; on a GPU, per-image calls leave
it idle and batching pays far more.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
from utils.tensorflow_startup import import_tensorflow  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="RUN", help="a run folder (default: an untrained --architecture)")
    parser.add_argument("--architecture", default="myCAE", help="model built when no run is given (default: myCAE)")
    parser.add_argument("--size", type=int, default=256, help="image size without a run (default: 256)")
    parser.add_argument("--batch", type=int, default=8, help="images per batch (default: 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions; the best is kept (default: 5)")
    parser.add_argument("--tile", type=int, help="an untrained run in tile mode (tile T, stride T/2): large photos")
    parser.add_argument("--photos", default="512x512,2048x2048,6000x2000", help="photo sizes for tiles, WxH")
    parser.add_argument("--out", help="JSON file (default: benchmarks/results/inspect.json, or inspect_photos.json "
                        "with tiles)")
    return parser.parse_args()


def make_run(args: argparse.Namespace):
    """The run to benchmark: loaded from --model, or an untrained model with a nominal calibration, written as a
    run folder in a temporary folder and loaded like any other (load_run is the one way to a run)."""
    import models
    from utils import run as run_module
    from utils.preprocessing import Stretch, Tiles

    if args.model:
        return run_module.load_run(args.model)
    preprocessing = (Tiles(tile=args.tile, color_mode="grayscale") if args.tile
                     else Stretch(size=args.size, color_mode="grayscale"))
    autoencoder, encoder = models.build(args.architecture, preprocessing.input_shape)
    folder = Path(tempfile.mkdtemp(prefix="aivision-bench-"))
    run_module.save_model(autoencoder, folder / run_module.MODEL_FILE)
    run_module.write_json(folder / run_module.CONFIG_FILE, {
        "model": args.architecture, "input_shape": list(preprocessing.input_shape),
        "preprocessing": preprocessing.record(), "status": "untrained"})
    run_module.write_json(folder / run_module.CALIBRATION_FILE, {"threshold": 0.5, "min_area": 85})
    return run_module.load_run(folder)


def photo_rows(inspector, args: argparse.Namespace) -> list[dict]:
    """Images/s, tiles/s and peak memory for each large photo size, smallest first."""
    import resource

    import numpy as np

    rows = []
    for text in args.photos.split(","):
        width, height = (int(side) for side in text.lower().split("x"))
        photo = np.random.default_rng(0).integers(0, 256, (height, width, 1), dtype=np.uint8)
        tiles = inspector.preprocessing.plan(photo).count
        rate = best_rate(lambda: inspector.inspect([photo]), 1, max(1, args.repeats // 2))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
        rows.append({"photo": f"{width}x{height}", "tiles": tiles, "images_per_s": rate, "tiles_per_s": rate * tiles,
                     "peak_rss_mb": round(peak_mb, 1), "photo_mb": round(photo.nbytes / 2**20, 1)})
        print(f"{text:>10}  {tiles:>6} tiles  {rate:8.3f} images/s  {rate * tiles:8.1f} tiles/s  "
              f"peak {peak_mb:7.0f} MB", flush=True)
    return rows


def demo_images(count: int, size: int) -> list:
    from utils.synthetic import render_sample

    return [render_sample("test/scratch", index, seed=0, size=size)[0] for index in range(count)]


def best_rate(function, images: int, repeats: int) -> float:
    """Images per second of the fastest of `repeats` calls (after one warm-up call)."""
    function()
    fastest = min(_timed(function) for _ in range(repeats))
    return images / fastest


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def seed_loop(autoencoder, batch) -> None:
    """The original per-image path: predict one image, scikit-image SSIM map, seed rule."""
    from skimage.metrics import structural_similarity

    from utils.blobs import decide

    for image in batch:
        reconstruction = autoencoder.predict(image[None], verbose=0)[0]
        _, similarity = structural_similarity(image[:, :, 0], reconstruction[:, :, 0], win_size=11,
                                              gaussian_weights=True, sigma=1.5, data_range=1.0, full=True)
        decide(1.0 - similarity, rule="seed")


def main() -> int:
    args = parse_args()
    tf = import_tensorflow()

    from utils.inspector import Inspector

    run = make_run(args)
    inspector = Inspector(run, batch_size=args.batch)
    if inspector.preprocessing.mode == "tiles":
        out = Path(args.out or PROJECT_ROOT / "benchmarks" / "results" / "inspect_photos.json")
        rows = photo_rows(inspector, args)
        result = {"model": run.config["model"], "preprocessing": inspector.preprocessing.record(),
                  "batch": args.batch, "rows": rows}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    images = demo_images(args.batch, inspector.size)
    batch = inspector.prepare(images)
    forward = tf.function(lambda x: run.autoencoder(x, training=False))
    rates = {
        "forward_ips": best_rate(lambda: forward(batch).numpy(), args.batch, args.repeats),
        "inspector_ips": best_rate(lambda: inspector.inspect(images), args.batch, args.repeats),
        "seed_loop_ips": best_rate(lambda: seed_loop(run.autoencoder, batch), args.batch, max(1, args.repeats // 2)),
    }
    result = {"model": run.config["model"], "size": inspector.size, "batch": args.batch, **rates,
              "inspector_vs_forward": rates["inspector_ips"] / rates["forward_ips"],
              "inspector_vs_seed_loop": rates["inspector_ips"] / rates["seed_loop_ips"],
              "forward_vs_seed_loop": rates["forward_ips"] / rates["seed_loop_ips"],
              "device": tf.config.list_logical_devices()[-1].device_type}
    print(f"{'path':<12}{'images/s':>10}{'vs inspector':>14}")
    for name in ("forward", "inspector", "seed_loop"):
        rate = rates[f"{name}_ips"]
        print(f"{name:<12}{rate:>10.1f}{rates['inspector_ips'] / rate:>13.2f}x")
    print(f"model {result['model']}, {inspector.size} px, batch {args.batch}: inspector = "
          f"{result['inspector_vs_forward']:.2f} of the bare forward pass, "
          f"{result['inspector_vs_seed_loop']:.1f}x the seed loop (the forward pass alone, the ceiling: "
          f"{result['forward_vs_seed_loop']:.1f}x)")
    out = Path(args.out or PROJECT_ROOT / "benchmarks" / "results" / "inspect.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
