"""Train an autoencoder on defect-free images and save a run folder (last stdout line: its path).

    python train.py                                   # restore-segment resnetCAE at 64 px on the demo set
    python train.py --recipe seed --model myCAE --size 256   # the original method
    python train.py --data path/to/mvtec_like --model mvtecCAE --size 128 --epochs 50
    python train.py --config recipe.yaml --seed 1     # options from a YAML/JSON recipe, flags override it
    python train.py --config saved_models/<run>/config.json   # repeat a run's recipe exactly
    python train.py --resume saved_models/<run>       # continue a run from its last checkpoint
    python train.py --optuna 30 --epochs 20 --size 128   # tune myCAE into myCAE_optuna; rerun to resume
    python train.py --export saved_models/<run> --format onnx   # for a line PC without TensorFlow
"""
from __future__ import annotations

import argparse
import logging
import sys

from utils.tensorflow_startup import import_tensorflow


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from utils.blobs import SEED_MIN_AREA
    from utils.config import add_options, train_defaults

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, defaults=train_defaults())
    parser.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint with its own "
                        "options; --epochs, if given, sets the new total")
    calibration = parser.add_argument_group("calibration (runs automatically after training)")
    calibration.add_argument("--calibrate", metavar="RUN", help="redo RUN's calibration without training (by its "
                             "own --threshold-from, unless given)")
    calibration.add_argument("--min-area", type=int, help="minimum defect blob area in pixels at model size "
                             f"(default: {SEED_MIN_AREA} px at 256², scaled with the image area)")
    calibration.add_argument("--finetune", metavar="DIR", help="with --calibrate: labelled images (good/ and "
                             "<defect>/ sub-folders) to tune min area and threshold for the best balanced "
                             "accuracy. Never use the images you will report results on: keep a separate "
                             "tuning set. The images used are recorded in calibration.json")
    search = parser.add_argument_group("hyperparameter search (Optuna; tunes myCAE into myCAE_optuna)")
    search.add_argument("--optuna", type=int, metavar="N", help="run an Optuna study until it holds N finished "
                        "trials, then retrain the best as a run folder; the search picks the architecture, --loss, "
                        "--lr, --batch-size and --noise; --epochs bounds each trial. Rerun the same command to "
                        "resume a stopped study, with a larger N to extend it. A study starts from the original "
                        "method's options (--recipe seed, 256 px), which flags override")
    search.add_argument("--study", metavar="NAME", help="study name (default: myCAE_<dataset>_<size>px_<color>); "
                        "results go to OUT/optuna/NAME/")
    search.add_argument("--storage", metavar="URL", help="Optuna database URL, e.g. postgresql://user@host/db "
                        "so several machines work on one study (default: sqlite:///OUT/optuna.db)")
    search.add_argument("--objective", choices=("val_loss", "auroc"), default="val_loss", help="val_loss: "
                        "validation SSIM loss on good images; auroc: image AUROC on --tuning-data (default: "
                        "%(default)s)")
    search.add_argument("--tuning-data", metavar="DIR", help="with --objective auroc: labelled tuning images "
                        "(good/ and <defect>/ sub-folders). Never the set you report results on: keep a separate "
                        "tuning split, or the reported numbers are tuned on their own test")
    export = parser.add_argument_group("export (a line PC then needs only requirements-line.txt)")
    export.add_argument("--export", metavar="RUN", help="write RUN's whole inference graph (model input → "
                        "reconstruction and anomaly map) to RUN/export/, checked against Keras; main.py --model RUN "
                        "then inspects with it (--runtime auto)")
    export.add_argument("--format", choices=("onnx", "openvino"), help="with --export: onnx (for ONNX Runtime) or "
                        "openvino (OpenVINO IR). No litert: Keras' LiteRT export of these graphs keeps TensorFlow "
                        "(Flex) ops, so it would need TensorFlow on the line again")
    return parser.parse_args(argv)


def run_optuna(args: argparse.Namespace, config):
    """--optuna N: run or resume the study; returns the best trial's retrained run folder."""
    from utils.tuning import run_study

    return run_study(config, n_trials=args.optuna, study_name=args.study, storage=args.storage,
                     objective=args.objective, tuning_data=args.tuning_data).run_dir


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    import_tensorflow()  # quietly, before any module imports it (the model choices of --help do)
    args = parse_args(argv)
    from utils import training
    from utils.config import TrainConfig, given_options, make_config, train_defaults

    try:
        if args.export or args.format:
            if not (args.export and args.format):
                raise ValueError("--export RUN and --format FORMAT go together")
            from utils.export import export_run

            exported = export_run(args.export, args.format)
            print(f"exported {exported}")
            run_dir = args.export
        elif args.calibrate:
            from utils.calibration import calibrate

            result = calibrate(args.calibrate, min_area=args.min_area, finetune_dir=args.finetune,
                               threshold_from=given_options(args).get("threshold_from"))
            print(f"threshold {result['threshold']:.5f}, min area {result['min_area']} px ({result['method']})")
            run_dir = args.calibrate
        elif args.finetune:
            raise ValueError("--finetune goes with --calibrate RUN (calibrate a trained run on labelled images)")
        elif args.optuna is None and (args.study or args.storage or args.tuning_data or args.objective != "val_loss"):
            raise ValueError("--study, --storage, --objective and --tuning-data go with --optuna N")
        elif args.optuna is not None and args.resume:
            raise ValueError("--resume continues a run; to resume a study, rerun --optuna N with its --study NAME")
        elif args.resume:
            if "config" in args or set(given_options(args)) - {"epochs"}:
                raise ValueError("--resume continues a run with its own options; only --epochs may be given")
            run_dir = training.resume(args.resume, epochs=given_options(args).get("epochs"))
        else:
            defaults = TrainConfig() if args.optuna is not None else train_defaults()  # a study tunes the seed's myCAE
            config = make_config(getattr(args, "config", None), given_options(args), defaults=defaults)
            if args.optuna is not None:
                run_dir = run_optuna(args, config)
            else:
                run_dir = training.train(config)
                print("\n".join(training.next_steps(run_dir, config)))
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
