import numpy as np
import pytest
import torch
from conftest import disk_task
from SemSegLib.classes import ClassInfo
from SemSegLib.errors import InputError
from SemSegLib.metrics import evaluate
from SemSegLib.model_file import SemSegModel
from SemSegLib.network import NetworkConfig, build_network
from SemSegLib.prediction import predict_image
from SemSegLib.simulate import simulate_strokes
from SemSegLib.starting_points import (
    MIN_AGREEMENT,
    StartingPoint,
    class_order_from_strokes,
    reorder_classes,
)
from SemSegLib.synthetic_membranes import MEMBRANE_CLASSES, cell_instances, make_membrane_image, membrane_mask
from SemSegLib.synthetic_nuclei import NUCLEI_CLASSES, make_nuclei_image, nuclei_labels, nucleus_instances
from SemSegLib.training import TrainConfig, train
from test_round_ensemble import _same_weights


def test_generated_nuclei_are_labeled_with_each_nucleus_s_1_pixel_inner_border():
    instances = nucleus_instances(np.random.default_rng(3), 128)
    labels = nuclei_labels(instances)
    assert instances.max() > 5
    padded = np.pad(instances, 1, mode="edge")
    for y, x in zip(*np.nonzero(instances)):
        neighbours = [padded[y + 1 + dy, x + 1 + dx] for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))]
        expected = 3 if any(n != instances[y, x] for n in neighbours) else 2
        assert labels[y, x] == expected
    assert (labels[instances == 0] == 1).all()
    # Touching nuclei are separated by the two borders that meet.
    touching = (instances[:, :-1] > 0) & (instances[:, 1:] > 0) & (instances[:, :-1] != instances[:, 1:])
    assert touching.any() and (labels[:, :-1][touching] == 3).all() and (labels[:, 1:][touching] == 3).all()
    # None along the frame where a nucleus is cut by it, unless it meets something else there.
    frame = labels[0][instances[0] > 0]
    assert (frame == 2).any()
    image, again = make_nuclei_image(np.random.default_rng(3), 64)
    assert image.shape == (1, 64, 64) and image.dtype == np.float32
    np.testing.assert_array_equal(make_nuclei_image(np.random.default_rng(3), 64)[0], image)


def test_generated_membranes_lie_on_the_walls_between_cells_and_all_else_is_cell():
    rng = np.random.default_rng(5)
    instances = cell_instances(rng, 128)
    assert (instances > 0).all() and len(np.unique(instances)) >= 5  # cells tile the image
    membrane = membrane_mask(instances, rng)
    wall = np.zeros_like(membrane)
    wall[:, 1:] |= instances[:, 1:] != instances[:, :-1]
    wall[1:, :] |= instances[1:, :] != instances[:-1, :]
    assert membrane[wall].all()  # every wall is membrane
    from scipy import ndimage as ndi

    far = ndi.distance_transform_edt(~wall) > 3.5 * np.exp(1.25)  # beyond the widest half width
    assert not membrane[far].any()
    shares = [(make_membrane_image(np.random.default_rng(k), 128)[1] == 1).mean() for k in range(6)]
    assert 0.05 < min(shares) and max(shares) < 0.5  # about a fifth, as in serial-section EM
    image, labels = make_membrane_image(np.random.default_rng(3), 64)
    assert image.shape == (1, 64, 64) and image.dtype == np.float32 and set(np.unique(labels)) == {1, 2}
    np.testing.assert_array_equal(make_membrane_image(np.random.default_rng(3), 64)[0], image)
    assert image[0][labels == 1].mean() < image[0][labels == 2].mean()  # dark membranes


def small_config(num_classes: int) -> NetworkConfig:
    return NetworkConfig(in_channels=1, num_classes=num_classes, base_width=4, levels=2)


def test_a_start_with_its_classes_reordered_predicts_them_in_the_new_order():
    config = small_config(3)
    torch.manual_seed(0)
    state = build_network(config).state_dict()
    point = StartingPoint("test", ["a", "b", "c"], config, SemSegModel.create(1, NUCLEI_CLASSES).normalization, state)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        original = point.network()(x)
        reordered = point.network([2, 0, 1])(x)
    torch.testing.assert_close(reordered, original[:, [2, 0, 1]])
    assert not torch.allclose(reordered, original)
    # Only the class channels move: a kernel of the same size (3) as the number of classes stays as it was.
    moved = reorder_classes(state, config, [2, 0, 1])
    square = [k for k, v in state.items() if tuple(v.shape) == (3, 3, 3, 3)]  # classes in and out, 3 x 3 kernel
    assert square
    for key in square:
        torch.testing.assert_close(moved[key], state[key][[2, 0, 1]][:, [2, 0, 1]])
    assert sum(not torch.equal(state[k], moved[k]) for k in state) < len(state) / 4


def test_the_class_order_comes_from_the_strokes_and_agreement_measures_it():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (2, 20, 20))  # 0 unlabeled, 1..3 the person's classes
    order = [2, 0, 1]  # the person's class c is the start's class order[c]
    probabilities = []
    for lab in labels:
        start_class = np.array(order)[np.clip(lab - 1, 0, 2)]
        prob = np.full((3, 20, 20), 0.1)
        np.put_along_axis(prob, start_class[None], 0.8, axis=0)
        probabilities.append(prob)
    found, agreement = class_order_from_strokes(probabilities, list(labels))
    assert found == order and agreement == pytest.approx(1.0)
    noise = [rng.dirichlet(np.ones(3), (20, 20)).transpose(2, 0, 1) for _ in labels]
    assert class_order_from_strokes(noise, list(labels))[1] < MIN_AGREEMENT


@pytest.mark.parametrize("name, classes, make_image, least_iou", [
    ("fluorescent-nuclei", NUCLEI_CLASSES, make_nuclei_image, (0.9, 0.7, 0.3)),  # a 1-pixel border: a third at least
    ("em-membranes", MEMBRANE_CLASSES, make_membrane_image, (0.6, 0.85)),  # membrane, cell
])
def test_a_shipped_start_segments_generated_images_it_was_not_trained_on(name, classes, make_image, least_iou):
    point = StartingPoint.shipped(name)
    assert point.class_names == [c.name for c in classes]
    model = SemSegModel(point.network(), point.network_config, classes, point.normalization)
    image, reference = make_image(np.random.default_rng(12345), 192)
    predicted = predict_image(model, image).labels
    result = evaluate(predicted[None], reference[None], [c.name for c in classes])
    assert all(iou > least for iou, least in zip(result.iou, least_iou, strict=True))


def test_a_first_two_class_training_of_membranes_starts_from_the_em_network_in_the_person_s_order():
    rng = np.random.default_rng(7)
    pairs = [make_membrane_image(rng, 160) for _ in range(2)]
    images, reference = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    person = 3 - reference  # the person lists the cells first: 1 cell, 2 membrane
    classes = [ClassInfo(1, "neurite", (0, 255, 0)), ClassInfo(2, "wall", (255, 0, 0))]
    labels = np.stack([simulate_strokes(ref, 2, 6, rng=rng) for ref in person])
    start = train(images, labels, classes, TrainConfig(**QUICK)).model.history[-1]["starting_point"]
    assert start["name"] == "em-membranes" and start["class_order"] == [1, 0]
    assert start["agreement"] >= MIN_AGREEMENT


def nuclei_stack(n: int = 2, size: int = 192, seed: int = 7):
    rng = np.random.default_rng(seed)
    pairs = [make_nuclei_image(rng, size) for _ in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


QUICK = dict(iterations=2, forest_weight=0.0, prior_correction_images=0, batch_size=1, patch_size=64)


def test_a_first_training_starts_from_the_shipped_network_with_the_person_s_class_order():
    images, reference = nuclei_stack()
    # The person lists the classes in another order and names them otherwise: nucleus, border, background.
    person = np.choose(reference - 1, [3, 1, 2]).astype(np.uint16)
    classes = [ClassInfo(1, "cell nucleus", (0, 255, 0)), ClassInfo(2, "rim", (255, 0, 0)),
               ClassInfo(3, "outside", (0, 0, 0))]
    rng = np.random.default_rng(0)
    labels = np.stack([simulate_strokes(ref, 3, 6, rng=rng) for ref in person])
    messages = []
    result = train(images, labels, classes, TrainConfig(**QUICK), progress=lambda p: messages.append(p.message))
    assert "checking the pretrained fluorescent-nuclei network against the strokes" in messages
    start = result.model.history[-1]["starting_point"]
    assert start["name"] == "fluorescent-nuclei" and start["class_order"] == [1, 2, 0]
    assert start["agreement"] >= MIN_AGREEMENT
    off = train(images, labels, classes, TrainConfig(**QUICK, starting_point="none"))
    assert off.model.history[-1]["starting_point"] is None
    # A retraining continues from its model, never from a start.
    again = train(images, labels, classes, TrainConfig(**QUICK), init_model=result.model)
    assert again.model.history[-1]["starting_point"] is None


def test_rounds_after_a_first_training_from_a_start_keep_its_network_at_its_share():
    images, reference = nuclei_stack()
    rng = np.random.default_rng(0)
    labels = np.stack([simulate_strokes(ref, 3, 6, rng=rng) for ref in reference])
    first = train(images, labels, NUCLEI_CLASSES, TrainConfig(**QUICK, starting_point="fluorescent-nuclei")).model
    models = [first]
    for _ in range(3):
        models.append(train(images, labels, NUCLEI_CLASSES, TrainConfig(**QUICK, round_networks=3),
                            init_model=models[-1]).model)
    second, third, fourth = models[1:]
    assert first.first_network_share == 0.0 and second.first_network_share == 0.5
    assert second.history[-1]["first_network_share"] == 0.5
    assert [w for _, w in third.round_members()] == [0.25, 0.25, 0.5]
    # Past the cap of 3 networks the first stays and the second goes.
    assert [_same_weights(m.network, n.network) for m, n in zip(fourth.earlier_rounds, [third, first])] == [True, True]
    assert [w for _, w in fourth.round_members()] == [0.25, 0.25, 0.5]
    # From random weights, or with the share set to 0, every network is halved.
    plain = train(images, labels, NUCLEI_CLASSES, TrainConfig(**QUICK, starting_point="none")).model
    for start, config in ((plain, TrainConfig(**QUICK)), (first, TrainConfig(**QUICK, start_network_share=0.0))):
        second = train(images, labels, NUCLEI_CLASSES, config, init_model=start).model
        third = train(images, labels, NUCLEI_CLASSES, config, init_model=second).model
        assert third.first_network_share == 0.0 and [w for _, w in third.round_members()] == [0.5, 0.25, 0.25]


def test_no_start_for_strokes_no_start_explains_and_a_named_one_that_does_not_fit_says_why():
    images, reference = disk_task(2, 64)
    images = images[:, None]
    rng = np.random.default_rng(0)
    labels = np.stack([simulate_strokes(ref, 2, 4, rng=rng) for ref in reference])
    classes = [ClassInfo(1, "background", (0, 0, 0)), ClassInfo(2, "disk", (255, 0, 0))]
    result = train(images, labels, classes, TrainConfig(**QUICK))
    assert result.model.history[-1]["starting_point"] is None  # two classes, but bright disks are no membranes
    named = train(images, labels, classes, TrainConfig(**QUICK, starting_point="em-membranes"))
    assert named.model.history[-1]["starting_point"]["name"] == "em-membranes"  # named and fits: as asked
    with pytest.raises(InputError, match="starting point 'none'"):
        train(images, labels, classes, TrainConfig(**QUICK, starting_point="fluorescent-nuclei"))
    with pytest.raises(InputError, match="unknown starting point"):
        train(images, labels, classes, TrainConfig(**QUICK, starting_point="membrane"))


def test_a_missing_shipped_start_costs_auto_the_head_start_and_a_named_one_says_what_to_do(tmp_path, monkeypatch):
    from SemSegLib import starting_points

    images, reference = nuclei_stack(1, 128)
    labels = simulate_strokes(reference[0], 3, 4, rng=np.random.default_rng(0))[None]
    monkeypatch.setattr(starting_points, "FOLDER", tmp_path)
    result = train(images, labels, NUCLEI_CLASSES, TrainConfig(**QUICK))
    assert result.model.history[-1]["starting_point"] is None
    with pytest.raises(InputError, match="is missing .*reinstall SemSeg, or train with starting point 'none'"):
        train(images, labels, NUCLEI_CLASSES, TrainConfig(**QUICK, starting_point="fluorescent-nuclei"))


def test_the_start_is_checked_around_the_strokes_of_a_large_image(monkeypatch):
    from SemSegLib import calibration, starting_points

    images, reference = nuclei_stack()
    rng = np.random.default_rng(0)
    labels = np.stack([simulate_strokes(ref, 3, 6, rng=rng) for ref in reference])
    labels[:, :, 120:] = 0  # strokes on the left part only
    seen = []
    predict = starting_points.predict_probabilities
    monkeypatch.setattr(starting_points, "predict_probabilities",
                        lambda *a, **k: seen.append(k.get("window")) or predict(*a, **k))
    choose = starting_points.choose_starting_point
    whole = choose("auto", images, labels, NUCLEI_CLASSES, point_config())
    assert seen == [None, None]  # an image that fits in one window is predicted whole, as before
    monkeypatch.setattr(calibration, "ESTIMATE_WINDOW", 100)  # these 192 x 192 images count as large now
    windowed = choose("auto", images, labels, NUCLEI_CLASSES, point_config())
    assert all(w[1].stop <= 120 + calibration.LABEL_MARGIN for w in seen[2:])  # not the right part
    assert windowed.class_order == whole.class_order and abs(windowed.agreement - whole.agreement) < 0.05


def point_config() -> NetworkConfig:
    return StartingPoint.shipped("fluorescent-nuclei").network_config
