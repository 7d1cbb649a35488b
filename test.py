"""Inspect one image with a trained run: print OK or NOK, save every intermediate picture in the run folder.

    python test.py --image part.png                          # the newest run
    python test.py --model saved_models/<run> --data data/demo --index 45
    python test.py --image part.png --decision seed          # the original method's verdict

Pictures go to RUN/test/<folder>_<stem>/ (the image's folder and file name: crack/006.png and dent/006.png keep
apart): input, noisy (runs trained with --noise), code, reconstruction, residual (heat map), defect (mask), overlay
(the defect picture main.py publishes) and panel (.png), drawn by utils.plots. Errors (unreadable image, damaged
run, unwritable picture folder) are one line `error: ...` and exit code 2; the verdict is printed first.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from utils.run import DEFAULT_RUNS_DIR, check_writable_folder, safe_name
from utils.tensorflow_startup import import_tensorflow


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


def pick_image(args: argparse.Namespace) -> Path:
    """The image to inspect: --image, or test image --index of the labelled set --data."""
    if args.image:
        return Path(args.image)
    from utils.data import find_test_items

    items = find_test_items(args.data)
    if not 0 <= args.index < len(items):
        raise ValueError(f"--index must be between 0 and {len(items) - 1} for {args.data!r}; got {args.index}")
    return items[args.index].path


def picture_folder_name(image_path: Path) -> str:
    """<folder>_<stem> of the image (for a labelled set: <defect>_<stem>), safe as one folder name and never
    "." or ".." (Path("...png").stem is "..")."""
    return safe_name(f"{image_path.parent.name}_{image_path.stem}", default="image")


def inspect_image(args: argparse.Namespace) -> tuple:
    """The one library path: decode → Inspector. Returns (result, inspector, image path)."""
    from utils.data import decode_image
    from utils.inspector import Inspector

    image_path = pick_image(args)
    image = decode_image(image_path)
    inspector = Inspector.from_run(args.model, decision=args.decision)
    return inspector.inspect([image])[0], inspector, image_path


def save_pictures(result, inspector, image_path: Path) -> Path:
    """Every intermediate picture into RUN/test/<folder>_<stem>/; returns that folder."""
    import tensorflow as tf

    from utils.data import add_denoising_noise
    from utils.plots import save_inspection_images

    folder = inspector.run.path / "test" / picture_folder_name(image_path)
    check_writable_folder(folder, advice="move what is in the way, or copy the run folder somewhere writable "
                          "and pass --model COPY")
    noisy = add_denoising_noise(tf.constant(result.input)).numpy() if inspector.run.config.get("noise") else None
    try:
        # The code of the (first) model input: the whole photo when stretched, its first tile when tiled.
        code = inspector.encode(inspector.prepare([result.input])[:1])[0]
        save_inspection_images(result, folder, code=code, noisy=noisy,
                               title=image_path.name)
    except OSError as error:
        raise ValueError(f"Cannot write the pictures to {str(folder)!r}: {error}") from error
    return folder


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    import_tensorflow()  # quietly, before any module imports it
    try:
        result, inspector, image_path = inspect_image(args)
        print(f"{result.verdict}  score {result.score:.4f}  threshold {result.threshold:.4f}  "
              f"largest blob {result.max_blob_area:.0f} px (min {result.min_area} px, {result.rule} rule)", flush=True)
        folder = save_pictures(result, inspector, image_path)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"pictures: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
