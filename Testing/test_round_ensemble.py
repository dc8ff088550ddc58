import numpy as np
import pytest
import torch
from conftest import disk_task
from SemSegLib.classes import default_classes
from SemSegLib.model_file import RoundMember, SemSegModel, round_weights
from SemSegLib.prediction import PredictConfig, predict_probabilities
from SemSegLib.training import TrainConfig, train
from test_calibration import ConstantLogits

CPU = PredictConfig(device="cpu")
FAST = dict(iterations=10, patch_size=64, batch_size=2, base_width=8, levels=3, device="cpu")


def _softmax(logits: list[float], shift: list[float] | None = None) -> np.ndarray:
    z = np.asarray(logits) + (0 if shift is None else np.asarray(shift))
    return np.exp(z) / np.exp(z).sum()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_round_weights_halve_and_the_oldest_network_gets_the_rest():
    assert round_weights(1) == [1.0]
    assert round_weights(2) == [0.5, 0.5]
    assert round_weights(4) == [0.5, 0.25, 0.125, 0.125]


def test_a_first_network_with_a_share_keeps_it_and_the_newer_ones_halve_the_rest():
    assert round_weights(1, 0.5) == [1.0]
    assert round_weights(2, 0.5) == [0.5, 0.5]  # a first round is the same either way
    assert round_weights(3, 0.5) == [0.25, 0.25, 0.5]
    assert round_weights(4, 0.5) == [0.25, 0.125, 0.125, 0.5]
    assert round_weights(4, 0.6) == pytest.approx([0.2, 0.1, 0.1, 0.6])


def test_a_round_model_averages_the_corrected_probabilities_of_its_networks_by_halving():
    model = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    model.network = ConstantLogits([0.0, 2.0])
    model.log_prior_shift = np.array([0.5, -0.5])
    model.earlier_rounds = [RoundMember(ConstantLogits([1.0, 0.0]), np.array([0.0, 1.0])),
                            RoundMember(ConstantLogits([3.0, 0.0]), None)]
    image = np.random.default_rng(0).random((1, 32, 40)).astype(np.float32)
    prob = predict_probabilities(model, image, CPU)
    # The newest network half, the one it started from a quarter, the first model the rest.
    expected = (_softmax([0.0, 2.0], [0.5, -0.5]) / 2 + _softmax([1.0, 0.0], [0.0, 1.0]) / 4
                + _softmax([3.0, 0.0]) / 4)
    assert np.allclose(prob[:, 5, 7].numpy(), expected, atol=1e-6)
    model.first_network_share = 0.5  # the oldest (first) network keeps half, the newer ones a quarter each
    shared = predict_probabilities(model, image, CPU)
    expected = (_softmax([0.0, 2.0], [0.5, -0.5]) / 4 + _softmax([1.0, 0.0], [0.0, 1.0]) / 4
                + _softmax([3.0, 0.0]) / 2)
    assert np.allclose(shared[:, 5, 7].numpy(), expected, atol=1e-6)
    # The prior estimate sees this round's network alone, uncorrected.
    raw = predict_probabilities(model, image, CPU, prior_shift=False)
    assert np.allclose(raw[:, 5, 7].numpy(), _softmax([0.0, 2.0]), atol=1e-6)


def test_the_earlier_networks_are_kept_in_the_model_file_and_older_files_still_load(tmp_path):
    torch.manual_seed(0)
    model = SemSegModel.create(1, default_classes(3), base_width=8, levels=3)
    earlier = [SemSegModel.create(1, default_classes(3), base_width=8, levels=3).network for _ in range(2)]
    model.earlier_rounds = [RoundMember(earlier[0], np.array([0.1, -0.2, 0.3])), RoundMember(earlier[1], None)]
    image = np.random.default_rng(1).random((1, 48, 48)).astype(np.float32)
    path = tmp_path / "round.pt"
    model.save(path)
    loaded = SemSegModel.load(path)
    assert len(loaded.earlier_rounds) == 2
    assert np.allclose(loaded.earlier_rounds[0].log_prior_shift, [0.1, -0.2, 0.3])
    assert loaded.earlier_rounds[1].log_prior_shift is None
    assert _same_weights(loaded.earlier_rounds[1].network, earlier[1])  # the order is kept: newest first
    assert torch.allclose(predict_probabilities(loaded, image, CPU), predict_probabilities(model, image, CPU),
                          atol=1e-6)
    assert loaded.first_network_share == 0.0
    model.first_network_share = 0.5
    model.save(path)
    assert SemSegModel.load(path).first_network_share == 0.5
    model.first_network_share = 0.0
    alone = SemSegModel.load(path)
    alone.earlier_rounds = []
    assert not torch.allclose(predict_probabilities(alone, image, CPU), predict_probabilities(model, image, CPU))
    # A SemSeg from before halving reads the newest earlier network under its old key.
    stored = model.to_dict()
    assert _same_weights(earlier[0], _network_from(stored["previous_round"]["state_dict"]))
    del stored["older_rounds"]  # a file from sessions 10-16: the round's start only
    torch.save(stored, path)
    assert len(SemSegModel.load(path).earlier_rounds) == 1
    del stored["previous_round"]  # a file from before rounds kept their predecessor
    torch.save(stored, path)
    assert SemSegModel.load(path).earlier_rounds == []


def _network_from(state_dict: dict) -> torch.nn.Module:
    network = SemSegModel.create(1, default_classes(3), base_width=8, levels=3).network
    network.load_state_dict(state_dict)
    return network


def test_fine_tuning_keeps_the_earlier_rounds_newest_first_up_to_the_cap():
    images, refs = disk_task(n=2)
    images = images[:, None]
    labels = np.zeros(refs.shape, np.uint16)
    labels[0, 40:50, 40:50] = refs[0, 40:50, 40:50]
    labels[0, :3] = refs[0, :3]
    classes = default_classes(2)
    first = train(images, labels, classes, TrainConfig(**FAST)).model
    assert first.earlier_rounds == [] and first.history[-1]["round_networks"] == 1
    corrected = labels.copy()
    corrected[1, :3] = refs[1, :3]
    models = [first]
    for _ in range(3):
        models.append(train(images, corrected, classes, TrainConfig(round_networks=3, **FAST),
                            init_model=models[-1]).model)
    second, third, fourth = models[1:]
    assert len(second.earlier_rounds) == 1 and second.history[-1]["round_networks"] == 2
    assert np.allclose(second.earlier_rounds[0].log_prior_shift, first.log_prior_shift)
    assert _same_weights(second.earlier_rounds[0].network, first.network)
    assert not _same_weights(second.network, first.network)
    assert [_same_weights(m.network, n.network) for m, n in zip(third.earlier_rounds, [second, first])] == [True] * 2
    # Capped at 3 networks: the fourth model's own, the third's and the second's; the first model is dropped.
    assert fourth.history[-1]["round_networks"] == 3
    assert [_same_weights(m.network, n.network) for m, n in zip(fourth.earlier_rounds, [third, second])] == [True] * 2
    off = train(images, corrected, classes, TrainConfig(round_networks=1, **FAST), init_model=third)
    assert off.model.earlier_rounds == [] and off.model.history[-1]["round_networks"] == 1
