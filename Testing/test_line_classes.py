import numpy as np
import pytest
import torch
from conftest import disk_task
from scipy import ndimage as ndi
from SemSegLib.classes import default_classes
from SemSegLib.line_classes import detect_line_classes, interior_share, ridge, thin_line_classes
from SemSegLib.losses import line_position_loss
from SemSegLib.model_file import SemSegModel
from SemSegLib.patches import IGNORE
from SemSegLib.prediction import PredictConfig, predict_image, predict_probabilities
from SemSegLib.simulate import simulate_strokes
from SemSegLib.training import TrainConfig, train


def ring_task(n: int = 3, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """disk_task with a third class: the 1-pixel inner boundary of each disk (a nucleus border)."""
    images, refs = disk_task(n, size)
    refs = refs.copy()
    for ref in refs:
        disks = ref == 2
        ref[disks & ~ndi.binary_erosion(disks)] = 3
    return images, refs


def test_a_class_traced_as_1_pixel_lines_is_a_line_class_and_brushed_classes_are_not():
    _, refs = ring_task()
    rng = np.random.default_rng(0)
    labels = np.stack([simulate_strokes(ref, 3, 4, rng=rng) for ref in refs])
    assert interior_share(labels, 3) < 0.05 < 0.2 < interior_share(labels, 1)
    assert detect_line_classes(labels, 3) == [2]
    _, disks = disk_task(3)
    brushed = np.stack([simulate_strokes(ref, 2, 4, rng=rng) for ref in disks])
    assert detect_line_classes(brushed, 2) == []
    # Every class painted 1 pixel wide says the brush was thin, not that the classes are lines.
    thin = np.zeros((1, 20, 20), np.uint16)
    thin[0, 2, 2:18], thin[0, 10, 2:18], thin[0, 16, 2:18] = 1, 2, 3
    assert detect_line_classes(thin, 3) == []


def band_probabilities(height: int = 12, width: int = 15) -> torch.Tensor:
    """Class 0 left, class 1 right, and between them a 3-pixel band (columns 6-8) that class 2 wins,
    most surely on its middle column."""
    prob = np.zeros((3, height, width), np.float32)
    prob[0, :, :7] = 0.8
    prob[1, :, 7:] = 0.8
    prob[2] = 0.1
    prob[2, :, 6:9] = [0.6, 0.9, 0.6]
    prob[:2, :, 6:9] = np.array([[0.3, 0.05, 0.1], [0.1, 0.05, 0.3]])[:, None]
    prob /= prob.sum(0, keepdims=True)
    return torch.from_numpy(prob)


def test_the_interior_share_counts_each_class_as_over_the_whole_image_at_its_edges_too():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    labels = np.zeros((5, 40, 50), np.uint8)
    labels[0] = rng.integers(0, 3, (40, 50))  # speckle everywhere, edges included
    labels[1, 0:6, 44:50] = 1  # a block in a corner: the outside erodes it as an unlabeled pixel would
    labels[2, 10:20, 10:12] = 2  # a 2-pixel wide stroke: no interior
    labels[3, 5:15, 5:15] = 1  # a block with its interior; image 4 unlabeled
    for value in (1, 2):
        masks = labels == value
        inner = sum(int(ndi.binary_erosion(m, ndi.generate_binary_structure(2, 1)).sum()) for m in masks)
        assert interior_share(labels, value) == inner / masks.sum()
    assert np.isnan(interior_share(labels, 3))


def test_a_line_class_band_is_thinned_to_its_ridge_and_its_flanks_join_their_neighbours():
    prob = band_probabilities()
    assert (prob.argmax(0) == 2).sum(1).tolist() == [3] * 12
    thinned = thin_line_classes(prob, [2])
    labels = thinned.argmax(0).numpy()
    assert (labels[:, 7] == 2).all() and (labels == 2).sum() == 12  # the middle column only
    assert (labels[:, 6] == 0).all() and (labels[:, 8] == 1).all()  # each flank to the class it touches
    assert torch.allclose(thinned.sum(0), torch.ones(12, 15))
    assert torch.equal(thin_line_classes(prob, []), prob)


def columns_on_the_ridge(profile: list[float], **tolerance) -> list[int]:
    """The columns `ridge` keeps of a vertical line whose probability across is `profile` (columns 3-8)."""
    p = np.full((12, 12), 0.05, np.float32)
    p[:, 3:9] = profile
    kept = ridge(p, p > 0.35, **tolerance)
    columns = np.flatnonzero(kept.any(0))
    assert kept[:, columns].all()  # the same in every row of the line
    return [int(c) for c in columns]


def test_the_ridge_keeps_a_near_tie_across_the_line_and_only_the_peak_of_a_clear_one():
    near_tie = [0.2, 0.4, 0.8, 0.75, 0.4, 0.2]
    assert columns_on_the_ridge(near_tie, tolerance=0.0) == [5]  # exact suppression: one of the two
    assert columns_on_the_ridge(near_tie) == [5, 6]  # the default keeps both: the position is known to a pixel
    assert columns_on_the_ridge([0.2, 0.5, 0.8, 0.6, 0.3, 0.2]) == [5]  # a clear peak stays one pixel wide


class FixedLogits(torch.nn.Module):
    """A network whose output is the same logit map whatever the image (of that map's size)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[None].expand(x.shape[0], -1, -1, -1)


def test_a_model_predicts_its_line_classes_thin_and_keeps_them_in_its_file(tmp_path):
    model = SemSegModel.create(1, default_classes(3), base_width=8, levels=3)
    model.network = FixedLogits(torch.log(band_probabilities(16, 16)))
    image = np.zeros((1, 16, 16), np.float32)
    config = PredictConfig(device="cpu")
    assert (predict_image(model, image, config).labels == 3).sum() == 48
    model.line_classes = [2]
    assert (predict_image(model, image, config).labels == 3).sum() == 16
    model.network = SemSegModel.create(1, default_classes(3), base_width=8, levels=3).network
    model.save(tmp_path / "m.pt")
    assert SemSegModel.load(tmp_path / "m.pt").line_classes == [2]
    # A model file from before line classes thins nothing.
    d = torch.load(tmp_path / "m.pt", weights_only=True)
    del d["line_classes"]
    torch.save(d, tmp_path / "old.pt")
    assert SemSegModel.load(tmp_path / "old.pt").line_classes == []


def traced_rings(n: int = 2, size: int = 64, strokes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """ring_task's images (N, 1, H, W) and `strokes` simulated strokes per class, the ring traced."""
    images, refs = ring_task(n, size)
    rng = np.random.default_rng(1)
    return images[:, None], np.stack([simulate_strokes(ref, 3, strokes, rng=rng) for ref in refs])


TWO_STEPS = {"iterations": 2, "batch_size": 1, "patch_size": 32, "base_width": 8, "levels": 3, "device": "cpu",
             "prior_correction_images": 0, "ema_decay": 0}


def test_training_detects_the_line_classes_of_its_labels_unless_told_not_to():
    images, labels = traced_rings()
    config = TrainConfig(**TWO_STEPS)
    model = train(images, labels, default_classes(3), config).model
    assert model.line_classes == [2] and model.history[-1]["line_classes"] == [2]
    config.thin_line_classes = False
    assert train(images, labels, default_classes(3), config).model.line_classes == []


def test_the_line_position_loss_asks_a_traced_pixel_to_beat_its_unpainted_flanks_only():
    targets = torch.full((1, 10, 9), IGNORE)
    targets[0, :, 4] = 2  # a traced vertical line
    targets[0, :, 1] = 0  # a brushed stroke of another class, away from the line
    logits = torch.zeros(1, 3, 10, 9)
    # Flat across the line: every (traced pixel, flank) pair misses the margin by the margin.
    assert float(line_position_loss(logits, targets, [2], 0.5)) == pytest.approx(0.5)
    # Peaked by more than the margin: nothing to learn. Along the line the traced pixels may differ (rising
    # row by row), because a traced neighbour is no flank.
    logits[0, 2, :, 4] = 2.0 + torch.arange(10) * 0.3
    assert float(line_position_loss(logits, targets, [2], 0.5)) == 0.0
    # One flank above its traced pixel: only that pair costs, and the gradient lowers the flank and raises
    # the traced pixel.
    logits[0, 2, 3, 5] = 5.0
    logits.requires_grad_(True)
    loss = line_position_loss(logits, targets, [2], 0.5)
    loss.backward()
    assert float(loss.detach()) > 0
    assert logits.grad[0, 2, 3, 5] > 0 > logits.grad[0, 2, 3, 4]
    assert logits.grad[0, 2, 3, 3] == 0 and logits.grad[0, 2, 5, 5] == 0
    # A class that is no line class is not asked to peak.
    assert float(line_position_loss(torch.zeros(1, 3, 10, 9), targets, [], 0.5)) == 0.0


def traced_pixels_beating_their_flanks(model: SemSegModel, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of the traced line pixels whose line probability is above each untraced 4-neighbour's."""
    wins = total = 0
    for image, traced in zip(images, labels == 3):
        p = np.pad(predict_probabilities(model, image, prior_shift=False)[2].numpy(), 1)
        flank = np.pad(~traced, 1)
        for y, x in np.argwhere(traced) + 1:
            others = [p[y + dy, x + dx] for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)) if flank[y + dy, x + dx]]
            total += bool(others)
            wins += bool(others) and p[y, x] > max(others)
    return wins / total


def test_training_with_the_line_position_loss_puts_the_line_class_peak_on_the_traced_pixels():
    images, labels = traced_rings(3, 96, strokes=6)
    config = TrainConfig(iterations=120, batch_size=2, patch_size=64, base_width=8, levels=3, device="cpu",
                         prior_correction_images=0, line_position_weight=0.0)
    without = traced_pixels_beating_their_flanks(train(images, labels, default_classes(3), config).model,
                                                 images, labels)
    config.line_position_weight = 1.0
    with_loss = traced_pixels_beating_their_flanks(train(images, labels, default_classes(3), config).model,
                                                   images, labels)
    assert with_loss > without + 0.1


def test_the_line_position_loss_trains_the_line_classes_whether_or_not_the_prediction_is_thinned(monkeypatch):
    import SemSegLib.training as training

    asked = []

    def recording_loss(logits, targets, line_classes, margin):
        asked.append((tuple(line_classes), margin))
        return logits.sum() * 0.0

    monkeypatch.setattr(training, "line_position_loss", recording_loss)
    images, labels = traced_rings()
    config = TrainConfig(**TWO_STEPS, thin_line_classes=False)
    train(images, labels, default_classes(3), config)
    assert asked == [((2,), 0.5)] * 2
    asked.clear()
    config.line_position_weight = 0.0
    train(images, labels, default_classes(3), config)
    disk_images, disks = disk_task(2, 64)
    rng = np.random.default_rng(1)
    brushed = np.stack([simulate_strokes(ref, 2, 4, rng=rng) for ref in disks])
    config.line_position_weight = 1.0
    train(disk_images[:, None], brushed, default_classes(2), config)
    assert asked == []  # off, and no line class
