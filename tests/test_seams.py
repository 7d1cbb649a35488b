"""The seams: a model spec owns its anomaly map, the config is declared once, recipes round-trip."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SIZE

TOY_MODEL = "toyAbsoluteCAE"


def build_toy(input_shape, *, filters: int = 4):
    """Two convolutions: enough to train, nothing like the registered CAEs."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    code = layers.Conv2D(filters, 3, padding="same", activation="relu", name="toy_code")(inputs)
    outputs = layers.Conv2D(input_shape[-1], 3, padding="same", activation="sigmoid", name="toy_out")(code)
    return keras.Model(inputs, outputs, name="toy"), keras.Model(inputs, code, name="toy_encoder")


def absolute_map(inputs, outputs):
    import tensorflow as tf

    return tf.reduce_mean(tf.abs(tf.cast(inputs, tf.float32) - outputs), axis=-1)


@pytest.fixture
def toy_registered(monkeypatch):
    """A new model type registered as a contributor would: one spec, nothing else changed."""
    import models
    from models.spec import ModelSpec
    from utils.anomaly_maps import AnomalyMap

    spec = ModelSpec(build_toy, anomaly_maps=(AnomalyMap("absolute", absolute_map, (0.0, 0.5), "|input − output|"),))
    monkeypatch.setitem(models.MODELS, TOY_MODEL, spec)
    return spec


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_a_toy_spec_with_its_own_map_runs_through_all_four_scripts(toy_registered, tiny_demo, tmp_path, capsys):
    import IoU_test
    import main as line_main
    import test as test_script
    import train
    from utils.data import decode_image
    from utils.inspector import Inspector

    assert train.main(["--recipe", "seed", "--data", str(tiny_demo), "--model", TOY_MODEL, "--size", str(TINY_SIZE),
                       "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "runs")]) == 0
    run_dir = Path(last_line(capsys.readouterr().out))
    config = json.loads((run_dir / "config.json").read_text())
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert config["anomaly_map"] == "absolute" and calibration["anomaly_map"] == "absolute"

    image_path = sorted((tiny_demo / "test").glob("*/*.png"))[0]
    inspector = Inspector.from_run(run_dir)
    result = inspector.inspect([decode_image(image_path)])[0]
    model_input = inspector.prepare([decode_image(image_path)])
    model_reconstruction, _ = inspector.reconstruct_and_map(model_input)
    expected = np.abs(model_input - model_reconstruction).mean(axis=-1)[0]
    np.testing.assert_allclose(result.decision_map, expected, atol=1e-6)  # the spec's map, not 1 − SSIM
    assert result.map_name == "absolute" and result.display_range == (0.0, 0.5)

    assert test_script.main(["--model", str(run_dir), "--image", str(image_path)]) == 0
    assert capsys.readouterr().out.split()[0] in ("OK", "NOK")

    assert IoU_test.main(["--model", str(run_dir), "--data", str(tiny_demo)]) == 0
    metrics = json.loads(next((run_dir / "results").glob("*/metrics.json")).read_text())
    assert metrics["n_images"] == 14 and 0.0 <= metrics["image_auroc"] <= 1.0

    journal = tmp_path / "line.jsonl"
    assert line_main.main(["--model", str(run_dir), "--source", str(tiny_demo / "test" / "good"),
                           "--journal", str(journal)]) == 0
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [record["verdict"] for record in records if record["type"] == "result"] and all(
        record["model"] == TOY_MODEL for record in records if record["type"] == "result")


def test_a_runs_config_json_retrains_the_same_recipe(tiny_demo, tmp_path, capsys):
    import train
    from utils.config import OPTION_NAMES

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"recipe: seed\nmodel: myCAE\ndata: {tiny_demo}\nsize: {TINY_SIZE}\nepochs: 1\nbatch_size: 4\n"
                      f"synthetic_defects: true\n"
                      f"loss: ssim_l1\nanomaly_map: l2\nseed: 3\nhparams:\n  levels: 2\n  filters: 8\n")
    assert train.main(["--config", str(recipe), "--out", str(tmp_path / "first")]) == 0
    first = Path(last_line(capsys.readouterr().out))
    assert train.main(["--config", str(first / "config.json"), "--out", str(tmp_path / "second")]) == 0
    second = Path(last_line(capsys.readouterr().out))
    first_config, second_config = (json.loads((run / "config.json").read_text()) for run in (first, second))
    differing = {name for name in OPTION_NAMES if first_config[name] != second_config[name]}
    assert differing == {"out"}
    assert first_config["synthetic_defects"] and first_config["anomaly_map"] == "l2"
    assert first_config["hparams"] == {"levels": 2, "filters": 8} and first_config["seed"] == 3
    assert "train_config" not in first_config and "color_mode" not in first_config  # each option once


def test_flags_override_the_recipe_file(tmp_path):
    from utils.config import make_config

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"size": 64, "epochs": 5, "augment": True}))
    config = make_config(recipe, {"epochs": 7, "augment": False})
    assert (config.size, config.epochs, config.augment) == (64, 7, False)


def test_a_recipe_with_an_unknown_option_names_it_and_the_valid_ones(tmp_path):
    from utils.config import read_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("size: 64\nepoch: 5\n")
    with pytest.raises(ValueError, match=r"unknown option\(s\) epoch; valid: data, recipe, model, epochs"):
        read_recipe(recipe)


@pytest.mark.parametrize("flags, valid", [(["--model", "bigCAE"], "mvtecCAE"), (["--loss", "l3"], "ssim_l1"),
                                          (["--color", "cmyk"], "grayscale"), (["--anomaly-map", "x"], "l2")])
def test_the_generated_parser_rejects_an_unknown_choice_with_the_valid_list(flags, valid, capsys):
    import train

    with pytest.raises(SystemExit) as stopped:
        train.parse_args(flags)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "invalid choice" in error and valid in error


def test_the_model_spec_rejects_a_map_it_does_not_give():
    from utils.config import TrainConfig
    from utils.training import validate

    with pytest.raises(ValueError, match="myCAE gives no anomaly map 'absolute'; valid: ssim, l2, ssim_l1"):
        validate(TrainConfig(model="myCAE", anomaly_map="absolute"))


def test_stretch_maps_to_the_model_and_back_to_the_photo():
    from utils.preprocessing import Stretch, from_record

    step = Stretch(size=32, color_mode="grayscale")
    photo = np.zeros((48, 96, 3), np.uint8)
    photo[:, 48:] = 255
    prepared = step.to_model(photo)
    assert prepared.shape == (32, 32, 1) and prepared.dtype == np.float32 and prepared[0, 31, 0] == 1.0
    back = step.to_source(prepared[:, :, 0], photo.shape)
    assert back.shape == (48, 96) and back[0, 0] == 0.0 and back[0, 95] == 1.0
    assert from_record(step.record()) == step
    with pytest.raises(ValueError, match="unknown preprocessing mode 'mosaic'; valid: stretch, keep-aspect, tiles"):
        from_record({"mode": "mosaic"})


def test_a_named_recipe_presets_options_that_flags_still_override():
    import train
    from utils.config import TrainConfig, command_line, given_options, make_config, train_defaults

    args = train.parse_args(["--recipe", "restore-segment", "--loss", "ssim"])
    config = make_config(None, given_options(args))
    assert (config.recipe, config.head, config.synthetic_defects, config.loss) == ("restore-segment", True, True, "ssim")
    assert (config.painter, config.threshold_from) == ("textured", "synthetic")
    assert command_line(config, defaults=TrainConfig()) == "python train.py --recipe restore-segment --loss ssim"
    strict = make_config(None, given_options(train.parse_args(["--threshold-from", "validation"])),
                         defaults=train_defaults())
    assert (strict.recipe, strict.threshold_from) == ("restore-segment", "validation")
    assert command_line(strict) == "python train.py --threshold-from validation"  # train.py's defaults: no --recipe
    seed = make_config(None, {})
    assert (seed.head, seed.threshold_from) == (False, "validation")  # the Python API's default: the original method
    assert command_line(seed) == "python train.py --recipe seed --model myCAE --size 256"


def test_train_py_defaults_to_the_best_recipe_on_real_parts_and_seed_still_gives_the_original():
    import train
    from utils.config import given_options, make_config, train_defaults

    first_run = make_config(None, given_options(train.parse_args([])), defaults=train_defaults())
    assert (first_run.recipe, first_run.model, first_run.size, first_run.epochs) == ("restore-segment", "resnetCAE",
                                                                                      64, 100)
    assert (first_run.head, first_run.synthetic_defects, first_run.threshold_from) == (True, True, "synthetic")
    original = make_config(None, given_options(train.parse_args(["--recipe", "seed", "--model", "myCAE", "--size",
                                                                 "256"])), defaults=train_defaults())
    assert (original.head, original.synthetic_defects, original.loss, original.threshold_from) == (
        False, False, "ssim", "validation")


def test_a_run_record_repeats_the_run_whatever_the_defaults_now_are():
    from utils.config import make_config, options_of_run, train_defaults

    recorded = {"model": "myCAE", "size": 32, "epochs": 3}  # an old run, before recipes were recorded
    assert options_of_run(recorded)["recipe"] == "seed"
    config = make_config(None, options_of_run(recorded), defaults=train_defaults())
    assert (config.recipe, config.head, config.model, config.size) == ("seed", False, "myCAE", 32)


def test_an_unknown_recipe_in_a_file_names_the_valid_ones(tmp_path):
    from utils.config import make_config

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("recipe: draem\n")
    with pytest.raises(ValueError, match="unknown recipe 'draem'; valid: seed, restore-segment"):
        make_config(recipe)


def test_a_run_folder_from_before_the_seams_still_loads_inspects_and_repeats(tiny_run, tiny_demo, tmp_path):
    """Old config.json: options under "train_config", colour as "color_mode", no preprocessing or anomaly map."""
    import shutil

    from utils.config import make_config
    from utils.data import decode_image
    from utils.inspector import Inspector

    old = Path(shutil.copytree(tiny_run, tmp_path / tiny_run.name))
    config = json.loads((old / "config.json").read_text())
    options = {name: config.pop(name) for name in ("data", "model", "epochs", "size", "color", "loss", "batch_size",
                                                    "lr", "seed", "out", "synthetic_defects")}
    old_config = {**{key: value for key, value in config.items() if key not in ("preprocessing", "anomaly_map")},
                  "model": options["model"], "color_mode": options["color"], "train_config": options}
    (old / "config.json").write_text(json.dumps(old_config))
    result = Inspector.from_run(old).inspect([decode_image(sorted((tiny_demo / "test" / "good").glob("*.png"))[0])])[0]
    assert result.decision_map.shape == (TINY_SIZE, TINY_SIZE) and result.map_name == "ssim"
    assert make_config(old / "config.json").size == TINY_SIZE  # and it still works as a recipe
