import copy

import numpy as np
import torch
from conftest import disk_task
from scipy import ndimage as ndi
from SemSegLib.calibration import (
    corrected_class_pixels,
    estimate_log_prior_shift,
    label_fractions,
    learned_class_mix,
    log_prior_shift,
    spread_indices,
)
from SemSegLib.classes import default_classes
from SemSegLib.model_file import SemSegModel
from SemSegLib.prediction import PredictConfig, predict_image, predict_probabilities
from SemSegLib.training import TrainConfig, train

CPU = PredictConfig(device="cpu")


class ConstantLogits(torch.nn.Module):
    """A network that gives every pixel the same class probabilities, whatever the image."""

    def __init__(self, logits: list[float]):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[None, :, None, None].expand(x.shape[0], -1, *x.shape[2:])


def test_the_shift_moves_the_prior_from_the_strokes_to_the_stack():
    labels = np.zeros((2, 10, 10), np.uint16)
    labels[0, 0, :6] = 1  # 6 pixels of class 1, 2 of class 2, none of class 3
    labels[1, 5, :2] = 2
    fractions = label_fractions(labels, 3)
    assert np.allclose(fractions, [0.75, 0.25, 0.0])
    shift = log_prior_shift([0.5, 0.4, 0.1], fractions)
    assert np.allclose(shift, [np.log(0.5 / 0.75), np.log(0.4 / 0.25), 0.0])  # unpainted: left alone
    assert spread_indices(30, 8) == [0, 4, 8, 12, 17, 21, 25, 29] and spread_indices(3, 8) == [0, 1, 2]


def test_the_estimate_is_the_mean_probability_against_the_stroke_shares():
    model = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    model.network = ConstantLogits([0.0, float(np.log(3.0))])  # every pixel: 25% / 75%
    images = np.random.default_rng(0).random((5, 1, 40, 48)).astype(np.float32)
    labels = np.zeros((5, 40, 48), np.uint16)
    labels[1, :4, :10] = 1
    labels[3, :4, :10] = 2  # the strokes: half and half
    model.log_prior_shift = np.array([5.0, -5.0])  # an old correction must not leak into the estimate
    shift = estimate_log_prior_shift(model, images, labels, device=torch.device("cpu"))
    assert np.allclose(shift, [np.log(0.25 / 0.5), np.log(0.75 / 0.5)], atol=1e-5)


def test_a_model_predicts_with_its_correction_and_keeps_it_in_its_file(tmp_path):
    torch.manual_seed(0)
    model = SemSegModel.create(1, default_classes(3), base_width=8, levels=3)
    image = np.random.default_rng(1).random((1, 64, 64)).astype(np.float32)
    raw = predict_probabilities(model, image, CPU)
    model.log_prior_shift = np.array([np.log(0.2), 0.0, np.log(4.0)])
    corrected = predict_probabilities(model, image, CPU)
    expected = raw * torch.tensor([0.2, 1.0, 4.0])[:, None, None]
    assert torch.allclose(corrected, expected / expected.sum(0, keepdim=True), atol=1e-6)
    assert torch.allclose(predict_probabilities(model, image, CPU, prior_shift=False), raw)
    path = tmp_path / "m.pt"
    model.save(path)
    loaded = SemSegModel.load(path)
    assert np.allclose(loaded.log_prior_shift, model.log_prior_shift)
    assert np.array_equal(predict_image(loaded, image, CPU).labels, predict_image(model, image, CPU).labels)
    old = model.to_dict()  # a file written before the correction existed
    del old["log_prior_shift"]
    torch.save(old, path)
    assert SemSegModel.load(path).log_prior_shift is None


def test_the_estimate_takes_the_training_mix_when_given():
    model = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    model.network = ConstantLogits([0.0, float(np.log(3.0))])  # every pixel: 25% / 75%
    images = np.random.default_rng(0).random((2, 1, 40, 48)).astype(np.float32)
    labels = np.zeros((2, 40, 48), np.uint16)
    labels[0, :4, :10] = 1
    labels[1, :4, :10] = 2
    shift = estimate_log_prior_shift(model, images, labels, device=torch.device("cpu"), training_mix=[30.0, 10.0])
    assert np.allclose(shift, [np.log(0.25 / 0.75), np.log(0.75 / 0.25)], atol=1e-5)


def test_learned_class_mix_is_the_strokes_now_times_the_first_trainings_sampling_bias():
    first = {"training_class_pixels": [600.0, 400.0], "labeled_class_pixels": [900, 100]}  # bias 2/3 and 4
    assert np.allclose(learned_class_mix([first]), [0.6, 0.4])
    retrained = {"training_class_pixels": [50.0, 950.0], "labeled_class_pixels": [900, 300]}
    expected = np.array([0.75 * 2 / 3, 0.25 * 4])
    assert np.allclose(learned_class_mix([first, retrained]), expected / expected.sum())
    older = {"training_class_pixels": [600.0, 400.0]}  # a file from before the label counts: no bias known
    assert learned_class_mix([older]) is None
    assert np.allclose(learned_class_mix([older, retrained]), [0.75, 0.25])
    assert learned_class_mix([]) is None


def test_corrections_are_left_out_of_the_learned_mix_and_new_strokes_are_not():
    first = {"training_class_pixels": [600.0, 400.0], "labeled_class_pixels": [900, 100]}  # bias 2/3 and 4
    # Round 1: 200 new pixels of class 2, 150 of them corrections; round 2: 100 new of class 1, none corrections.
    round1 = {"labeled_class_pixels": [900, 300], "corrected_class_pixels": [0, 150]}
    round2 = {"labeled_class_pixels": [1000, 300], "corrected_class_pixels": [0, 0]}
    expected = np.array([1000 / 1150 * 2 / 3, 150 / 1150 * 4])
    assert np.allclose(learned_class_mix([first, round1, round2]), expected / expected.sum())
    # Without correction counts (a file from before them), every labeled pixel counts, as it always did.
    plain = {"labeled_class_pixels": [1000, 300]}
    expected = np.array([1000 / 1300 * 2 / 3, 300 / 1300 * 4])
    assert np.allclose(learned_class_mix([first, {"labeled_class_pixels": [900, 300]}, plain]),
                       expected / expected.sum())


def test_corrected_pixels_are_the_new_labels_the_model_predicted_as_another_class():
    model = SemSegModel.create(1, default_classes(3), base_width=8, levels=3)
    model.network = ConstantLogits([0.0, float(np.log(3.0)), 0.0])  # class 2 everywhere
    images = np.random.default_rng(0).random((3, 1, 40, 48)).astype(np.float32)
    labels = np.zeros((3, 40, 48), np.uint16)
    labels[0, :4, :10] = 1  # 40 pixels of class 1: old strokes
    labels[1, :2, :10] = 2  # 20 new pixels that confirm the prediction
    labels[1, 10:13, :10] = 3  # 30 new pixels that correct it
    labels[2, 5, :7] = 1  # 7 new pixels that correct it
    new = labels > 0
    new[0] = False
    assert np.array_equal(corrected_class_pixels(model, images, labels, new, torch.device("cpu")), [7, 0, 30])


def test_training_ends_with_the_correction_for_the_class_mix_its_loss_saw(monkeypatch):
    from SemSegLib.patches import IGNORE, PatchSampler

    images, refs = disk_task(n=3, size=192)
    labels = np.zeros(refs.shape, np.uint16)
    labels[0, :3] = 1  # background: a long band of 576 pixels at the top (the disks stay 15 px away)
    inside = ndi.distance_transform_edt(refs[0] == 2)
    cy, cx = np.unravel_index(inside.argmax(), inside.shape)
    labels[0, cy - 2:cy + 2, cx - 2:cx + 2] = 2  # the disks: 16 pixels deep inside one of them
    assert 0 < label_fractions(labels, 2)[1] < 0.03
    batches = []
    sample = PatchSampler.sample

    def recording_sample(self, batch_size, patch_size, anywhere=False):
        x, y, w = sample(self, batch_size, patch_size, anywhere)
        if not anywhere:  # the batches with the stroke loss (the others are the teacher's)
            batches.append((y.clone(), w.clone()))
        return x, y, w

    monkeypatch.setattr(PatchSampler, "sample", recording_sample)
    fast = dict(iterations=20, patch_size=32, batch_size=2, base_width=8, levels=3, device="cpu")
    res = train(images[:, None], labels, default_classes(2), TrainConfig(**fast))
    seen = np.zeros(2)
    for y, w in batches:
        seen += np.bincount(y[y != IGNORE].numpy(), weights=w[y != IGNORE].numpy(), minlength=2)
    mix = seen / seen.sum()
    assert np.allclose(res.model.history[-1]["training_class_pixels"], seen, atol=0.1)
    # Patches centered on a class drawn uniformly: the small disk weighs more than its share of the strokes.
    assert abs(mix[1] - label_fractions(labels, 2)[1]) > 0.05
    shift = res.model.log_prior_shift
    assert shift is not None and shift.shape == (2,) and np.isfinite(shift).all()
    plain = copy.copy(res.model)
    plain.log_prior_shift = None
    assert np.allclose(shift, estimate_log_prior_shift(plain, images[:, None], labels, device=torch.device("cpu"),
                                                       training_mix=seen))
    assert not np.allclose(shift, estimate_log_prior_shift(plain, images[:, None], labels,
                                                           device=torch.device("cpu")), atol=0.02)
    assert res.model.history[-1]["log_prior_shift"] == [round(float(v), 4) for v in shift]

    # A retrained network learned the stroke shares now times the first training's sampling bias, neither the
    # first training's mix alone nor the sum of all the pixels its losses saw. Its correction is the first
    # model's, moved by that change of mix, not estimated afresh from its own mean probability.
    corrected = labels.copy()
    inside = ndi.distance_transform_edt(refs[1] == 2)
    cy, cx = np.unravel_index(inside.argmax(), inside.shape)
    corrected[1, cy - 3:cy + 3, cx - 3:cx + 3] = 2  # new strokes of the small class, on another image
    batches.clear()
    again = train(images[:, None], corrected, default_classes(2), TrainConfig(**fast), init_model=res.model)
    round_seen = sum(np.bincount(y[y != IGNORE].numpy(), weights=w[y != IGNORE].numpy(), minlength=2)
                     for y, w in batches)
    bias = mix / label_fractions(labels, 2)
    expected = label_fractions(corrected, 2) * bias
    expected /= expected.sum()
    assert np.allclose(learned_class_mix(again.model.history), expected)
    assert not np.allclose(expected, (seen + round_seen) / (seen + round_seen).sum(), atol=0.02)
    assert np.allclose(again.model.log_prior_shift, shift + np.log(mix / expected), atol=1e-5)
    alone = copy.copy(again.model)
    alone.log_prior_shift, alone.earlier_rounds = None, []
    afresh = estimate_log_prior_shift(alone, images[:, None], corrected, device=torch.device("cpu"),
                                      training_mix=expected)
    assert not np.allclose(again.model.log_prior_shift, afresh, atol=0.02)
    # With the images' names the round knows which labeled pixels are new. Those the first model showed as
    # another class are corrections: counted (`corrected_class_pixels`) and left out of the learned mix.
    names = [f"img{i}" for i in range(len(images))]
    named = train(images[:, None], labels, default_classes(2), TrainConfig(**fast), names=names)
    shown = predict_image(named.model, images[1, None], CPU).labels
    assert np.array_equal(shown[cy - 3:cy + 3, cx - 3:cx + 3], np.full((6, 6), 2))  # new strokes it got right
    painted = corrected.copy()
    rows, columns = np.nonzero(ndi.binary_erosion(shown == 1, np.ones((5, 5)), border_value=0))
    painted[1, rows[0] - 2:rows[0] + 2, columns[0] - 2:columns[0] + 2] = 2  # 16 pixels it showed as class 1
    again = train(images[:, None], painted, default_classes(2), TrainConfig(**fast), init_model=named.model,
                  names=names)
    assert again.model.history[-1]["corrected_class_pixels"] == [0, 16]
    first_mix = np.array(named.model.history[0]["training_class_pixels"])
    first_mix /= first_mix.sum()
    kept = np.bincount(painted[painted > 0], minlength=3)[1:] - [0, 16]
    expected = kept / kept.sum() * first_mix / label_fractions(labels, 2)
    expected /= expected.sum()
    assert np.allclose(learned_class_mix(again.model.history), expected)
    assert np.allclose(again.model.log_prior_shift, named.model.log_prior_shift + np.log(first_mix / expected),
                       atol=1e-5)
    off = train(images[:, None], labels, default_classes(2), TrainConfig(prior_correction_images=0, **fast))
    assert off.model.log_prior_shift is None and off.model.history[-1]["log_prior_shift"] is None


def test_estimate_windows_cover_a_large_image_and_leave_a_small_one_whole():
    from SemSegLib.calibration import estimate_window

    assert estimate_window((1, 520, 696), 5) == (slice(0, 520), slice(0, 696))  # the benchmark's images: unchanged
    for shape, count in (((2048, 2048), 4), ((4096, 4096), 16), ((1500, 3000), 6)):
        seen = np.zeros(shape, int)
        for k in range(count):
            rows, cols = estimate_window(shape, k)
            assert rows.stop - rows.start == cols.stop - cols.start == 1024 and rows.stop <= shape[0]
            seen[rows, cols] += 1
        assert seen.min() >= 1  # the first `count` windows look at every pixel
    firsts = [estimate_window((4096, 4096), k) for k in range(4)]
    assert len({rows.start for rows, _ in firsts}) > 1 and len({cols.start for _, cols in firsts}) > 1  # spread


class SignOfPixel(torch.nn.Module):
    """Class 1 where the normalized pixel is below 0.5 (the middle of the image's range), class 2 above; sure of
    it away from the middle."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-20 * (x - 0.5), 20 * (x - 0.5)], 1)


def test_the_forest_is_taught_within_each_images_window(monkeypatch):
    from SemSegLib import calibration
    from SemSegLib.calibration import estimate_window
    from SemSegLib.forest_teacher import confident_labels
    from SemSegLib.network import NetworkConfig

    model = SemSegModel(SignOfPixel(), NetworkConfig(in_channels=1, num_classes=2), default_classes(2))
    images = np.random.default_rng(0).normal(0, 1, (5, 1, 80, 96)).astype(np.float32)
    labels = np.zeros((5, 80, 96), np.uint8)
    labels[2, 10, 10:20] = 1
    whole = confident_labels(model, images, labels, unpainted_images=2)
    monkeypatch.setattr(calibration, "ESTIMATE_WINDOW", 40)
    windowed = confident_labels(model, images, labels, unpainted_images=2)
    for k, i in enumerate([2, 0, 4]):  # the painted image first, then the unpainted ones spread over the stack
        inside = np.zeros((80, 96), bool)
        inside[estimate_window(images.shape, k)] = True
        assert windowed[i][inside].any() and not windowed[i][~inside].any()
        assert whole[i][~inside].any()
    assert sorted(windowed) == sorted(whole) == [0, 2, 4]  # the images taught on, and no others


def test_a_window_is_predicted_as_it_is_in_the_whole_image():
    from SemSegLib.network import NetworkConfig

    model = SemSegModel(SignOfPixel(), NetworkConfig(in_channels=1, num_classes=2), default_classes(2))
    image = np.random.default_rng(0).normal(10, 1, (1, 64, 96)).astype(np.float32)  # dim background
    image[:, :, 48:] += 100  # and a bright half: the left half's pixels are all below the image's middle
    window = (slice(8, 56), slice(0, 40))
    whole = predict_probabilities(model, image, CPU, prior_shift=False)
    part = predict_probabilities(model, image, CPU, prior_shift=False, window=window)
    assert torch.allclose(part, whole[:, window[0], window[1]])
    assert (part.argmax(0) == 0).all()  # its own percentiles would have split the background's noise in two


def _sign_model_with_forest(images: np.ndarray, labels: np.ndarray) -> SemSegModel:
    from SemSegLib.network import NetworkConfig
    from SemSegLib.pixel_forest import PixelForest

    model = SemSegModel(SignOfPixel(), NetworkConfig(in_channels=1, num_classes=2), default_classes(2))
    model.forest = PixelForest.fit(images, labels, 2, model.normalization)
    model.forest_weight = 0.65
    return model


def test_a_window_with_the_forest_is_predicted_as_it_is_in_the_whole_image():
    """The forest's features of a window come from the whole image's normalization: from the filters' reach
    (LABEL_MARGIN) inside the window's edges the map is the whole image's."""
    from SemSegLib.calibration import LABEL_MARGIN

    rng = np.random.default_rng(0)
    images = ndi.gaussian_filter(rng.normal(0, 1, (1, 1, 200, 260)), (0, 0, 3, 3)).astype(np.float32)
    images[..., 150:] += 0.5  # the window lies mostly in the darker part, whose own percentiles would differ
    labels = np.zeros((1, 200, 260), np.uint8)
    labels[0, 5:195:4, 5:255:4] = np.where(images[0, 0, 5:195:4, 5:255:4] < np.median(images), 1, 2)
    model = _sign_model_with_forest(images, labels)
    window = (slice(10, 190), slice(20, 170))
    whole = predict_probabilities(model, images[0], CPU)[:, window[0], window[1]]
    part = predict_probabilities(model, images[0], CPU, window=window)
    assert part.shape == whole.shape == (2, 180, 150)
    m = LABEL_MARGIN
    assert torch.allclose(part[:, m:-m, m:-m], whole[:, m:-m, m:-m], atol=1e-6)
    assert not torch.allclose(part, whole, atol=1e-3)  # the filters do reach out of the window near its edges
    assert predict_image(model, images[0], CPU, window=window).labels.shape == (180, 150)


def test_corrections_on_a_large_image_are_counted_in_a_window_around_them(monkeypatch):
    from SemSegLib import calibration

    rng = np.random.default_rng(1)
    images = ndi.gaussian_filter(rng.normal(0, 1, (2, 1, 200, 260)), (0, 0, 2, 2)).astype(np.float32)
    labels = np.zeros((2, 200, 260), np.uint8)
    labels[0, 10:190:3, 10:250:3] = np.where(images[0, 0, 10:190:3, 10:250:3] < 0, 1, 2)
    model = _sign_model_with_forest(images, labels)
    new = np.zeros_like(labels)
    new[1, 90:110, 100:160] = rng.integers(1, 3, (20, 60))  # strokes that half agree with the model, half correct
    labels = np.maximum(labels, new)
    whole = corrected_class_pixels(model, images, labels, new, torch.device("cpu"))
    predicted = []
    real = calibration.predict_image
    monkeypatch.setattr(calibration, "predict_image", lambda *a, **k: predicted.append(real(*a, **k).labels.shape)
                        or real(*a, **k))
    monkeypatch.setattr(calibration, "ESTIMATE_WINDOW", 128)  # the image is "large": larger than one window
    windowed = corrected_class_pixels(model, images, labels, new, torch.device("cpu"))
    assert predicted == [(20 + 2 * 64, 60 + 2 * 64)]  # the new strokes' box and its margin: image 1 alone
    assert np.array_equal(windowed, whole) and 0 < whole.sum() < (new > 0).sum()
