import dataclasses

import numpy as np
import torch
from conftest import disk_task
from SemSegLib.classes import default_classes
from SemSegLib.model_file import SemSegModel
from SemSegLib.normalization import NormalizationConfig
from SemSegLib.pixel_forest import PixelForest, feature_tiles
from SemSegLib.prediction import PredictConfig, normalized_entropy, predict_image, predict_probabilities
from SemSegLib.training import TrainConfig, train
from test_calibration import ConstantLogits

CPU = PredictConfig(device="cpu")
FAST = dict(iterations=10, patch_size=64, batch_size=2, base_width=8, levels=3, device="cpu")
NORM = NormalizationConfig()


def _strokes(refs: np.ndarray) -> np.ndarray:
    """A few labeled rows and a block of the first image, from the reference."""
    labels = np.zeros(refs.shape, np.uint16)
    labels[0, 40:56, 40:56] = refs[0, 40:56, 40:56]
    labels[0, :3] = refs[0, :3]
    labels[0, :, :2] = refs[0, :, :2]
    return labels


def test_tiled_features_equal_the_whole_image_features():
    image = np.random.default_rng(0).random((2, 150, 170)).astype(np.float32)
    whole = {(r.start, c.start): f for r, c, f in feature_tiles(image, NORM)}
    assert len(whole) == 1 and whole[(0, 0)].shape == (150, 170, 40)  # 20 features per channel
    full = whole[(0, 0)]
    tiles = list(feature_tiles(image, NORM, tile=64))
    assert len(tiles) == 9
    for rows, cols, feats in tiles:
        assert np.allclose(feats, full[rows, cols], atol=1e-5)


def test_the_forest_learns_the_painted_classes_and_gives_no_probability_to_a_class_never_painted():
    images, refs = disk_task(n=2)
    labels = _strokes(refs)
    forest = PixelForest.fit(images[:, None], labels, 3, NORM, seed=0)
    assert len(forest.targets) == (labels > 0).sum()
    prob = forest.probabilities(images[1][None], NORM).numpy()
    assert prob.shape == (3, *refs.shape[1:])
    assert np.allclose(prob.sum(0), 1, atol=1e-5) and not prob[2].any()
    assert ((prob.argmax(0) + 1) == refs[1]).mean() > 0.9  # the unpainted image
    assert PixelForest.fit(images[:, None], np.zeros_like(labels), 3, NORM) is None


def test_at_most_so_many_labeled_pixels_per_class_train_the_forest_the_same_ones_each_time():
    images, refs = disk_task(n=1)
    labels = refs.astype(np.uint16)  # every pixel painted
    small = [PixelForest.fit(images[:, None], labels, 2, NORM, seed=1, max_per_class=50) for _ in range(2)]
    assert np.bincount(small[0].targets).tolist() == [0, 50, 50]
    assert np.array_equal(small[0].samples, small[1].samples)


def test_the_forest_gets_its_share_of_the_average_and_the_prior_estimate_sees_the_network_alone():
    images, refs = disk_task(n=2)
    model = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    model.network = ConstantLogits([0.0, 1.0])
    model.forest = PixelForest.fit(images[:, None], _strokes(refs), 2, NORM)
    image = images[1][None]
    network = torch.softmax(torch.tensor([0.0, 1.0]), 0)[:, None, None]
    forest = model.forest.probabilities(image, NORM)
    assert torch.allclose(predict_probabilities(model, image, CPU), network.expand_as(forest))  # weight 0
    model.forest_weight = 0.3
    assert torch.allclose(predict_probabilities(model, image, CPU), 0.7 * network + 0.3 * forest, atol=1e-6)
    assert torch.allclose(predict_probabilities(model, image, CPU, prior_shift=False), network.expand_as(forest))


def test_the_map_has_the_forests_share_and_the_uncertainty_shown_is_the_networks_alone():
    images, refs = disk_task(n=2)
    model = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    model.network = ConstantLogits([0.0, 0.2])
    model.forest, model.forest_weight = PixelForest.fit(images[:, None], _strokes(refs), 2, NORM), 0.3
    image = images[1][None]
    pred = predict_image(model, image, CPU, with_probabilities=True)
    network = torch.softmax(torch.tensor([0.0, 0.2]), 0)[:, None, None]
    forest = model.forest.probabilities(image, NORM)
    assert np.allclose(pred.probabilities, (0.7 * network + 0.3 * forest).numpy(), atol=1e-6)
    assert (pred.labels == 1).any()  # the forest's share turns some pixels, the network alone says class 2
    assert np.allclose(pred.uncertainty, float(normalized_entropy(network)[0, 0]), atol=1e-6)


def test_the_model_file_keeps_the_forests_training_set_and_loads_the_same_forest(tmp_path):
    images, refs = disk_task(n=2)
    model = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    model.forest, model.forest_weight = PixelForest.fit(images[:, None], _strokes(refs), 2, NORM, seed=4), 0.2
    path = tmp_path / "m.pt"
    model.save(path)
    loaded = SemSegModel.load(path)
    assert loaded.forest_weight == 0.2 and loaded.forest.seed == 4 and loaded.forest.trees == model.forest.trees
    assert np.array_equal(loaded.forest.samples, model.forest.samples)
    image = images[1][None]
    assert torch.equal(loaded.forest.probabilities(image, NORM), model.forest.probabilities(image, NORM))
    stored = model.to_dict()
    del stored["forest"]["trees"]  # a file of session 43: its forest had 100 trees
    torch.save(stored, path)
    assert SemSegModel.load(path).forest.trees == 100 and model.forest.trees == 50
    del stored["forest"], stored["forest_weight"]  # a file from before session 43
    torch.save(stored, path)
    older = SemSegModel.load(path)
    assert older.forest is None and older.forest_weight == 0.0
    assert torch.equal(predict_probabilities(older, image, CPU),
                       predict_probabilities(dataclasses.replace(model, forest=None), image, CPU))


def test_every_training_refits_the_forest_on_strokes_and_corrections_and_weight_zero_leaves_it_out():
    images, refs = disk_task(n=2)
    labels = _strokes(refs)
    classes = default_classes(2)
    first = train(images[:, None], labels, classes, TrainConfig(**FAST)).model
    assert first.forest_weight == 0.2 and len(first.forest.targets) == (labels > 0).sum()
    assert first.history[-1]["forest_samples"] == (labels > 0).sum()
    corrected = labels.copy()
    corrected[1, 20:30, 20:30] = refs[1, 20:30, 20:30]
    second = train(images[:, None], corrected, classes, TrainConfig(**FAST), init_model=first).model
    assert len(second.forest.targets) == (corrected > 0).sum()
    assert len(first.forest.targets) == (labels > 0).sum()  # the model it started from is untouched
    off = train(images[:, None], corrected, classes, TrainConfig(forest_weight=0.0, **FAST), init_model=first).model
    assert off.forest is None and off.forest_weight == 0.0 and off.history[-1]["forest_samples"] == 0
