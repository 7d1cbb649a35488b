"""The test-time transforms of benchmarks/bench_scores.py put every map pixel back over the photo pixel it came from."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "bench_scores", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scores.py")
bench_scores = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_scores)


@pytest.mark.parametrize("name", sorted(bench_scores.TRANSFORMS))
def test_a_map_turned_back_lies_over_its_photo(name):
    photo = np.random.default_rng(0).random((5, 9, 3))  # not square: a swapped axis cannot go unnoticed
    turn, turn_back = bench_scores.TRANSFORMS[name]
    map_of_turned_photo = turn(photo)[..., 0]  # a "model" whose map is its input's first channel
    assert np.array_equal(turn_back(map_of_turned_photo), photo[..., 0])


def test_the_transform_sets_are_distinct_turns():
    photo = np.arange(5 * 9).reshape(5, 9)
    turned = {bench_scores.TRANSFORMS[name][0](photo).tobytes() + bytes(bench_scores.TRANSFORMS[name][0](photo).shape)
              for name in bench_scores.TRANSFORM_SETS["d4"]}
    assert len(turned) == 8
    assert bench_scores.TRANSFORM_SETS["none"] == ("identity",)
