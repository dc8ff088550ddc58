import dataclasses

import numpy as np
import torch
from conftest import disk_task
from SemSegLib import forest_teacher
from SemSegLib.classes import default_classes
from SemSegLib.model_file import SemSegModel
from SemSegLib.normalization import NormalizationConfig
from SemSegLib.pixel_forest import LINE_CLASS_WEIGHT, SMOOTHING, PixelForest, feature_tiles, smoothed
from SemSegLib.prediction import PredictConfig, normalized_entropy, predict_image, predict_probabilities
from SemSegLib.training import TrainConfig, attach_forest, train
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


def test_the_subset_is_drawn_before_the_features_and_only_images_with_a_kept_pixel_are_filtered(monkeypatch):
    from SemSegLib import pixel_forest

    monkeypatch.setattr(pixel_forest, "TILE_SIZE", 40)  # several tiles an image: their order must hold too
    images, refs = disk_task(n=4)
    labels = refs.astype(np.uint16)  # three images labeled all over (accepted predictions) ...
    labels[3] = 0
    labels[3, 10, 10:20] = 2  # ... and a stroke of 10 pixels
    forest = PixelForest.fit(images[:, None], labels, 2, NORM, seed=3, max_per_class=60)
    # What drawing from every labeled pixel's features gives: the same pixels in the same order.
    x, y = [], []
    for i in range(4):
        for rows, cols, feats in feature_tiles(images[i][None], NORM, tile=40):
            lab = labels[i, rows, cols]
            x.append(feats[lab > 0])
            y.append(lab[lab > 0])
    keep = pixel_forest._subset_per_class(np.concatenate(y).astype(np.int64), 60, 3)
    assert np.array_equal(forest.samples, np.concatenate(x)[keep])
    assert np.array_equal(forest.targets, np.concatenate(y)[keep])
    assert np.bincount(forest.targets).tolist() == [0, 60, 60]
    filtered = []
    real = pixel_forest.feature_tiles
    monkeypatch.setattr(pixel_forest, "feature_tiles", lambda image, *a: filtered.append(image) or real(image, *a))
    one = PixelForest.fit(images[:, None], labels, 2, NORM, seed=3, max_per_class=1)
    assert len(filtered) == len(set(map(int, one.targets))) == 2  # a kept pixel of each class: at most 2 images


def test_an_image_in_both_of_the_forest_s_sets_is_filtered_once(monkeypatch):
    from SemSegLib import pixel_forest

    monkeypatch.setattr(pixel_forest, "TILE_SIZE", 40)  # several tiles an image
    images, refs = disk_task(n=4)
    labels = _strokes(refs)
    labels[2, :3], labels[2, 40:56, 40:56] = refs[2, :3], refs[2, 40:56, 40:56]
    sure = {0: refs[0], 1: refs[1], 2: refs[2]}  # what the networks are sure of: the painted images and image 1
    filtered = []
    real = pixel_forest.feature_tiles
    monkeypatch.setattr(pixel_forest, "feature_tiles", lambda image, *a: filtered.append(image) or real(image, *a))
    forest = PixelForest.fit(images[:, None], labels, 2, NORM, seed=3, max_per_class=40, confident=sure)
    assert [next(i for i in range(4) if np.array_equal(image[0], images[i])) for image in filtered] == [0, 1, 2]
    # The same pixels as each set's alone, in the same order: the strokes' first, then the sure pixels'.
    sets = [{0: labels[0], 2: labels[2]}, {i: np.where(labels[i] > 0, 0, s) for i, s in sure.items()}]
    alone = [pixel_forest._kept_samples(images[:, None], [pixels], NORM, 40, 3)[0] for pixels in sets]
    assert np.array_equal(forest.samples, np.concatenate([x for x, _ in alone]))
    assert np.array_equal(forest.targets, np.concatenate([y for _, y in alone]))


def test_the_forest_gets_its_share_of_the_average_smoothed_and_the_prior_estimate_sees_the_network_alone():
    images, refs = disk_task(n=2)
    model = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    model.network = ConstantLogits([0.0, 1.0])
    model.forest = PixelForest.fit(images[:, None], _strokes(refs), 2, NORM)
    image = images[1][None]
    network = torch.softmax(torch.tensor([0.0, 1.0]), 0)[:, None, None]
    forest = smoothed(model.forest.probabilities(image, NORM), [], SMOOTHING)
    assert torch.allclose(predict_probabilities(model, image, CPU), network.expand_as(forest))  # weight 0
    model.forest_weight = 0.3
    assert torch.allclose(predict_probabilities(model, image, CPU), 0.7 * network + 0.3 * forest, atol=1e-6)
    assert torch.allclose(predict_probabilities(model, image, CPU, prior_shift=False), network.expand_as(forest))
    raw = model.forest.probabilities(image, NORM)
    assert not torch.allclose(forest, raw, atol=1e-3)  # the smoothing changes the forest's map
    model.forest.smoothing = 0.0  # as a forest from a file saved before session 49 loads
    assert torch.allclose(predict_probabilities(model, image, CPU), 0.7 * network + 0.3 * raw, atol=1e-6)


def test_the_map_has_the_forests_share_and_the_uncertainty_shown_is_the_networks_alone():
    images, refs = disk_task(n=2)
    model = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    model.network = ConstantLogits([0.0, 0.2])
    model.forest, model.forest_weight = PixelForest.fit(images[:, None], _strokes(refs), 2, NORM), 0.3
    image = images[1][None]
    pred = predict_image(model, image, CPU, with_probabilities=True)
    network = torch.softmax(torch.tensor([0.0, 0.2]), 0)[:, None, None]
    forest = smoothed(model.forest.probabilities(image, NORM), [], SMOOTHING)
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
    assert loaded.forest.smoothing == model.forest.smoothing == SMOOTHING
    assert np.array_equal(loaded.forest.samples, model.forest.samples)
    image = images[1][None]
    assert torch.equal(loaded.forest.probabilities(image, NORM), model.forest.probabilities(image, NORM))
    stored = model.to_dict()
    del stored["forest"]["trees"], stored["forest"]["smoothing"]  # a file of session 43: 100 trees, no smoothing
    torch.save(stored, path)
    assert SemSegModel.load(path).forest.trees == 100 and model.forest.trees == 50
    assert SemSegModel.load(path).forest.smoothing == 0.0
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
    alone = dict(FAST, forest_teacher_images=0)  # the forest of the labels alone
    first = train(images[:, None], labels, classes, TrainConfig(**alone)).model
    assert first.forest_weight == 0.65 and len(first.forest.targets) == (labels > 0).sum()
    assert first.history[-1]["forest_samples"] == (labels > 0).sum()
    assert first.history[-1]["forest_taught_pixels"] == 0
    corrected = labels.copy()
    corrected[1, 20:30, 20:30] = refs[1, 20:30, 20:30]
    second = train(images[:, None], corrected, classes, TrainConfig(**alone), init_model=first).model
    assert len(second.forest.targets) == (corrected > 0).sum()
    assert len(first.forest.targets) == (labels > 0).sum()  # the model it started from is untouched
    off = train(images[:, None], corrected, classes, TrainConfig(forest_weight=0.0, **FAST), init_model=first).model
    assert off.forest is None and off.forest_weight == 0.0 and off.history[-1]["forest_samples"] == 0
    taught = train(images[:, None], labels, classes, TrainConfig(**FAST)).model
    extra = taught.history[-1]["forest_taught_pixels"]
    assert extra > 0 and len(taught.forest.targets) == (labels > 0).sum() + extra  # few pixels: none capped


def test_the_networks_teach_the_forest_what_they_are_sure_of_as_shown_never_where_the_person_painted(monkeypatch):
    images, refs = disk_task(n=9, size=48)
    labels = np.zeros(refs.shape, np.uint16)
    labels[0, 20:30, 20:30] = refs[0, 20:30, 20:30]
    model = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    model.network = ConstantLogits([0.0, 1.5])  # class 2 at 0.82 everywhere: below the confidence
    model.forest, model.forest_weight = PixelForest.fit(images[:, None], _strokes(refs), 2, NORM), 0.5
    monkeypatch.setattr(forest_teacher, "PIXELS_PER_CLASS_AND_IMAGE", 100)
    teach = dict(seed=0, device=torch.device("cpu"), unpainted_images=2)
    unsure = forest_teacher.confident_labels(model, images[:, None], labels, **teach)
    assert sorted(unsure) == [0, 1, 8] and not any(sure.any() for sure in unsure.values())
    model.log_prior_shift = np.array([0.0, 1.0])  # as shown: class 2 at 0.92
    confident = forest_teacher.confident_labels(model, images[:, None], labels, **teach)
    # The painted image and 2 of the 8 others, spread: the first and the last; a map of the image's size each.
    assert sorted(confident) == [0, 1, 8] and all(sure.shape == (48, 48) for sure in confident.values())
    assert [int((confident[i] == 2).sum()) for i in (0, 1, 8)] == [100, 100, 100]
    # The forest's share (it says class 1 on the background) is left out.
    assert not any((sure == 1).any() for sure in confident.values())
    assert not confident[0][20:30, 20:30].any()
    labels[8] = 1  # labeled all over, as an accepted prediction: nothing to teach there, and no prediction
    predicted = []
    real = forest_teacher.predict_probabilities
    monkeypatch.setattr(forest_teacher, "predict_probabilities", lambda m, image, *a, **k: predicted.append(image)
                        or real(m, image, *a, **k))
    confident = forest_teacher.confident_labels(model, images[:, None], labels, **teach)
    assert sorted(confident) == [0, 1, 7] and len(predicted) == 3  # the last of the unpainted ones is 7 now


def test_a_retrained_models_forest_is_taught_by_its_start_too_where_its_own_networks_are_unsure():
    images, refs = disk_task(n=3, size=48)
    labels = _strokes(refs)
    painted = int((labels > 0).sum())
    start = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    start.network = ConstantLogits([0.0, 5.0])  # sure of class 2 everywhere
    retrained = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    retrained.network = ConstantLogits([0.0, 0.0])  # sure of nothing
    config = TrainConfig(**FAST)
    attach_forest(retrained, images[:, None], labels, config)
    assert len(retrained.forest.targets) == painted  # the labels alone
    attach_forest(retrained, images[:, None], labels, config, start=start)
    taught = retrained.forest.targets[painted:]
    assert len(taught) > 0 and (taught == 2).all()  # the start's sure pixels
    retrained.network = ConstantLogits([5.0, 0.0])  # now sure of class 1 everywhere: its own pixels win
    attach_forest(retrained, images[:, None], labels, config, start=start)
    taught = retrained.forest.targets[painted:]
    assert len(taught) > 0 and (taught == 1).all()


def test_a_line_class_gets_a_smaller_share_of_the_forest():
    images, refs = disk_task(n=2)
    forest = PixelForest.fit(images[:, None], _strokes(refs), 2, NORM)
    forest.smoothing = 0.0  # the shares alone (the smoothing has its own tests)
    image = images[1][None]
    f = forest.probabilities(image, NORM)
    n = torch.tensor([0.3, 0.7])[:, None, None].expand_as(f)
    assert torch.allclose(forest.mixed_into(n, image, NORM, 0.5, []), 0.5 * n + 0.5 * f, atol=1e-6)
    line = torch.stack([0.5 * n[0] + 0.5 * f[0], (1 - LINE_CLASS_WEIGHT) * n[1] + LINE_CLASS_WEIGHT * f[1]])
    assert torch.allclose(forest.mixed_into(n, image, NORM, 0.5, [1]), line / line.sum(0), atol=1e-6)
    assert torch.allclose(forest.mixed_into(n, image, NORM, 0.1, [1]), 0.9 * n + 0.1 * f, atol=1e-6)


def test_the_forests_speckle_is_smoothed_away_while_a_line_class_keeps_its_probability_to_the_pixel():
    prob = torch.zeros(3, 40, 40)
    prob[0], prob[1] = 0.7, 0.1  # background sure, a little nucleus
    prob[2, :, 20] = 0.9  # a 1-pixel line class
    prob[0, :, 20], prob[1, :, 20] = 0.05, 0.05
    prob[:2, 10, 5] = torch.tensor([0.1, 0.7])  # one speckled pixel: the forest's lone vote for nucleus
    prob = prob / prob.sum(0, keepdim=True)
    out = smoothed(prob, [2], 1.0)
    assert torch.allclose(out.sum(0), torch.ones(40, 40), atol=1e-5)
    assert torch.equal(out[2], prob[2])  # the line class to the pixel
    assert out[:2, 10, 5].argmax() == 0 and out[1, 10, 5] < 0.3  # the speckle is gone
    assert out[1, 10, 4] > prob[1, 10, 4]  # spread over its neighbours
    assert torch.equal(smoothed(prob, [2], 0.0), prob)
    assert torch.equal(smoothed(prob, [0, 2], 1.0), prob)  # one class besides the lines: nothing to smooth
