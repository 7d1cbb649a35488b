"""Inspect one image with a trained run: print OK or NOK, save every intermediate picture in the run folder.

    python test.py --image part.png                          # the newest run
    python test.py --model saved_models/<run> --data data/demo --index 45
    python test.py --image part.png --decision seed          # the original method's verdict

Pictures go to RUN/test/<image-stem>/: input, noisy (runs trained with --noise), code, reconstruction, residual
(heat map), defect (mask), overlay (the defect picture main.py publishes) and panel (.png), drawn by utils.plots.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from utils.run import DEFAULT_RUNS_DIR


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="RUN", help=f"run folder (default: the newest in {DEFAULT_RUNS_DIR}/)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="image file of any size and format OpenCV reads")
    source.add_argument("--data", help="labelled set (MVTec layout or its test/ folder); pick with --index")
    parser.add_argument("--index", type=int, default=0, help="with --data: which image, in the sorted order of "
                        "test/<defect>/ folders (default: %(default)s)")
    parser.add_argument("--decision", choices=("calibrated", "seed"), default="calibrated",
                        help="calibrated: the run's threshold and min area; seed: the original method "
                        "(default: %(default)s)")
    return parser.parse_args(argv)


def pick_image(args: argparse.Namespace) -> tuple[Path, str]:
    """The image to inspect and the name of its picture folder (defect type first when picked from --data)."""
    if args.image:
        return Path(args.image), Path(args.image).stem
    from utils.data import find_test_items

    items = find_test_items(args.data)
    if not 0 <= args.index < len(items):
        raise ValueError(f"--index must be between 0 and {len(items) - 1} for {args.data!r}; got {args.index}")
    return items[args.index].path, f"{items[args.index].defect}_{items[args.index].path.stem}"


def inspect_and_save(args: argparse.Namespace) -> tuple:
    """The one library path: decode → Inspector → pictures. Returns (result, folder)."""
    import tensorflow as tf

    from utils.data import add_denoising_noise, decode_image
    from utils.inspector import Inspector
    from utils.plots import save_inspection_images

    image_path, name = pick_image(args)
    image = decode_image(image_path)
    inspector = Inspector.from_run(args.model, decision=args.decision)
    result = inspector.inspect([image])[0]
    noisy = add_denoising_noise(tf.constant(result.input)).numpy() if inspector.run.config.get("noise") else None
    folder = inspector.run.path / "test" / name
    save_inspection_images(result, folder, code=inspector.encode(result.input[None])[0], noisy=noisy,
                           title=image_path.name)
    return result, folder


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        result, folder = inspect_and_save(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{result.verdict}  score {result.score:.4f}  threshold {result.threshold:.4f}  "
          f"largest blob {result.max_blob_area:.0f} px (min {result.min_area} px, {result.rule} rule)")
    print(f"pictures: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
