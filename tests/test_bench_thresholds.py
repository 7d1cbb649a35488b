"""The threshold rules of benchmarks/bench_thresholds.py: each takes its threshold from the images it claims to."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_SPEC = importlib.util.spec_from_file_location(
    "bench_thresholds", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_thresholds.py")
bench_thresholds = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_thresholds)


def test_each_rule_takes_its_threshold_from_its_own_images():
    good = np.linspace(0.0, 1.0, 101)  # held-out good scores: percentiles are easy to read off
    easy_round = (np.array([0.1, 0.2, 5.0, 6.0]), np.array([False, False, True, True]))  # split between 0.2 and 5
    late_round = (np.array([0.1, 0.2, 0.3, 0.4]), np.array([False, False, True, True]))  # split between 0.2 and 0.3
    rounds = [easy_round] * bench_thresholds.CALIBRATION_ROUNDS + [late_round] * 10
    test_scores = np.array([0.0, 0.5, 0.6, 0.65, 0.7, 2.0, 5.5])
    test_labels = np.array([False, False, False, False, True, True, True])

    rules = bench_thresholds.threshold_rules(good, rounds, test_scores, test_labels)

    assert rules["validation"]["threshold"] > 1.0  # no held-out good image NOK
    assert rules["good_q95"]["threshold"] == np.quantile(good, 0.95)
    assert rules["synthetic"]["threshold"] == 5.0  # the calibration's rounds only: 5.0 splits them perfectly
    assert rules["synthetic_all"]["threshold"] == 0.3  # the later rounds outnumber them and move it down
    assert rules["best"]["balanced_accuracy"] == max(found["balanced_accuracy"] for found in rules.values())
    assert rules["best"]["balanced_accuracy"] == 1.0  # 0.7 separates the test split
    assert rules["validation"]["tnr"] == 1.0 and rules["validation"]["tpr"] == 2 / 3


def test_rows_are_appended_to_a_results_file_and_nothing_before_them_is_lost(tmp_path):
    from utils.run import append_rows, read_json

    results = tmp_path / "thresholds_demo.json"
    append_rows(results, [{"smooth_sigma": 0.0}])  # no file yet: it is created
    append_rows(results, [{"smooth_sigma": 1.0}, {"smooth_sigma": 2.0}])
    assert [row["smooth_sigma"] for row in read_json(results)] == [0.0, 1.0, 2.0]
