"""Preprocessing steps: stretch, keep-aspect and tiles, from photo to model inputs and back to the photo."""
from __future__ import annotations

import json

import numpy as np
import pytest

from utils.preprocessing import KeepAspect, Stretch, Tiles, blend_weights, from_record


def textured_photo(height: int, width: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(64, 64), (37, 211), (70, 45), (20, 13), (16, 16), (5, 90)])
@pytest.mark.parametrize("stride", [8, 11, 16])
def test_tiling_with_an_identity_model_gives_back_the_photo(shape, stride):
    """Tile sizes that divide the photo and the stride, that do not, and photos smaller than a tile."""
    step = Tiles(tile=16, color_mode="grayscale", stride=stride)
    photo = textured_photo(*shape)
    tiles, placement = step.split(photo)
    assert tiles.shape[1:] == step.input_shape
    stitched = step.merge(tiles, placement)  # the identity model's "reconstruction" of every tile is the tile
    assert stitched.shape == (*shape, 1)
    np.testing.assert_allclose(stitched, photo.astype(np.float32) / 255.0, atol=1e-6)


def test_tiles_cover_every_pixel_and_end_at_the_border():
    step = Tiles(tile=32, color_mode="grayscale", stride=16)
    assert step.starts(100) == [0, 16, 32, 48, 64, 68]
    assert step.starts(32) == [0] and step.starts(20) == [0]


def test_stitched_maps_of_a_constant_photo_are_constant_across_tile_borders():
    step = Tiles(tile=16, color_mode="grayscale", stride=5)
    tiles, placement = step.split(np.full((53, 71), 90, np.uint8))
    maps = np.full(tiles.shape[:3], 0.3, np.float32)  # every tile of a constant photo gets the same map
    stitched = step.merge(maps, placement)
    assert stitched.shape == (53, 71) and np.ptp(stitched) < 1e-5


def test_blend_weights_are_smooth_and_never_zero():
    weights = blend_weights(16)
    assert weights.min() > 0 and weights[8, 8] == weights.max()
    assert np.allclose(weights, weights.T) and np.allclose(weights, weights[::-1, ::-1])


def test_tiles_at_a_scale_come_back_at_the_photos_own_pixels():
    step = Tiles(tile=16, color_mode="rgb", scale=0.5)
    photo = textured_photo(60, 90, channels=3)
    tiles, placement = step.split(photo)
    assert tiles.shape[1:] == (16, 16, 3)
    assert step.merge(tiles[..., 0], placement).shape == (60, 90)


def test_keep_aspect_pads_the_short_side_and_crops_the_map_back():
    step = KeepAspect(size=64, color_mode="grayscale")
    photo = textured_photo(37, 211)
    inputs, placement = step.split(photo)
    assert inputs.shape == (1, 64, 64, 1)
    assert step.content_shape(37, 211) == (11, 64)
    marker = np.zeros((64, 64), np.float32)
    marker[11:] = 5.0  # padding rows: nothing of them may reach the photo's map
    mapped = step.merge(marker[None], placement)
    assert mapped.shape == (37, 211) and mapped.max() == 0.0


def test_a_mask_of_the_wrong_size_is_refused_with_both_sizes():
    for step in (Stretch(size=32, color_mode="grayscale"), KeepAspect(size=32, color_mode="grayscale"),
                 Tiles(tile=16, color_mode="grayscale")):
        with pytest.raises(ValueError, match=r"mask of 91×37 px does not match its image of 64×64 px"):
            step.mask_for(np.ones((37, 91), bool), (64, 64, 1))


def test_every_mode_round_trips_through_its_record():
    for step in (Stretch(size=32, color_mode="rgb"), KeepAspect(size=48, color_mode="grayscale"),
                 Tiles(tile=16, color_mode="grayscale", stride=6, scale=0.5)):
        assert from_record(json.loads(json.dumps(step.record()))) == step


@pytest.mark.parametrize("make, message", [
    (lambda: Tiles(tile=16, color_mode="grayscale", stride=17), "tile stride must be an integer in \\[1, 16\\]"),
    (lambda: Tiles(tile=4, color_mode="grayscale"), "tile must be an integer of at least 8 px; got 4"),
    (lambda: Tiles(tile=16, color_mode="grayscale", scale=0), "scale must be a number in \\(0, 4\\]; got 0"),
    (lambda: KeepAspect(size=32, color_mode="cmyk"), "color_mode must be one of"),
])
def test_bad_settings_are_refused_naming_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def distance_from_the_mean(inputs, outputs):
    """A map that needs no training to be right: how far each pixel is from its image's mean grey level."""
    import tensorflow as tf

    inputs = tf.cast(inputs, tf.float32)
    return tf.reduce_mean(tf.abs(inputs - tf.reduce_mean(inputs, axis=[1, 2], keepdims=True)), axis=-1)


def test_keep_aspect_finds_a_defect_at_its_place_in_a_long_photo(tiny_demo, tmp_path, monkeypatch):
    """A 37 × 211 photo keeps its shape through a trained keep-aspect run, and the defect is where it was painted
    (a map that locates the defect exactly, so what is checked is the geometry: scaling, padding, cropping back)."""
    import models
    from models.spec import ModelSpec
    from test_seams import build_toy
    from utils.anomaly_maps import AnomalyMap
    from utils.blobs import find_blobs
    from utils.config import TrainConfig
    from utils.inspector import Inspector
    from utils.metrics import box_iou
    from utils.training import train

    spec = ModelSpec(build_toy, anomaly_maps=(AnomalyMap("contrast", distance_from_the_mean, (0.0, 1.0), "contrast"),))
    monkeypatch.setitem(models.MODELS, "toyContrast", spec)
    run = train(TrainConfig(data=str(tiny_demo), model="toyContrast", size=64, keep_aspect=True, epochs=1,
                            batch_size=4, out=str(tmp_path)))
    photo = np.full((37, 211, 1), 110, np.uint8)
    photo[10:28, 140:170] = 250  # a bright 30 × 18 px defect
    result = Inspector.from_run(run).inspect([photo])[0]
    assert result.anomaly_map.shape == (37, 211) and result.input.shape == (37, 211, 1)
    largest = find_blobs(result.anomaly_map >= 0.5 * result.anomaly_map.max())[0]
    assert box_iou(largest.bbox, [140, 10, 170, 28]) >= 0.5


MODEL_NAMES = ["mvtecCAE", "baselineCAE", "inceptionCAE", "resnetCAE", "skipCAE", "myCAE", "myCAE_optuna"]


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_every_model_trains_one_epoch_and_inspects_in_tile_mode(model_name, tiny_demo, tmp_path):
    from utils.config import TrainConfig
    from utils.data import decode_image
    from utils.inspector import Inspector
    from utils.training import train

    run = train(TrainConfig(data=str(tiny_demo), model=model_name, tile=64, tile_stride=32, epochs=1, batch_size=4,
                            out=str(tmp_path), hparams={"filters": 8} if model_name == "myCAE_optuna" else {}))
    history = json.loads((run / "history.json").read_text())
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["val_loss"][0])
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["min_area_unit"] == "source px"
    photo = np.concatenate([decode_image(path) for path in sorted((tiny_demo / "test" / "good").glob("*.png"))[:2]],
                           axis=1)[:, :100]  # 64 × 100: not a multiple of the tile
    result = Inspector.from_run(run).inspect([photo])[0]
    assert result.anomaly_map.shape == (64, 100) and result.reconstruction.shape == (64, 100, 1)
    assert np.isfinite(result.anomaly_map).all() and result.verdict in ("OK", "NOK")
