import numpy as np
import torch
from conftest import disk_task
from SemSegLib.classes import default_classes
from SemSegLib.model_file import RoundMember, SemSegModel
from SemSegLib.prediction import PredictConfig, predict_probabilities
from SemSegLib.training import TrainConfig, train
from test_calibration import ConstantLogits

CPU = PredictConfig(device="cpu")
FAST = dict(iterations=10, patch_size=64, batch_size=2, base_width=8, levels=3, device="cpu")


def _softmax(logits: list[float], shift: list[float] | None = None) -> np.ndarray:
    z = np.asarray(logits) + (0 if shift is None else np.asarray(shift))
    return np.exp(z) / np.exp(z).sum()


def test_a_round_model_averages_the_corrected_probabilities_of_both_networks():
    model = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    model.network = ConstantLogits([0.0, 2.0])
    model.log_prior_shift = np.array([0.5, -0.5])
    model.previous_round = RoundMember(ConstantLogits([1.0, 0.0]), np.array([0.0, 1.0]))
    image = np.random.default_rng(0).random((1, 32, 40)).astype(np.float32)
    prob = predict_probabilities(model, image, CPU)
    expected = (_softmax([0.0, 2.0], [0.5, -0.5]) + _softmax([1.0, 0.0], [0.0, 1.0])) / 2
    assert np.allclose(prob[:, 5, 7].numpy(), expected, atol=1e-6)
    # The prior estimate sees this round's network alone, uncorrected.
    raw = predict_probabilities(model, image, CPU, prior_shift=False)
    assert np.allclose(raw[:, 5, 7].numpy(), _softmax([0.0, 2.0]), atol=1e-6)


def test_the_previous_network_is_kept_in_the_model_file(tmp_path):
    torch.manual_seed(0)
    model = SemSegModel.create(1, default_classes(3), base_width=8, levels=3)
    previous = SemSegModel.create(1, default_classes(3), base_width=8, levels=3)
    model.previous_round = RoundMember(previous.network, np.array([0.1, -0.2, 0.3]))
    image = np.random.default_rng(1).random((1, 48, 48)).astype(np.float32)
    path = tmp_path / "round.pt"
    model.save(path)
    loaded = SemSegModel.load(path)
    assert np.allclose(loaded.previous_round.log_prior_shift, [0.1, -0.2, 0.3])
    assert torch.allclose(predict_probabilities(loaded, image, CPU), predict_probabilities(model, image, CPU),
                          atol=1e-6)
    alone = SemSegModel.load(path)
    alone.previous_round = None
    assert not torch.allclose(predict_probabilities(alone, image, CPU), predict_probabilities(model, image, CPU))
    old = model.to_dict()  # a file written before rounds kept their predecessor
    del old["previous_round"]
    torch.save(old, path)
    assert SemSegModel.load(path).previous_round is None


def test_fine_tuning_keeps_the_network_it_started_from_and_only_that_one():
    images, refs = disk_task(n=2)
    images = images[:, None]
    labels = np.zeros(refs.shape, np.uint16)
    labels[0, 40:50, 40:50] = refs[0, 40:50, 40:50]
    labels[0, :3] = refs[0, :3]
    classes = default_classes(2)
    first = train(images, labels, classes, TrainConfig(**FAST)).model
    assert first.previous_round is None and first.history[-1]["ensemble_previous_round"] is False
    corrected = labels.copy()
    corrected[1, :3] = refs[1, :3]
    second = train(images, corrected, classes, TrainConfig(**FAST), init_model=first).model
    kept = second.previous_round
    assert kept is not None and second.history[-1]["ensemble_previous_round"] is True
    assert np.allclose(kept.log_prior_shift, first.log_prior_shift)
    for a, b in zip(kept.network.state_dict().values(), first.network.state_dict().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(second.network.state_dict().values(),
                                                     first.network.state_dict().values()))
    third = train(images, corrected, classes, TrainConfig(**FAST), init_model=second).model
    for a, b in zip(third.previous_round.network.state_dict().values(), second.network.state_dict().values()):
        assert torch.equal(a, b)  # the round before: not the first model, and not a chain of all rounds
    off = train(images, corrected, classes, TrainConfig(ensemble_previous_round=False, **FAST), init_model=first)
    assert off.model.previous_round is None
