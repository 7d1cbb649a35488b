"""Restore and segment: a CAE with a segmentation head trained on the synthetic defects' masks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_SIZE


@pytest.fixture(scope="module")
def head_run(tiny_demo, tmp_path_factory):
    from utils.config import TrainConfig
    from utils.training import train

    return train(TrainConfig(data=str(tiny_demo), size=TINY_SIZE, epochs=4, batch_size=4, head=True,
                             synthetic_defects=True, loss="ssim_l1", hparams={"levels": 2, "filters": 8},
                             out=str(tmp_path_factory.mktemp("head_runs"))))


def test_the_head_model_outputs_a_reconstruction_and_a_mask_probability():
    import models

    model, encoder = models.build("mvtecCAE", (64, 64, 1), head=True)
    outputs = model(np.random.default_rng(0).random((2, 64, 64, 1), np.float32))
    assert [tuple(output.shape) for output in outputs] == [(2, 64, 64, 1), (2, 64, 64, 1)]
    assert float(np.min(outputs[1])) >= 0.0 and float(np.max(outputs[1])) <= 1.0
    assert [output.name for output in model.outputs] != [] and encoder is not None


def test_a_size_the_head_cannot_halve_three_times_is_refused():
    import models

    with pytest.raises(ValueError, match=r"--head needs sizes that are multiples of 8 \(3 levels\); got 36×36"):
        models.build("myCAE", (36, 36, 1), head=True, levels=2)


def test_a_deeper_head_halves_once_more_and_needs_sizes_to_match():
    import models

    def bottom_side(head_levels):
        model, _ = models.build("myCAE", (64, 64, 1), head=True, head_levels=head_levels, levels=2)
        return model.get_layer("head_bottom_conv1").output.shape[1]

    assert (bottom_side(None), bottom_side(3), bottom_side(4), bottom_side(2)) == (8, 8, 4, 16)
    with pytest.raises(ValueError, match=r"multiples of 16 \(4 levels\); got 40×40"):
        models.build("myCAE", (40, 40, 1), head=True, head_levels=4, levels=2)
    for bad in (0, 6, True, 2.0):
        with pytest.raises(ValueError, match=f"head levels must be an integer from 1 to 5; got {bad!r}"):
            models.spec("myCAE", head=True, head_levels=bad)


def test_the_head_needs_synthetic_defects_to_learn_from():
    from utils.config import TrainConfig
    from utils.training import validate

    with pytest.raises(ValueError, match="add --synthetic-defects"):
        validate(TrainConfig(head=True))


def test_training_lowers_the_segmentation_loss(head_run):
    history = json.loads((head_run / "history.json").read_text())
    assert len(history["segmentation_loss"]) == 4
    assert history["segmentation_loss"][-1] < history["segmentation_loss"][0]
    assert history["loss"][-1] < history["loss"][0]


def test_the_heads_map_is_the_runs_anomaly_map(head_run, tiny_demo):
    from utils.data import decode_image
    from utils.inspector import Inspector

    config = json.loads((head_run / "config.json").read_text())
    calibration = json.loads((head_run / "calibration.json").read_text())
    assert config["head"] and config["anomaly_map"] == "segmentation" == calibration["anomaly_map"]
    inspector = Inspector.from_run(head_run)
    image = decode_image(sorted((tiny_demo / "test" / "crack").glob("*.png"))[0])
    result = inspector.inspect([image])[0]
    assert result.map_name == "segmentation" and result.display_range == (0.0, 1.0)
    batch = inspector.prepare([image])
    expected = np.asarray(inspector.run.autoencoder(batch, training=False)[1])[0, :, :, 0]
    np.testing.assert_allclose(result.decision_map, expected, atol=1e-5)  # the head's output, not a residual
    assert result.reconstruction.shape == (*image.shape[:2], 1)  # reported at the photo's own pixels


def test_a_head_run_can_still_be_inspected_by_its_ssim_residual(head_run):
    from utils.run import load_run

    run = load_run(head_run)
    run.config["anomaly_map"] = "ssim"
    assert run.anomaly_map.name == "ssim" and run.spec.anomaly_map("l2", model="myCAE").name == "l2"


@pytest.fixture(scope="module")
def ensemble_run(tiny_demo, tmp_path_factory):
    from utils.config import TrainConfig
    from utils.training import train

    return train(TrainConfig(data=str(tiny_demo), size=TINY_SIZE, epochs=4, batch_size=4, head=True, members=2,
                             head_levels=2, synthetic_defects=True, loss="ssim_l1", hparams={"levels": 2, "filters": 8},
                             out=str(tmp_path_factory.mktemp("ensemble_runs"))))


def test_an_ensemble_needs_the_head_and_a_positive_count():
    from utils.config import TrainConfig
    from utils.training import validate

    with pytest.raises(ValueError, match="add --head"):
        validate(TrainConfig(members=2))
    with pytest.raises(ValueError, match="members must be a positive integer; got 0"):
        validate(TrainConfig(members=0, head=True, synthetic_defects=True))


def test_an_ensembles_members_train_on_their_own_losses_and_its_map_is_their_average(ensemble_run, tiny_demo):
    from utils.data import decode_image
    from utils.inspector import Inspector

    history = json.loads((ensemble_run / "history.json").read_text())
    assert history["loss"][-1] < history["loss"][0]
    assert history["member_reconstructions_loss"][-1] < history["member_reconstructions_loss"][0]
    assert len(history["segmentation_auc"]) == 4  # the ensemble's own (averaged) map, scored every epoch
    inspector = Inspector.from_run(ensemble_run)
    model = inspector.run.autoencoder
    members = [layer for layer in model.layers if layer.name.startswith("member") and layer.name[6:].isdigit()]
    assert [member.name for member in members] == ["member1", "member2"]
    for member in members:  # --head-levels 2 reaches every member's head
        names = {layer.name for layer in member.layers}
        assert "head_down2_conv1" in names and "head_down3_conv1" not in names
    image = decode_image(sorted((tiny_demo / "test" / "crack").glob("*.png"))[0])
    batch = inspector.prepare([image])
    maps = [np.asarray(member(batch, training=False)[1])[0, :, :, 0] for member in members]
    assert np.abs(maps[0] - maps[1]).max() > 1e-3  # two models, not one twice
    result = inspector.inspect([image])[0]
    np.testing.assert_allclose(result.decision_map, (maps[0] + maps[1]) / 2, atol=1e-5)
    config = json.loads((ensemble_run / "config.json").read_text())
    assert (config["members"], config["head_levels"]) == (2, 2)
