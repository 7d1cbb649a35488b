"""benchmarks/bench_scores.py: the test-time transforms put every map pixel back over the photo pixel it came from,
and several runs' maps are averaged at the first run's resolution."""
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


class MapsAtSide:
    """Stands in for a run's Inspector in `averaged_maps`: each photo's map is its first channel resized to
    side × side (a stretched run's decision resolution), times `gain`."""

    def __init__(self, side: int, gain: float = 1.0):
        self.side, self.gain = side, gain

    def maps_for(self, images):
        import cv2

        maps = [self.gain * cv2.resize(np.float32(image[..., 0]), (self.side, self.side), interpolation=cv2.INTER_AREA)
                for image in images]
        return None, None, maps


def test_several_runs_maps_are_averaged_at_the_first_runs_resolution():
    import cv2

    photos = [np.random.default_rng(seed).random((24, 40, 1)) for seed in range(2)]
    averaged = bench_scores.averaged_maps([MapsAtSide(8), MapsAtSide(16, gain=3.0)], photos, ("identity", "flip_lr"))
    for photo, result in zip(photos, averaged):
        first = MapsAtSide(8).maps_for([photo])[2][0]
        second = cv2.resize(MapsAtSide(16, gain=3.0).maps_for([photo])[2][0], (8, 8), interpolation=cv2.INTER_AREA)
        flipped_first = MapsAtSide(8).maps_for([photo[:, ::-1]])[2][0][:, ::-1]
        flipped_second = cv2.resize(MapsAtSide(16, gain=3.0).maps_for([photo[:, ::-1]])[2][0], (8, 8),
                                    interpolation=cv2.INTER_AREA)[:, ::-1]
        assert result.shape == (8, 8)
        np.testing.assert_allclose(result, (first + second + flipped_first + flipped_second) / 4, rtol=1e-6)
    one = bench_scores.averaged_maps([MapsAtSide(16)], photos, ("identity",))
    assert one[0].shape == (16, 16)
