"""The training options, declared once: defaults, help text and valid choices in one dataclass.

    config = TrainConfig(data="data/demo", size=128)        # in Python
    python train.py --config recipe.yaml --epochs 20        # a recipe file, flags override it

train.py's and benchmarks/bench_quality.py's command-line flags are generated from `TrainConfig` (`add_options`);
a recipe file (YAML or JSON) holds any of its fields, and a run's own config.json is one (it stores every option
once, at its top level), so `--config saved_models/<run>/config.json` repeats that run's recipe exactly.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from utils.run import DEFAULT_RUNS_DIR

DISTRIBUTE_CHOICES = ("none", "mirrored", "multiworker")
NOT_A_FLAG = "not_a_flag"  # metadata marker: set in a recipe file or from Python only
# Named recipes: presets of options, applied under a --config file and the flags (which override them).
RECIPES: dict[str, dict] = {
    "seed": {},  # the original method: a plain CAE, SSIM loss, 1 − SSIM map, photos stretched
    # after DRAEM; the textured painter: higher pixel AUROC and AUPRO on Magnetic Tile in two seeds; the
    # threshold from painted defects: a better balanced accuracy than the validation threshold in 6 of the 8
    # restore-segment runs on the demo set (one tie), the head being trained on the same painter
    "restore-segment": {"head": True, "synthetic_defects": True, "loss": "ssim_l1", "painter": "textured",
                        "threshold_from": "synthetic"},
}
# train.py's defaults, where they differ from TrainConfig's (the Python API's and the benchmarks', which keep the
# original method): the best measured recipe on real parts (Magnetic Tile image AUROC 0.93-0.95 against 0.57 for
# the original, benchmarks sections 21-22), at a size a first run on the demo set finishes in minutes
TRAIN_DEFAULTS = {"recipe": "restore-segment", "model": "resnetCAE", "size": 64}


def train_defaults() -> "TrainConfig":
    """The defaults of train.py's options (TrainConfig's, with TRAIN_DEFAULTS)."""
    return TrainConfig(**TRAIN_DEFAULTS)


def option(default: Any, help: str, *, choices: str | None = None, metavar: str | None = None, flag: bool = True):
    """A TrainConfig field: its default, its help text, and where its valid values come from (see `choices_for`)."""
    metadata = {"help": help, "choices": choices, "metavar": metavar, NOT_A_FLAG: not flag}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every training option with its default (the original method's). The fields are taken as given: a `recipe`
    named here is recorded, not applied; `make_config(overrides={"recipe": ...})` applies its preset first."""

    data: str | None = option(None, "dataset root: MVTec AD layout (train/good, test/<defect>, ground_truth/) or "
                              "a plain folder of defect-free images; default: the built-in demo set", metavar="DIR")
    recipe: str = option("seed", "a named preset of the options below, which still override it: seed (the "
                         "original method) or restore-segment (--head --synthetic-defects --loss ssim_l1 "
                         "--painter textured --threshold-from synthetic)",
                         choices="recipes")
    model: str = option("myCAE", "architecture", choices="models")
    epochs: int = option(100, "maximum epochs; early stopping on validation loss usually ends sooner")
    size: int = option(256, "model input side: photos are stretched to SIZE×SIZE (aspect ratio not kept), or "
                       "with --keep-aspect scaled to fit and padded")
    keep_aspect: bool = option(False, "keep the aspect ratio: longer side scaled to --size, the other padded "
                               "(reflect); maps cover exactly the photo, at its own pixels")
    tile: int | None = option(None, "train on random TILE×TILE crops and inspect the whole photo in overlapping "
                              "tiles, stitched into one map at the photo's own pixels (--size is then unused)",
                              metavar="T")
    tile_stride: int | None = option(None, "with --tile: tile step at inspection (default: T/2)", metavar="S")
    scale: float = option(1.0, "with --tile: rescale photos by F first (1: native pixels)", metavar="F")
    color: str = option("grayscale", "colour mode: auto is rgb when the training photos carry colour (a few are "
                        "looked at), else grayscale; the run records which", choices="colors")
    loss: str = option("ssim", "training loss; mssim needs --size ≥ 176", choices="losses")
    anomaly_map: str | None = option(None, "the map inspection thresholds (default: the model's own; "
                                     "1 − SSIM for the autoencoders)", choices="anomaly_maps")
    head: bool = option(False, "restore and segment: add a segmentation head on (input, reconstruction) that "
                        "learns the synthetic defects' masks (needs --synthetic-defects); its map is the default")
    members: int = option(1, "with --head: train N models side by side (own initial weights, the same batches) "
                          "and average their maps, an ensemble; training and inspection take N times as long")
    head_levels: int = option(3, "with --head: the head's depth; each level halves its map, so sizes must be "
                              "multiples of 2**LEVELS; one more level sees twice as far around each pixel",
                              metavar="LEVELS")
    batch_size: int = option(8, "images per batch and device (the global batch is this × devices)")
    lr: float = option(1e-3, "Adam learning rate")
    seed: int = option(0, "random seed for weights, shuffling, synthetic damage and the validation split")
    out: str = option(str(DEFAULT_RUNS_DIR), "folder for run folders", metavar="DIR")
    validation_split: float = option(0.1, "fraction of good images held out for early stopping and calibration")
    patience: int = option(10, "stop after this many epochs without a better validation loss (best weights kept)")
    lr_decay: bool = option(False, "halve the learning rate after half the patience (at least 2 epochs) without a "
                            "better validation loss, so long runs settle instead of bouncing on a plateau")
    augment: bool = option(False, "random flips, ±10° rotations and ±0.1 brightness")
    flips: bool = option(False, "random left-right and up-down mirror images of the training photos (nothing "
                         "else changes: a surface's texture keeps its direction)")
    relight: bool = option(False, "random smooth lighting on the training photos (a gain of up to ±20 %% varying "
                           "slowly across the photo, input and target alike), so uneven light is not learnt as "
                           "damage")
    noise: bool = option(False, "denoising training: random bright lines and gaussian noise (σ 0.1) on the "
                         "input, clean target")
    synthetic_defects: bool = option(False, "defect-removal training: half the inputs get a painted blob or "
                                     "stroke (foreign texture or a flat tone), the target stays clean")
    painter: str = option("basic", "with --synthetic-defects: basic (blobs up to 4 %% and strokes, filled with the "
                          "photo itself or a flat tone) or textured (also long and scattered patches up to 12 %%, "
                          "filled with another good photo re-toned, a procedural texture, the photo itself or "
                          "a flat tone, at 20-100 %% opacity) or any-size (textured, with patches of any size "
                          "from 0.3 %% to half the image, log-uniform)", choices="painters")
    threshold_from: str = option("validation", "how calibration sets the threshold: validation (the lowest at "
                                 "which no held-out good image is NOK) or synthetic (the best balanced accuracy "
                                 "between the held-out good images and the same with painted defects: more "
                                 "defects found, a few more false alarms)", choices="threshold_sources")
    distribute: str = option("none", "none: one device; mirrored: all local GPUs; multiworker: the machines "
                             "in TF_CONFIG", choices="distribute")
    params: str | None = option(None, "hyperparameter JSON for myCAE_optuna (default: models/myCAE_optuna.json)",
                                metavar="FILE")
    hparams: dict = option({}, "builder keyword arguments (in a recipe file; a run records the resolved ones)",
                           flag=False)


OPTION_NAMES = tuple(item.name for item in dataclasses.fields(TrainConfig))


def choices_for(source: str | None) -> tuple[str, ...] | None:
    """Valid values of an option, taken from the registry that defines them (never typed twice)."""
    if source is None:
        return None
    if source == "models":
        import models

        return tuple(models.MODELS)
    if source == "anomaly_maps":
        import models

        specs = [models.spec(name, head=head) for name in models.MODELS for head in (False, True)]
        return tuple(dict.fromkeys(anomaly_map.name for spec in specs for anomaly_map in spec.anomaly_maps))
    if source == "painters":
        from utils.defects import PAINTERS

        return PAINTERS
    if source == "recipes":
        return tuple(RECIPES)
    if source == "threshold_sources":
        from utils.calibration import THRESHOLD_SOURCES

        return THRESHOLD_SOURCES
    if source == "colors":
        from utils.data import COLOR_CHOICES

        return COLOR_CHOICES
    if source == "losses":
        from utils.losses import LOSS_NAMES

        return LOSS_NAMES
    return DISTRIBUTE_CHOICES


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser, *, defaults: TrainConfig | None = None,
                exclude: Sequence[str] = ()) -> None:
    """Add one flag per TrainConfig field (but `exclude`d ones) to `parser`, with help, choices and defaults.

    Flags default to argparse.SUPPRESS, so only options given on the command line appear in the namespace
    (`given_options`): they override a recipe file, which overrides the defaults.
    """
    defaults = defaults or TrainConfig()
    defaults = dataclasses.replace(defaults, **RECIPES[defaults.recipe])  # what a run without flags gets
    group = parser.add_argument_group("training options (also settable in a --config recipe file)")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="a YAML or JSON recipe of these options; a run's config.json works as one")
    for item in dataclasses.fields(TrainConfig):
        if item.name in exclude or item.metadata[NOT_A_FLAG]:
            continue
        default = getattr(defaults, item.name)
        shown = "" if default is None else f" (default: {default})"  # a None default is told in the help text
        keywords: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": item.name,
                                    "help": item.metadata["help"] + shown}
        if item.type in (bool, "bool"):
            keywords["action"] = argparse.BooleanOptionalAction
        else:
            keywords["type"] = option_type(item)
            keywords["choices"] = choices_for(item.metadata["choices"])
            keywords["metavar"] = item.metadata["metavar"]
        group.add_argument(flag_of(item.name), **keywords)


def option_type(item: dataclasses.Field):
    """The argparse type of a field (annotations are strings under `from __future__ import annotations`)."""
    text = str(item.type)
    return int if text.startswith("int") else float if text.startswith("float") else str


def given_options(args: argparse.Namespace) -> dict:
    """The TrainConfig options present in a namespace built by `add_options` (i.e. given on the command line)."""
    return {name: value for name, value in vars(args).items() if name in OPTION_NAMES}


def read_recipe(path: str | Path) -> dict:
    """The options in a YAML or JSON recipe file, or in a run's config.json; ValueError naming bad keys."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"Cannot read recipe {str(path)!r}: {error}") from error
    try:
        recipe = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"Recipe {str(path)!r} is not valid {path.suffix.lstrip('.') or 'YAML'}: {error}") from None
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe {str(path)!r} must hold a mapping of options; valid: {', '.join(OPTION_NAMES)}")
    if is_run_record(recipe):
        return options_of_run(recipe)
    unknown = sorted(set(recipe) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"Recipe {str(path)!r} has unknown option(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(OPTION_NAMES)}")
    return recipe


def is_run_record(mapping: dict) -> bool:
    """A run's config.json (it records more than options: its input shape, versions, status)."""
    return "input_shape" in mapping and "status" in mapping


def options_of_run(run_config: dict) -> dict:
    """The training options a run's config.json recorded (runs from before options were stored once kept them
    under "train_config"), every one: an option added after the run was recorded takes TrainConfig's default,
    what the run had, never train.py's newer defaults or a recipe's preset."""
    stored = run_config.get("train_config", run_config)
    original = TrainConfig()
    return {name: stored.get(name, getattr(original, name)) for name in OPTION_NAMES}


def make_config(recipe_path: str | Path | None = None, overrides: dict | None = None, *,
                defaults: TrainConfig | None = None) -> TrainConfig:
    """`defaults` (TrainConfig's own), then the named recipe's preset, then the recipe file's options, then
    `overrides` (the command line's)."""
    defaults = defaults or TrainConfig()
    options = read_recipe(recipe_path) if recipe_path else {}
    options.update(overrides or {})
    recipe = options.get("recipe", defaults.recipe)
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")
    return dataclasses.replace(dataclasses.replace(defaults, **RECIPES[recipe]), **options)


def command_line(config: TrainConfig, *, program: Sequence[str] = ("train.py",), exclude: Sequence[str] = (),
                 defaults: TrainConfig | None = None) -> str:
    """The command that repeats `config`: `python`, the `program` words, its recipe, and a flag for every option
    that differs from the program's `defaults` (train.py's unless given) with that recipe applied (hparams, which
    has no flag, is left out: a params file or recipe file carries it)."""
    defaults = defaults or train_defaults()
    words = ["python", *program] + ([] if config.recipe == defaults.recipe else ["--recipe", config.recipe])
    defaults = dataclasses.replace(defaults, recipe=config.recipe, **RECIPES[config.recipe])
    for item in dataclasses.fields(TrainConfig):
        value = getattr(config, item.name)
        if item.name in exclude or item.metadata[NOT_A_FLAG] or value == getattr(defaults, item.name):
            continue
        if isinstance(value, bool):
            words.append(flag_of(item.name) if value else "--no-" + item.name.replace("_", "-"))
        else:
            words += [flag_of(item.name), str(value)]
    return shlex.join(words)
