"""The Optuna study on the tiny demo set: it finishes, resumes, prunes, survives failures and feeds myCAE_optuna."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import TINY_SIZE
from test_train import run_script

# A search space small enough for two shared cores, with filter widths unlike myCAE's (32) and the shipped
# myCAE_optuna params (128), so a model built from the study's params visibly carries the chosen widths.
TINY_FILTERS = (8, 12)
PLOTS = ("optimization_history.png", "param_importances.png", "parallel_coordinate.png")


def tiny_space():
    from utils.tuning import SearchSpace

    return SearchSpace(filters=TINY_FILTERS, levels=(2, 3), convs_per_level=(1, 1), kernel_size=(3,),
                       latent_channels=(4, 8), batch_size=(8,))


def tiny_config(data: Path, out: Path, **changes):
    from utils.config import TrainConfig

    return TrainConfig(**{"data": str(data), "size": TINY_SIZE, "epochs": 1, "out": str(out), **changes})


@dataclass
class FirstStudy:
    outcome: object  # utils.tuning.StudyOutcome
    storage: str
    out: Path
    trial_params: list  # each trial's params, as the first invocation left them


@pytest.fixture(scope="module")
def first_study(tiny_demo, tmp_path_factory) -> FirstStudy:
    """A 3-trial study, its best trial retrained; the trials are recorded before any test adds more."""
    import optuna

    from utils.tuning import run_study

    out = tmp_path_factory.mktemp("study")
    storage = f"sqlite:///{out / 'optuna.db'}"
    outcome = run_study(tiny_config(tiny_demo, out), n_trials=3, study_name="tiny", space=tiny_space())
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    return FirstStudy(outcome, storage, out, [trial.params for trial in trials])


def test_three_trial_study_finishes_and_writes_best_params(first_study):
    from models.my_cae import MY_CAE_HPARAMS

    outcome = first_study.outcome
    assert outcome.trial_counts == {"COMPLETE": 3}
    assert outcome.study_dir == first_study.out / "optuna" / "tiny"
    params = json.loads(outcome.best_params_path.read_text())
    assert tuple(params) == MY_CAE_HPARAMS  # exactly the myCAE_optuna params schema
    assert len(params["filters"]) == params["levels"] and set(params["filters"]) <= set(TINY_FILTERS)
    summary = json.loads((outcome.study_dir / "best_trial.json").read_text())
    assert summary["value"] == pytest.approx(outcome.best_value) and 0.0 < outcome.best_value < 2.0
    assert set(summary["training"]) == {"lr", "batch_size", "loss", "noise"}
    for name in PLOTS:
        assert (outcome.study_dir / "plots" / name).stat().st_size > 1000, name


def test_best_trial_is_retrained_as_a_run_folder_pointing_to_its_params(first_study):
    outcome = first_study.outcome
    summary = json.loads((outcome.study_dir / "best_trial.json").read_text())
    config = json.loads((outcome.run_dir / "config.json").read_text())
    assert outcome.run_dir.parent == first_study.out and (outcome.run_dir / "model.keras").is_file()
    assert config["model"] == "myCAE_optuna" and config["params"] == summary["params_file"]
    assert config["hparams"] == json.loads(outcome.best_params_path.read_text())
    assert config["loss"] == summary["training"]["loss"] and config["lr"] == summary["training"]["lr"]
    assert (outcome.run_dir / "calibration.json").is_file()


def test_my_cae_optuna_builds_from_the_written_params_with_the_chosen_filters(first_study):
    import models

    params = json.loads(first_study.outcome.best_params_path.read_text())
    autoencoder, encoder = models.build("myCAE_optuna", (TINY_SIZE, TINY_SIZE, 1),
                                        params_path=first_study.outcome.best_params_path)
    for level, width in enumerate(params["filters"], start=1):
        assert autoencoder.get_layer(f"encoder_level{level}_conv1").filters == width
    assert autoencoder.get_layer("bottleneck_conv").filters == params["latent_channels"]
    code_size = TINY_SIZE // 2 ** params["levels"]
    assert encoder.output_shape == (None, code_size, code_size, params["latent_channels"])


def test_second_invocation_resumes_the_study(first_study, tiny_demo, capsys):
    import optuna

    from utils.tuning import run_study

    outcome = run_study(tiny_config(tiny_demo, first_study.out), n_trials=4, study_name="tiny", space=tiny_space())
    assert "3 complete; 1 more trial(s) to reach 4 finished" in capsys.readouterr().out
    trials = optuna.load_study(study_name="tiny", storage=first_study.storage).trials
    assert len(trials) == 4 and [trial.params for trial in trials[:3]] == first_study.trial_params
    assert sum(outcome.trial_counts.values()) == 4
    if outcome.best_value == first_study.outcome.best_value:  # same best trial: its run is reused, not retrained
        assert outcome.run_dir == first_study.outcome.run_dir


def test_pruned_and_failed_trials_are_recorded_and_the_study_goes_on(tiny_demo, tmp_path):
    import optuna

    from utils.tuning import run_study

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="edges", storage=storage)
    study.enqueue_trial({"levels": 9})  # 2**9 > 32 px: the model cannot be built → FAILED
    always_prune = optuna.pruners.ThresholdPruner(upper=-1.0)  # any SSIM loss (≥ 0) is "too high"
    with pytest.raises(ValueError, match="no completed trial"):
        run_study(tiny_config(tiny_demo, tmp_path, epochs=2), n_trials=2, study_name="edges", storage=storage,
                  space=tiny_space(), pruner=always_prune)
    failed, pruned = optuna.load_study(study_name="edges", storage=storage).trials
    assert failed.state.name == "FAIL" and "multiples of 512" in failed.user_attrs["error"]
    assert pruned.state.name == "PRUNED" and list(pruned.intermediate_values) == [0]
    assert pruned.user_attrs["epochs_run"] == 1  # stopped after the first of 2 epochs


def test_auroc_objective_scores_a_separate_labelled_split(tiny_demo, tmp_path):
    from utils.synthetic import generate_demo_set
    from utils.tuning import run_study

    tuning = generate_demo_set(tmp_path / "tuning", size=64, n_train_good=1, n_test_good=3, n_defective=5, seed=1)
    outcome = run_study(tiny_config(tiny_demo, tmp_path), n_trials=1, study_name="auroc", objective="auroc",
                        tuning_data=str(tuning / "test"), space=tiny_space(), retrain=False)
    assert outcome.run_dir is None and 0.0 <= outcome.best_value <= 1.0
    assert json.loads((outcome.study_dir / "best_trial.json").read_text())["direction"] == "maximize"


@pytest.mark.parametrize("changes, options, message", [
    ({}, {"n_trials": 0}, "positive number of trials"),
    ({}, {"objective": "auroc"}, "--tuning-data"),
    ({"model": "mvtecCAE"}, {}, "tunes myCAE"),
    ({"size": 18}, {}, "allows at most 1 level"),
    ({}, {"storage": "not-a-database"}, "not a database URL"),
])
def test_bad_study_options_fail_before_any_trial(tiny_demo, tmp_path, changes, options, message):
    from utils.tuning import run_study

    with pytest.raises(ValueError, match=message):
        run_study(tiny_config(tiny_demo, tmp_path, **changes), **{"n_trials": 1, **options}, space=tiny_space())
    assert not (tmp_path / "optuna.db").exists()


def test_tuning_on_the_reported_test_set_is_refused(tiny_demo, tmp_path):
    from utils.tuning import run_study

    with pytest.raises(ValueError, match="test set of --data"):
        run_study(tiny_config(tiny_demo, tmp_path), n_trials=1, objective="auroc", tuning_data=str(tiny_demo / "test"))


def test_resuming_with_other_settings_is_refused(first_study, tiny_demo):
    from utils.tuning import run_study

    with pytest.raises(ValueError, match="was created with"):
        run_study(tiny_config(tiny_demo, first_study.out, size=64), n_trials=9, study_name="tiny", space=tiny_space())


def test_cli_runs_a_study_and_prints_the_retrained_run_last(tiny_demo, tmp_path):
    result = run_script("train.py", "--optuna", "1", "--study", "cli", "--data", str(tiny_demo), "--size",
                        str(TINY_SIZE), "--epochs", "1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trial 0 COMPLETE" in result.stdout
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert json.loads((run_dir / "config.json").read_text())["model"] == "myCAE_optuna"
    assert (tmp_path / "optuna.db").is_file() and (tmp_path / "optuna" / "cli" / "best_params.json").is_file()


def test_cli_refuses_study_flags_without_optuna(tmp_path):
    result = run_script("train.py", "--study", "lonely", "--out", str(tmp_path))
    assert result.returncode == 2 and "go with --optuna" in result.stderr
