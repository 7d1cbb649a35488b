"""Tests for the autoencoder registry and builders (models/)."""

import json

import keras
import numpy as np
import pytest

import models

MODEL_NAMES = ["mvtecCAE", "baselineCAE", "inceptionCAE", "resnetCAE", "skipCAE", "myCAE", "myCAE_optuna"]
SMALL_SHAPE = (64, 64, 1)


def small_batch(shape=SMALL_SHAPE, count=2) -> np.ndarray:
    return np.random.default_rng(0).random((count, *shape), dtype=np.float32)


def test_registry_holds_exactly_the_user_facing_names():
    assert sorted(models.MODELS) == sorted(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(64, 64, 1), (64, 64, 3), (256, 256, 1)])
def test_output_shape_equals_input_shape(name, shape):
    autoencoder, encoder = models.build(name, shape)
    assert autoencoder.input_shape == (None, *shape)
    assert autoencoder.output_shape == (None, *shape)
    assert encoder.input_shape == (None, *shape)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_small_model_reconstructs_into_unit_range_through_a_bottleneck(name):
    autoencoder, encoder = models.build(name, SMALL_SHAPE)
    images = small_batch()
    reconstruction = keras.ops.convert_to_numpy(autoencoder(images, training=False))
    assert reconstruction.shape == images.shape
    assert np.all((reconstruction >= 0) & (reconstruction <= 1))
    code = keras.ops.convert_to_numpy(encoder(images, training=False))
    assert code[0].size < images[0].size  # the code is smaller than the image
    # The encoder is part of the autoencoder, not a separate network with its own weights.
    autoencoder_layer_ids = {id(layer) for layer in autoencoder.layers}
    assert all(id(layer) in autoencoder_layer_ids for layer in encoder.layers)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_layers_have_stable_names_and_no_lambda(name):
    first, _ = models.build(name, SMALL_SHAPE)
    second, _ = models.build(name, SMALL_SHAPE)
    # Keras numbers auto-named layers per session, so an unnamed layer would differ between two builds.
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in first.layers)
    assert first.layers[-1].get_config().get("activation") == "sigmoid"


# Keras' own saving code converts TensorFlow variables in a way NumPy 2 flags; nothing this project can change.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_save_and_safe_load_give_identical_predictions(name, tmp_path):
    autoencoder, encoder = models.build(name, SMALL_SHAPE)
    images = small_batch()
    expected = keras.ops.convert_to_numpy(autoencoder(images, training=False))
    path = tmp_path / f"{name}.keras"
    autoencoder.save(path)
    encoder.save(tmp_path / f"{name}_encoder.keras")

    loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    loaded_encoder = keras.models.load_model(tmp_path / f"{name}_encoder.keras", compile=False, safe_mode=True)
    reloaded = keras.ops.convert_to_numpy(loaded(images, training=False))
    np.testing.assert_allclose(reloaded, expected, rtol=0, atol=1e-6)
    assert loaded_encoder.output_shape == encoder.output_shape


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'noSuchCAE'") as raised:
        models.build("noSuchCAE", SMALL_SHAPE)
    assert all(name in str(raised.value) for name in MODEL_NAMES)


def test_unknown_hyperparameter_lists_valid_ones():
    with pytest.raises(ValueError, match="no hyperparameter filterz.*latent_dim"):
        models.build("mvtecCAE", SMALL_SHAPE, filterz=8)


@pytest.mark.parametrize(
    ("name", "multiple", "minimum"),
    [
        ("mvtecCAE", 32, 64),
        ("baselineCAE", 64, 64),
        ("inceptionCAE", 64, 64),
        ("resnetCAE", 32, 32),
        ("skipCAE", 32, 32),
        ("myCAE", 16, 16),
        ("myCAE_optuna", 16, 16),
    ],
)
def test_unsupported_size_names_the_sizes_that_work(name, multiple, minimum):
    expected = f"{name} needs .*multiples of {multiple} and at least {minimum}.*got \\(100, 100, 1\\)"
    with pytest.raises(ValueError, match=expected):
        models.build(name, (100, 100, 1))
    with pytest.raises(ValueError, match="1 or 3 channels.*got \\(64, 64, 2\\)"):
        models.build(name, (64, 64, 2))


def test_sizes_below_the_minimum_are_refused():
    with pytest.raises(ValueError, match="at least 64"):
        models.build("mvtecCAE", (32, 32, 1))


def test_non_square_sizes_work_where_both_sides_fit():
    autoencoder, _ = models.build("myCAE", (32, 64, 3))
    assert autoencoder.output_shape == (None, 32, 64, 3)


def _conv_widths(model: keras.Model) -> list[int]:
    """Filters of every convolution except the bottleneck and the output layer."""
    return [
        layer.get_config()["filters"]
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.name not in ("bottleneck_conv", "decoder_output")
    ]


def test_my_cae_optuna_reads_filters_from_a_params_file(tmp_path):
    params_path = tmp_path / "params.json"
    params_path.write_text(json.dumps({"filters": 8, "levels": 3, "latent_channels": 4}))
    autoencoder, encoder = models.build("myCAE_optuna", (32, 32, 1), params_path=params_path)
    widths = _conv_widths(autoencoder)
    assert len(widths) == 3 * 2 * 2  # 3 levels, 2 convolutions per level, encoder and decoder
    assert set(widths) == {8}
    assert encoder.output_shape == (None, 4, 4, 4)


def test_my_cae_optuna_explicit_hparams_override_the_file(tmp_path):
    params_path = tmp_path / "params.json"
    params_path.write_text(json.dumps({"filters": 8}))
    autoencoder, _ = models.build("myCAE_optuna", SMALL_SHAPE, params_path=params_path, filters=[4, 8, 12, 16])
    assert sorted(set(_conv_widths(autoencoder))) == [4, 8, 12, 16]


def test_params_file_schema_is_exactly_the_my_cae_hyperparameters():
    from models.my_cae import DEFAULT_PARAMS_PATH, MY_CAE_HPARAMS, my_cae_defaults

    assert models.hparam_names("myCAE") == MY_CAE_HPARAMS
    shipped = json.loads(DEFAULT_PARAMS_PATH.read_text())
    assert shipped == {**my_cae_defaults(), "filters": 128}


def test_my_cae_optuna_default_file_is_shipped_with_128_filters():
    autoencoder, _ = models.build("myCAE_optuna", SMALL_SHAPE)
    assert set(_conv_widths(autoencoder)) == {128}


def test_shipped_shallow_params_build_a_three_level_model_with_an_eighth_of_the_pixels_as_code():
    from models.my_cae import DEFAULT_PARAMS_PATH
    from utils.config import TrainConfig
    from utils.training import builder_hparams

    shallow_path = DEFAULT_PARAMS_PATH.with_name("myCAE_shallow.json")
    # As train.py --model myCAE_optuna --params builds it: the file's values must not mix with the shipped default's.
    hparams = builder_hparams(TrainConfig(model="myCAE_optuna", params=str(shallow_path)))
    autoencoder, encoder = models.build("myCAE_optuna", (128, 128, 1), **hparams)
    assert encoder.output_shape == (None, 16, 16, 8)  # 2048 numbers for 16384 pixels
    assert set(_conv_widths(autoencoder)) == {32}


def test_a_partial_params_file_takes_my_cae_defaults_for_the_rest_when_training(tmp_path):
    from utils.config import TrainConfig
    from utils.training import builder_hparams

    params_path = tmp_path / "partial.json"
    params_path.write_text(json.dumps({"levels": 3}))
    hparams = builder_hparams(TrainConfig(model="myCAE_optuna", params=str(params_path)))
    autoencoder, _ = models.build("myCAE_optuna", (64, 64, 1), **hparams)
    assert set(_conv_widths(autoencoder)) == {32}  # myCAE's default, not the 128 of models/myCAE_optuna.json


def test_my_cae_optuna_missing_or_bad_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="params file not found.*missing.json"):
        models.build("myCAE_optuna", SMALL_SHAPE, params_path=tmp_path / "missing.json")
    bad_key_path = tmp_path / "bad.json"
    bad_key_path.write_text(json.dumps({"filters": 8, "learning_rate": 0.1}))
    with pytest.raises(ValueError, match="unknown keys \\['learning_rate'\\].*filters"):
        models.build("myCAE_optuna", SMALL_SHAPE, params_path=bad_key_path)


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"filters": [8, 8]}, "one width per level \\(4 levels\\); got \\[8, 8\\]"),
        ({"activation": "tanh"}, "activation must be one of relu, leaky_relu, elu, selu; got 'tanh'"),
        ({"levels": 0}, "levels must be a positive integer; got 0"),
        ({"batch_norm": "yes"}, "batch_norm must be True or False; got 'yes'"),
    ],
)
def test_my_cae_rejects_bad_hyperparameters_echoing_the_value(hparams, message):
    with pytest.raises(ValueError, match=message):
        models.build("myCAE", SMALL_SHAPE, **hparams)


@pytest.mark.parametrize("activation", ["leaky_relu", "elu", "selu"])
def test_my_cae_options_change_the_network(activation):
    autoencoder, _ = models.build("myCAE", SMALL_SHAPE, activation=activation, batch_norm=True, convs_per_level=1)
    activations = {
        layer.get_config()["activation"]
        for layer in autoencoder.layers
        if isinstance(layer, keras.layers.Activation)
    }
    assert activations == {activation}
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in autoencoder.layers)
    assert len(_conv_widths(autoencoder)) == 4 * 1 * 2


@pytest.mark.parametrize(("skip_connections", "expected_adds"), [(None, 4), (2, 2), (0, 0)])
def test_skip_cae_builds_the_requested_skip_connections(skip_connections, expected_adds):
    autoencoder, _ = models.build("skipCAE", SMALL_SHAPE, skip_connections=skip_connections)
    adds = [layer.name for layer in autoencoder.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == expected_adds
    if expected_adds == 2:  # the deepest ones are kept
        assert sorted(adds) == ["decoder_skip3_add", "decoder_skip4_add"]


def test_skip_cae_rejects_more_skip_connections_than_layers():
    with pytest.raises(ValueError, match="from 0 to 4; got 5"):
        models.build("skipCAE", SMALL_SHAPE, skip_connections=5)
