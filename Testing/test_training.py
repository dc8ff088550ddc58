import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import disk_task
from SemSegLib.calibration import log_prior_shift
from SemSegLib.classes import ClassInfo, default_classes
from SemSegLib.errors import InputError
from SemSegLib.losses import masked_cross_entropy, pseudo_targets
from SemSegLib.metrics import evaluate
from SemSegLib.patches import IGNORE
from SemSegLib.prediction import PredictConfig, predict_image, predict_probabilities
from SemSegLib.simulate import simulate_strokes
from SemSegLib.training import (
    TrainConfig,
    TrainPreview,
    correction_pixels,
    prepare_training_arrays,
    train,
    weighs_classes,
)

FAST = dict(patch_size=64, batch_size=4, base_width=8, levels=3, device="cpu")


def sparse_labels(refs, painted, strokes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros(refs.shape, np.uint16)
    for i in painted:
        labels[i] = simulate_strokes(refs[i], 2, strokes, rng=rng)
    return labels


def test_loss_ignores_unlabeled_pixels():
    logits = torch.randn(1, 2, 4, 4)
    targets = torch.full((1, 4, 4), -1)
    targets[0, 0, 0] = 1
    w = torch.ones(1, 4, 4)
    cw = torch.ones(2)
    base = masked_cross_entropy(logits, targets, w, cw)
    changed = logits.clone()
    changed[0, :, 1:, :] = torch.randn(2, 3, 4) * 100  # only unlabeled pixels change
    assert torch.isclose(base, masked_cross_entropy(changed, targets, w, cw))
    expected = torch.nn.functional.cross_entropy(logits[:, :, 0, 0], torch.tensor([1]))
    assert torch.isclose(base, expected)


def test_a_budget_weight_or_seed_out_of_range_is_refused_before_training():
    images, refs = disk_task(n=2)
    labels = sparse_labels(refs, [0])
    for bad in (dict(iterations=0), dict(iterations=-3), dict(iterations=None, seconds=-5.0),
                dict(iterations=2, correction_weight=-1.0), dict(iterations=2, seed=-1)):
        with pytest.raises(InputError, match="must be positive|must not be negative"):
            train(images[:, None], labels, default_classes(2), TrainConfig(**{**FAST, **bad}))


def test_labels_of_a_single_class_are_refused_before_training():
    images, refs = disk_task(n=2)
    labels = sparse_labels(refs, [0])
    labels[labels == 2] = 0  # the disks' strokes gone: only the background's are left, the one class defined
    with pytest.raises(InputError, match="needs at least two classes, the labels define 1 .class 1."):
        train(images[:, None], labels, default_classes(1), TrainConfig(**FAST))


def test_a_diverged_training_keeps_no_model(tmp_path, monkeypatch, capsys):
    from SemSegLib import cli, training
    from SemSegLib.errors import TrainingDiverged

    images, refs = disk_task(n=2)
    labels = sparse_labels(refs, [0])
    real = training.masked_cross_entropy
    monkeypatch.setattr(training, "masked_cross_entropy", lambda *a: real(*a) * float("nan"))
    with pytest.raises(TrainingDiverged, match="weights became NaN or infinite within 3 steps .* no model was kept"):
        train(images[:, None], labels, default_classes(2), TrainConfig(iterations=3, **FAST))
    # On the command line: exit code 1 with the message, and no model file.
    import tifffile

    for name, arrays in (("images", images), ("labels", labels)):
        (tmp_path / name).mkdir()
        for i, a in enumerate(arrays):
            tifffile.imwrite(tmp_path / name / f"img_{i}.tif", a)
    args = ["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
            "--model", str(tmp_path / "m.pt"), "--iterations", "2"]
    assert cli.main(args) == 1
    assert "semseg train: error: the training diverged" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_training_learns_from_sparse_strokes():
    images, refs = disk_task(n=4)
    labels = sparse_labels(refs, [0, 1])
    assert (labels > 0).mean() < 0.1
    res = train(images[:, None], labels, default_classes(2), TrainConfig(iterations=150, seed=0, **FAST))
    assert res.iterations == 150 and not res.cancelled
    preds = np.stack([predict_image(res.model, images[i, None]).labels for i in (2, 3)])
    m = evaluate(preds, refs[2:], ["bg", "disk"])
    assert m.mean_iou > 0.8, m.format_table()
    assert res.model.history[-1]["labeled_pixels"] == {"image_0": int((labels[0] > 0).sum()),
                                                       "image_1": int((labels[1] > 0).sum())}


def test_training_is_deterministic_with_a_seed():
    images, refs = disk_task(n=2)
    labels = sparse_labels(refs, [0])
    cfg = TrainConfig(iterations=5, seed=3, **FAST)
    a = train(images[:, None], labels, default_classes(2), cfg)
    b = train(images[:, None], labels, default_classes(2), cfg)
    assert a.losses == b.losses


def test_a_preview_shows_the_averaged_network_while_training_and_changes_nothing(monkeypatch):
    from SemSegLib import training

    images, refs = disk_task(n=3)
    labels = sparse_labels(refs, [0])
    cfg = TrainConfig(iterations=12, seed=1, **FAST)
    shown, mixes = [], []
    preview = TrainPreview(images[[1, 2], None], lambda it, labels: shown.append((it, labels)), every_seconds=0,
                           forest=False)
    monkeypatch.setattr(training, "PREVIEW_TIME_SHARE", math.inf)  # a preview after every step
    real = training.PreviewModel.labels

    def labels_with_mix(self, network, images, device, mix=None):
        mixes.append(mix)
        return real(self, network, images, device, mix)

    monkeypatch.setattr(training.PreviewModel, "labels", labels_with_mix)
    watched = train(images[:, None], labels, default_classes(2), cfg, preview=preview)
    plain = train(images[:, None], labels, default_classes(2), cfg)
    assert watched.losses == plain.losses
    assert all(torch.equal(a, b) for a, b in zip(watched.model.network.state_dict().values(),
                                                 plain.model.network.state_dict().values()))
    assert [it for it, _ in shown] == list(range(1, 13))
    assert all(lab.shape == (2, *refs[1].shape) and lab.dtype == np.uint8 and set(np.unique(lab)) <= {1, 2}
               for _, lab in shown)
    # The last preview is the returned network's map (the weight average) as a first training's map is drawn, with
    # its unsure-piece rules, before the forest that comes after the steps, and with a class-prior correction of each
    # image's own: its mean probabilities against the class mix the loss has seen (the result's: 8 images).
    seen = np.asarray(watched.model.history[-1]["training_class_pixels"])
    assert np.allclose(mixes[-1] / mixes[-1].sum(), seen / seen.sum(), atol=1e-4)
    model = _before_the_end(watched.model)
    uncorrected = np.stack([predict_image(model, images[i, None]).labels for i in (1, 2)])
    final = []
    for i in (1, 2):
        mean = predict_probabilities(model, images[i, None], prior_shift=False).mean((1, 2)).double().numpy()
        own = replace(model, log_prior_shift=log_prior_shift(mean, mixes[-1] / mixes[-1].sum()))
        final.append(predict_image(own, images[i, None]).labels)
    final = np.stack(final)
    assert (shown[-1][1] == final).mean() > 0.999 and not np.array_equal(final, uncorrected)
    assert not np.array_equal(shown[0][1], final)  # the map changed as the network learned
    # A preview waits `every_seconds` from the start: none in a shorter run.
    monkeypatch.undo()
    shown.clear()
    train(images[:, None], labels, default_classes(2), cfg, preview=TrainPreview(images[[1], None],
          lambda it, labels: shown.append(it), every_seconds=3600, forest=False))
    assert shown == []


def test_a_first_training_shows_a_forest_of_the_strokes_before_its_first_step(monkeypatch):
    from SemSegLib import training
    from SemSegLib.pixel_forest import PixelForest, smoothed

    images, refs = disk_task(n=3)
    labels = sparse_labels(refs, [0])
    cfg = TrainConfig(iterations=6, seed=1, **FAST)
    shown, said = [], []
    watched = train(images[:, None], labels, default_classes(2), cfg,
                    progress=lambda p: said.append(p.message) if p.message and not shown else None,
                    preview=TrainPreview(images[[1, 2], None], lambda it, labels: shown.append((it, labels)),
                                         every_seconds=3600))
    assert said[-1] == "a first map from a random forest of the strokes"  # while it is fitted
    plain = train(images[:, None], labels, default_classes(2), cfg)
    assert watched.losses == plain.losses  # the forest changes nothing the training computes
    assert all(torch.equal(a, b) for a, b in zip(watched.model.network.state_dict().values(),
                                                 plain.model.network.state_dict().values()))
    # Before any step, and before the first network's map is due: the forest of the strokes, seeded as the training.
    assert [it for it, _ in shown] == [0]
    model = watched.model
    forest = PixelForest.fit(images[[0], None], labels[[0]], 2, model.normalization, seed=1)
    expected = [smoothed(forest.probabilities(images[i, None], model.normalization), [], forest.smoothing)
                for i in (1, 2)]
    assert np.array_equal(shown[0][1], np.stack([(p.argmax(0) + 1).numpy() for p in expected]))
    assert shown[0][1].dtype == np.uint8 and (shown[0][1] == refs[[1, 2]]).mean() > 0.9  # a map of the disks already
    # Then the network's own maps, as without it.
    shown.clear()
    monkeypatch.setattr(training, "PREVIEW_TIME_SHARE", math.inf)  # a preview after every step
    train(images[:, None], labels, default_classes(2), cfg,
          preview=TrainPreview(images[[1, 2], None], lambda it, labels: shown.append((it, labels)), every_seconds=0))
    assert [it for it, _ in shown] == list(range(7))  # (what they draw: the test above)

    # A continued training shows no forest of the strokes: its person sees the model's prediction; its maps come from
    # its first step.
    shown.clear()
    more = TrainConfig(iterations=2, seed=1, **FAST)
    train(images[:, None], labels, default_classes(2), more, init_model=model,
          preview=TrainPreview(images[[1], None], lambda it, labels: shown.append(it), every_seconds=0))
    assert shown == [1, 2]
    # No forest in the model, none in the preview.
    shown.clear()
    train(images[:, None], labels, default_classes(2), TrainConfig(iterations=2, seed=1, forest_weight=0, **FAST),
          preview=TrainPreview(images[[1], None], lambda it, labels: shown.append(it), every_seconds=0))
    assert shown == [1, 2]


def _before_the_end(model):
    """A first training's model before what comes after its steps: no class-prior correction, no forest."""
    return replace(model, log_prior_shift=None, forest=None, forest_weight=0.0, history=model.history[:1])


def test_a_round_s_preview_is_its_model_with_its_start_s_forest(monkeypatch):
    """A correction round's preview draws the round's network as the round's model will (averaged with its start's
    networks, the start's class-prior correction, the rules), with the start's forest; the start networks' share and
    its forest's probabilities of each shown image are computed once."""
    from SemSegLib import training

    images, refs = disk_task(n=3)
    labels = sparse_labels(refs, [0])
    start = train(images[:, None], labels, default_classes(2), TrainConfig(iterations=8, seed=1, **FAST)).model
    assert start.forest is not None and start.log_prior_shift is not None
    asked, passes = [], []
    real = start.forest.probabilities
    monkeypatch.setattr(start.forest, "probabilities", lambda *a, **k: asked.append(1) or real(*a, **k))
    from SemSegLib import train_preview

    members_probabilities = train_preview.members_probabilities
    monkeypatch.setattr(train_preview, "members_probabilities",
                        lambda *a, **k: passes.append(1) or members_probabilities(*a, **k))
    monkeypatch.setattr(training, "PREVIEW_TIME_SHARE", math.inf)  # a preview after every step
    shown = []
    more = labels.copy()
    more[1] = sparse_labels(refs, [1])[1]  # corrections on another image
    cfg = TrainConfig(iterations=4, seed=2, **FAST)
    res = train(images[:, None], more, default_classes(2), cfg, init_model=start,
                preview=TrainPreview(images[[1, 2], None], lambda it, lab: shown.append((it, lab)), every_seconds=0))
    assert [it for it, _ in shown] == [1, 2, 3, 4] and len(asked) == 2  # once per shown image
    assert len(passes) == 2 + 4 * 2  # the start network's share once per shown image, the round's at every preview
    round_model = res.model
    assert round_model.earlier_rounds and round_model.forest is not start.forest
    as_shown = replace(round_model, forest=start.forest, forest_weight=start.forest_weight,
                       log_prior_shift=start.log_prior_shift)
    final = np.stack([predict_image(as_shown, images[i, None]).labels for i in (1, 2)])
    assert np.array_equal(shown[-1][1], final)
    alone = replace(round_model, log_prior_shift=start.log_prior_shift, earlier_rounds=[])  # the preview before
    assert not np.array_equal(final, np.stack([predict_probabilities(alone, images[i, None], forest=False).argmax(0) + 1
                                               for i in (1, 2)]))


def test_cancellation_stops_cleanly_and_returns_a_model():
    images, refs = disk_task(n=2)
    labels = sparse_labels(refs, [0])
    seen = []

    def progress(p):
        seen.append(p)

    res = train(images[:, None], labels, default_classes(2), TrainConfig(iterations=10_000, **FAST),
                progress=progress, should_stop=lambda: len(seen) >= 7)
    assert res.cancelled and res.iterations == 7
    last_step = [p for p in seen if not p.message][-1]
    assert last_step.total_iterations == 10_000 and last_step.remaining_seconds > 0
    assert predict_image(res.model, images[1, None]).labels.shape == refs[1].shape
    assert res.model.history[-1]["cancelled"] is True


def test_a_seconds_budget_ends_at_the_iteration_cap():
    images, refs = disk_task(n=2)
    labels = sparse_labels(refs, [0])
    seen = []
    res = train(images[:, None], labels, default_classes(2), TrainConfig(seconds=600, max_iterations=6, **FAST),
                progress=seen.append)
    assert res.iterations == 6 and not res.cancelled and res.seconds < 600
    assert [p.total_iterations for p in seen if not p.message][-1] == 6
    # A correction round has its own cap.
    round_config = TrainConfig(seconds=600, max_iterations=6, max_finetune_iterations=3, **FAST)
    assert train(images[:, None], labels, default_classes(2), round_config, init_model=res.model).iterations == 3
    # The cap is for seconds budgets; an iteration budget is what it says.
    assert train(images[:, None], labels, default_classes(2),
                 TrainConfig(iterations=8, max_iterations=6, **FAST)).iterations == 8


def test_the_progress_says_the_steps_and_seconds_a_training_has_left():
    from SemSegLib.training import _steps_and_seconds_left

    assert _steps_and_seconds_left(25, 5.0, TrainConfig(iterations=100), 750) == (100, 15.0)
    seconds = TrainConfig(seconds=60)
    assert _steps_and_seconds_left(10, 2.0, seconds, 750) == (300, 58.0)  # the clock ends it, below the cap
    total, left = _steps_and_seconds_left(100, 2.0, seconds, 750)  # 3000 steps in 60 s: the cap ends it first
    assert total == 750 and left == pytest.approx(13.0)
    assert _steps_and_seconds_left(100, 2.0, seconds, None) == (3000, 58.0)


def test_a_seconds_budget_that_ends_after_too_few_steps_says_so(monkeypatch):
    import SemSegLib.training as training

    images, refs = disk_task(n=2)
    labels = sparse_labels(refs, [0])
    classes = default_classes(2)
    # Every run the clock ends counts as too short, whatever this machine's speed.
    monkeypatch.setattr(training, "FEW_ITERATIONS", 10**6)
    short = train(images[:, None], labels, classes, TrainConfig(seconds=0.5, max_iterations=None, **FAST))
    assert not short.cancelled and f"only {short.iterations} training steps" in short.warning
    assert short.model.history[-1]["warning"] == short.warning
    # What the person chose is not warned about: an iteration budget, the cap reached, a cancelled run.
    assert train(images[:, None], labels, classes, TrainConfig(iterations=3, **FAST)).warning == ""
    assert train(images[:, None], labels, classes, TrainConfig(seconds=600, max_iterations=3, **FAST)).warning == ""
    stopped = train(images[:, None], labels, classes, TrainConfig(seconds=600, max_iterations=None, **FAST),
                    should_stop=lambda: True)
    assert stopped.cancelled and stopped.warning == ""
    # Enough steps before the clock ran out: no warning.
    monkeypatch.setattr(training, "FEW_ITERATIONS", 1)
    assert train(images[:, None], labels, classes, TrainConfig(seconds=0.5, max_iterations=None, **FAST)).warning == ""


def _unet_dtypes(model) -> list:
    """Record the dtype of the U-Net's first convolution output on every forward pass."""
    seen = []
    first_conv = next(m for m in model.network[1].modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    return seen


@pytest.mark.parametrize("amx, mixed, expected", [(True, True, torch.bfloat16), (True, False, torch.float32),
                                                  (False, True, torch.float32)])
def test_a_cpu_with_amx_trains_in_float32_and_predicts_in_bfloat16(monkeypatch, amx, mixed, expected):
    # Training in bfloat16 cost dsb2018-fluo T2 0.002; predicting in it changed nothing (bench/RESULTS.md, session 27).
    import SemSegLib.devices as devices
    import SemSegLib.model_file as model_file

    monkeypatch.setattr(devices, "cpu_has_amx_bf16", lambda: amx)
    seen = []
    create = model_file.SemSegModel.create

    def create_and_watch(*args, **kwargs):
        model = create(*args, **kwargs)
        seen.append(_unet_dtypes(model))
        return model

    monkeypatch.setattr(model_file.SemSegModel, "create", staticmethod(create_and_watch))
    images, refs = disk_task(n=2)
    labels = sparse_labels(refs, [0])
    # No predictions after the training steps: the prior estimate and the forest's teacher predict (below).
    config = TrainConfig(iterations=3, seed=0, mixed_precision=mixed, prior_correction_images=0,
                         forest_teacher_images=0, **FAST)
    model = train(images[:, None], labels, default_classes(2), config).model
    assert seen[0] and set(seen[0]) == {torch.float32}
    assert model.history[-1]["precision"] == "float32"
    watched = _unet_dtypes(model)
    predict_image(model, images[1, None], PredictConfig(device="cpu", mixed_precision=mixed))
    assert set(watched) == {expected}


def test_each_device_gets_the_reduced_precision_it_computes_fast(monkeypatch):
    import SemSegLib.devices as devices

    assert isinstance(devices.cpu_has_amx_bf16(), bool)  # this machine's answer, whatever it is
    monkeypatch.setattr(devices, "cpu_has_amx_bf16", lambda: False)
    assert devices.autocast_dtype(torch.device("cuda")) == torch.float16
    assert devices.autocast_dtype(torch.device("cpu")) is None
    assert devices.autocast_dtype(torch.device("mps")) is None
    assert "bfloat16" not in devices.describe_device(torch.device("cpu"))
    monkeypatch.setattr(devices, "cpu_has_amx_bf16", lambda: True)
    assert devices.autocast_dtype(torch.device("cpu")) == torch.bfloat16
    assert devices.autocast_dtype(torch.device("cpu"), training=True) is None
    assert devices.autocast_dtype(torch.device("cuda"), training=True) == torch.float16
    assert "bfloat16" in devices.describe_device(torch.device("cpu"))
    assert devices.autocast_dtype(torch.device("cuda"), mixed_precision=False) is None
    assert devices.autocast_dtype(torch.device("cpu"), mixed_precision=False) is None


def test_a_bfloat16_prediction_labels_the_pixels_as_float32_does(monkeypatch):
    import SemSegLib.devices as devices

    images, refs = disk_task(n=3)
    labels = sparse_labels(refs, [0, 1])
    model = train(images[:, None], labels, default_classes(2), TrainConfig(iterations=60, seed=0, **FAST)).model
    monkeypatch.setattr(devices, "cpu_has_amx_bf16", lambda: True)
    exact = predict_image(model, images[2, None], PredictConfig(device="cpu", mixed_precision=False))
    mixed = predict_image(model, images[2, None], PredictConfig(device="cpu"))
    assert (mixed.labels == exact.labels).mean() > 0.99
    assert np.abs(mixed.uncertainty - exact.uncertainty).mean() < 0.02


def test_fine_tuning_starts_from_the_model_and_weights_corrections():
    images, refs = disk_task(n=3)
    labels = sparse_labels(refs, [0], seed=1)
    first = train(images[:, None], labels, default_classes(2), TrainConfig(iterations=120, **FAST))
    corrected = labels.copy()
    corrected[1] = sparse_labels(refs, [1], seed=2)[1]
    names = [f"image_{i}" for i in range(3)]
    arrays = prepare_training_arrays(images[:, None], corrected, first.model, names, 3.0)
    weights, keep = arrays.weights, arrays.keep
    assert keep == [0, 1]
    assert np.all(weights[0][corrected[0] > 0] == 1.0)  # old strokes: normal weight
    assert np.all(weights[1][corrected[1] > 0] == 3.0)  # new strokes: corrections
    new = correction_pixels(corrected, first.model, names)  # what fine-tuning centers patches on
    assert not new[0].any() and np.array_equal(new[1], corrected[1] > 0)
    cfg = TrainConfig(iterations=3, seed=0, learning_rate=1e-6, warmup_fraction=0.0, augment=False, **FAST)
    tuned = train(images[:, None], corrected, default_classes(2), cfg, init_model=first.model)
    scratch = train(images[:, None], corrected, default_classes(2), cfg)
    assert tuned.losses[0] < scratch.losses[0]  # it did start from the trained weights
    assert len(tuned.model.history) == 2 and len(first.model.history) == 1  # the old model is untouched


def test_training_refuses_unlabeled_data_and_wrong_init():
    images, refs = disk_task(n=2)
    with pytest.raises(InputError, match="no labeled pixels"):
        train(images[:, None], np.zeros(refs.shape, np.uint16), default_classes(2), TrainConfig(iterations=1, **FAST))
    labels = sparse_labels(refs, [0])
    m = train(images[:, None], labels, default_classes(2), TrainConfig(iterations=1, **FAST)).model
    with pytest.raises(InputError, match="2 classes but the labels define 3"):
        train(images[:, None], labels, default_classes(3), TrainConfig(iterations=1, **FAST), init_model=m)
    with pytest.raises(InputError, match="3 channel"):
        train(np.repeat(images[:, None], 3, 1), labels, default_classes(2), TrainConfig(iterations=1, **FAST),
              init_model=m)
    # Other names for the model's classes would give its class k another meaning; other colors are fine.
    renamed = [ClassInfo(1, "cells", (0, 0, 0)), ClassInfo(2, "background", (0, 0, 0))]
    with pytest.raises(InputError, match="model.s classes are class 1, class 2, the labels. cells, background"):
        train(images[:, None], labels, renamed, TrainConfig(iterations=1, **FAST), init_model=m)
    recolored = [ClassInfo(c.value, c.name, (1, 2, 3)) for c in m.classes]
    assert train(images[:, None], labels, recolored, TrainConfig(iterations=1, **FAST),
                 init_model=m).model.classes == recolored


def test_images_smaller_than_a_patch_and_rgb():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 3, 40, 50), dtype=np.uint8)
    labels = np.zeros((2, 40, 50), np.uint16)
    labels[0, 5:10, 5:10], labels[0, 20:25, 30:35] = 1, 2
    res = train(images, labels, default_classes(2), TrainConfig(iterations=3, **FAST))
    pred = predict_image(res.model, images[1], PredictConfig(tile_size=32))
    assert pred.labels.shape == (40, 50) and set(np.unique(pred.labels)) <= {1, 2}


def test_fine_tuning_centers_patches_on_corrections():
    import torch
    from SemSegLib.patches import IGNORE, PatchSampler, PatchSource

    targets = torch.full((1, 256, 256), IGNORE)
    targets[0, 10:40, 10:40] = 0  # the old strokes: many pixels, top left
    targets[0, 230, 230] = 1  # one correction pixel, bottom right
    weights = (targets != IGNORE).float()
    focus = torch.zeros(1, 256, 256, dtype=torch.bool)
    focus[0, 230, 230] = True
    source = PatchSource(torch.zeros(1, 1, 256, 256), targets, weights, 2, focus)

    def share_with_correction(fraction: float) -> float:
        sampler = PatchSampler(source, torch.Generator().manual_seed(0), labeled_fraction=1.0, augment=False,
                               focus_fraction=fraction)
        _, y, _ = sampler.sample(200, 64)
        return float(((y == 1).flatten(1).any(1)).float().mean())

    # Class-balanced sampling alone already finds the lone class-1 pixel in half the patches...
    assert 0.4 < share_with_correction(0.0) < 0.6
    # ...focus sends most of the other half there too: every focused patch contains its correction.
    assert share_with_correction(0.8) > 0.85
    plain = PatchSampler(source, torch.Generator().manual_seed(0), labeled_fraction=1.0, augment=False)
    assert plain.focus_fraction == 0.0


def test_fine_tuning_focus_points_at_the_corrected_pixels_of_the_right_image(monkeypatch):
    import SemSegLib.training as training

    images, refs = disk_task(n=4)
    labels = sparse_labels(refs, [0], seed=1)
    first = train(images[:, None], labels, default_classes(2), TrainConfig(iterations=5, **FAST))
    corrected = labels.copy()
    corrected[2] = sparse_labels(refs, [2], seed=2)[2]  # corrections on a later image of the stack
    seen = {}

    class RecordingSource(training.PatchSource):
        def __post_init__(self):
            super().__post_init__()
            seen["source"] = self

    monkeypatch.setattr(training, "PatchSource", RecordingSource)
    names = [f"image_{i}" for i in range(4)]
    train(images[:, None], corrected, default_classes(2), TrainConfig(iterations=2, correction_focus=0.5, **FAST),
          init_model=first.model, names=names)
    source = seen["source"]
    focus = source.focus_positions
    assert len(focus) == int((corrected[2] > 0).sum())
    image_of = focus // source.pixels_per_image
    assert bool((source.images.shape[0] == 4) and (image_of == 2).all())  # the whole stack, image 2 only
    assert bool((source.targets.reshape(-1)[focus] >= 0).all())  # every focus pixel is a labeled pixel


def test_a_correction_round_samples_fewer_stroke_centered_patches(monkeypatch):
    import SemSegLib.training as training

    images, refs = disk_task(n=2)
    labels = sparse_labels(refs, [0], seed=1)
    fractions = []

    class RecordingSampler(training.PatchSampler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            fractions.append(self.labeled_fraction)

    monkeypatch.setattr(training, "PatchSampler", RecordingSampler)
    config = TrainConfig(iterations=2, labeled_fraction=0.7, finetune_labeled_fraction=0.2, **FAST)
    first = train(images[:, None], labels, default_classes(2), config)
    train(images[:, None], labels, default_classes(2), config, init_model=first.model)
    assert fractions == [0.7, 0.2]


class FixedTeacher(torch.nn.Module):
    """A 'network' whose logits are given: class 0 very sure on the left, class 1 only 60% sure on the right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        logits = torch.zeros(n, 2, h, w)
        logits[:, 0, :, : w // 2] = 5.0  # p(class 0) = 0.993
        logits[:, 1, :, w // 2:] = torch.linspace(0.2, 0.6, h).view(1, h, 1)  # p(class 1) = 0.55-0.65
        return logits


def test_a_class_the_teacher_is_never_sure_of_keeps_pseudo_labels_with_a_class_quantile():
    x = torch.zeros(1, 1, 8, 8)
    unlabeled = torch.full((1, 8, 8), IGNORE)
    plain = pseudo_targets(FixedTeacher(), x, unlabeled, 0.9)
    assert (plain == 1).sum() == 0 and (plain[..., :4] == 0).all()
    adaptive = pseudo_targets(FixedTeacher(), x, unlabeled, 0.9, class_quantile=0.5)
    assert (adaptive[..., :4] == 0).all()  # the sure class is unchanged
    right = adaptive[..., 4:]
    assert (right == 1).sum() == 16 and (right[..., 4:, :] == 1).all()  # the surer half of the unsure class
    painted = unlabeled.clone()
    painted[..., 0] = 0
    assert (pseudo_targets(FixedTeacher(), x, painted, 0.9, class_quantile=0.5)[..., 0] == IGNORE).all()


def test_only_a_correction_round_lowers_the_threshold_of_unsure_classes(monkeypatch):
    import SemSegLib.training as training

    images, refs = disk_task(n=2)
    labels = sparse_labels(refs, [0], seed=1)
    quantiles = []

    def recording_pseudo_targets(teacher, x, labeled, threshold, class_quantile=0.0):
        quantiles.append(class_quantile)
        return pseudo_targets(teacher, x, labeled, threshold, class_quantile)

    monkeypatch.setattr(training, "pseudo_targets", recording_pseudo_targets)
    config = TrainConfig(iterations=3, pseudo_label_min_steps=1, pseudo_label_start=0.0,
                         finetune_pseudo_label_class_quantile=0.4, **FAST)
    first = train(images[:, None], labels, default_classes(2), config)
    assert quantiles and set(quantiles) == {0.0}
    quantiles.clear()
    train(images[:, None], labels, default_classes(2), config, init_model=first.model)
    assert quantiles and set(quantiles) == {0.4}


def test_the_strong_view_blurs_and_scales_contrast_about_the_mean_only():
    from SemSegLib.patches import strong_view

    flat = torch.full((3, 1, 32, 32), 0.7)
    assert torch.allclose(strong_view(flat, torch.Generator().manual_seed(0)), flat)  # no brightness shift
    step = torch.zeros(40, 1, 32, 32)
    step[..., 16:] = 1.0  # a vertical edge between 0 and 1; the patch mean is 0.5
    before = step.clone()
    out = strong_view(step, torch.Generator().manual_seed(0))
    assert torch.equal(step, before)  # the input batch is left alone
    assert torch.equal(out, strong_view(step, torch.Generator().manual_seed(0)))  # deterministic with a seed
    contrast = (0.5 - out[:, 0, 0, 0]) / 0.5  # far from the edge only the contrast acts
    assert contrast.min() >= 0.6 - 1e-5 and contrast.max() <= 1.4 + 1e-5 and contrast.max() - contrast.min() > 0.3
    sharp_value = 0.5 - 0.5 * contrast  # the last dark column without blur
    blurred = out[:, 0, 0, 15] > sharp_value + 1e-3  # the bright side bled into it
    assert 0 < int(blurred.sum()) < len(out)  # some patches blurred across the edge, some left sharp


def test_the_student_sees_the_strong_view_of_the_pseudo_labeled_patches_only(monkeypatch):
    import SemSegLib.training as training
    from SemSegLib.patches import strong_view

    images, refs = disk_task(n=2)
    labels = sparse_labels(refs, [0], seed=1)
    views = []

    def recording_strong_view(x, generator):
        views.append(x.shape[0])
        return strong_view(x, generator)

    monkeypatch.setattr(training, "strong_view", recording_strong_view)
    config = TrainConfig(iterations=3, pseudo_label_min_steps=0, pseudo_label_start=0.0, **FAST)
    train(images[:, None], labels, default_classes(2), config)
    assert views == [FAST["batch_size"] // 2] * 3  # every step, the unlabeled half-batch, never the strokes
    views.clear()
    config.pseudo_label_strong_view = False
    train(images[:, None], labels, default_classes(2), config)
    assert views == []


def test_elastic_warp_moves_labels_with_the_image_and_ignores_what_comes_from_outside():
    from SemSegLib.patches import IGNORE, PatchSampler, PatchSource

    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    y = (((yy // 24) + (xx // 24)) % 2).long()[None].repeat(8, 1, 1)  # a checkerboard of 24-px squares
    x = y[:, None].float() * 2 - 1
    w = torch.ones(8, 96, 96)
    source = PatchSource(torch.zeros(1, 1, 96, 96), torch.zeros(1, 96, 96, dtype=torch.long),
                         torch.ones(1, 96, 96), 2)

    def warped(probability: float, seed: int = 0):
        sampler = PatchSampler(source, torch.Generator().manual_seed(seed), elastic_probability=probability)
        return sampler._warp(x.clone(), y.clone(), w.clone())

    xw, yw, ww = warped(1.0)
    inside = yw != IGNORE
    assert (~inside).any() and torch.equal(ww == 0, ~inside)  # rotated corners come from outside the patch
    assert not torch.equal(yw[inside], y[inside])  # the squares moved...
    agree = ((xw[:, 0] > 0).long() == yw)[inside].float().mean()
    assert agree > 0.97  # ...and the labels with them (only pixels on a square's edge may differ)
    assert all(torch.equal(a, b) for a, b in zip(warped(1.0), (xw, yw, ww)))  # the generator decides
    assert all(torch.equal(a, b) for a, b in zip(warped(0.0), (x, y, w)))
    assert PatchSampler(source, torch.Generator(), augment=False, elastic_probability=1.0).elastic_probability == 0


def test_a_scaled_patch_keeps_a_one_pixel_line_label_on_the_image_line():
    from SemSegLib.patches import PatchSampler, PatchSource

    target = torch.zeros(1, 128, 128, dtype=torch.long)
    target[0, :, 5::9] = 1  # vertical 1-pixel lines, drawn in the image as well
    source = PatchSource(target[:, None].float(), target, torch.ones(1, 128, 128), 2)
    sampler = PatchSampler(source, torch.Generator().manual_seed(0), labeled_fraction=1.0, max_scale=1.25)
    on_line = []
    for _ in range(20):  # scales other than 1, then flips and rotations (the lines turn horizontal too)
        x, y, _ = sampler.sample(4, 64)
        image = torch.nn.functional.pad(x[:, 0], (1, 1, 1, 1), value=-9.0)
        labels = torch.nn.functional.pad(y, (1, 1, 1, 1), value=-1)
        brightest = torch.ones_like(y, dtype=torch.bool)
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):  # at least as bright as each 4-neighbour off the line
            neighbour, its_label = image[:, dy:dy + 64, dx:dx + 64], labels[:, dy:dy + 64, dx:dx + 64]
            brightest &= (its_label != 0) | (x[:, 0] >= neighbour - 1e-6)
        on_line.append(brightest[y == 1].float().mean())
    # The label sits on the image's line, not half a pixel beside it (the old resampling: 61%).
    assert float(torch.stack(on_line).mean()) > 0.99


def test_the_loss_weighs_the_classes_only_when_the_labels_are_dense():
    _, refs = disk_task(n=3, size=96)
    auto = TrainConfig()
    strokes = sparse_labels(refs, [0, 1])
    assert not weighs_classes(strokes, auto)
    assert not weighs_classes(np.zeros_like(strokes), auto)
    wide = strokes.copy()
    wide[0, :30] = refs[0, :30]  # a third of an image painted: still strokes
    assert not weighs_classes(wide, auto)
    dense = strokes.copy()
    dense[2] = refs[2]  # one fully labeled image among two with strokes: most of what the loss sees
    assert weighs_classes(dense, auto)
    assert not weighs_classes(dense, TrainConfig(class_balance=False))
    assert weighs_classes(strokes, TrainConfig(class_balance=True))


def test_a_densely_painted_image_trains_with_class_weights_and_strokes_without():
    images, refs = disk_task(n=2, size=96)
    strokes = sparse_labels(refs, [0])
    plain = train(images[:, None], strokes, default_classes(2), TrainConfig(iterations=2, **FAST)).model
    assert plain.history[-1]["class_weights"] is None
    dense = np.zeros_like(strokes)
    dense[0][refs[0] == 1] = 1  # all the background painted, and a few disk pixels
    rows, columns = np.nonzero(refs[0] == 2)
    dense[0, rows[:20], columns[:20]] = 2
    weighted = train(images[:, None], dense, default_classes(2), TrainConfig(iterations=2, **FAST)).model
    weights = weighted.history[-1]["class_weights"]
    assert weights is not None and weights[1] > 10 * weights[0]
    # The class mix the loss saw (which the class-prior correction undoes) is the weighted one: the same
    # patches as without weights (two steps, no pseudo-labels yet), each class's pixels times its weight (the
    # history rounds the weights).
    unweighted = train(images[:, None], dense, default_classes(2),
                       TrainConfig(iterations=2, class_balance=False, **FAST)).model
    assert unweighted.history[-1]["class_weights"] is None
    assert np.allclose(weighted.history[-1]["training_class_pixels"],
                       np.asarray(unweighted.history[-1]["training_class_pixels"]) * weights, rtol=0.02)


def test_a_dense_round_estimates_its_prior_correction_from_the_mix_its_weighted_loss_saw():
    import copy

    from SemSegLib.calibration import carried_log_prior_shift, estimate_log_prior_shift

    images, refs = disk_task(n=3, size=96)
    strokes = sparse_labels(refs, [0, 1])
    config = TrainConfig(iterations=3, **FAST)
    first = train(images[:, None], strokes, default_classes(2), config).model
    accepted = strokes.copy()
    accepted[0] = np.where(strokes[0] > 0, strokes[0], refs[0])  # a slice's prediction accepted, strokes kept
    rounded = train(images[:, None], accepted, default_classes(2), config, init_model=first).model
    assert rounded.history[-1]["class_weights"] is not None
    alone = copy.deepcopy(rounded)
    alone.log_prior_shift, alone.earlier_rounds = None, []
    mix = np.asarray(rounded.history[-1]["training_class_pixels"])
    expected = estimate_log_prior_shift(alone, images[:, None], accepted, config.prior_correction_images,
                                        torch.device("cpu"), training_mix=mix, mixed_precision=config.mixed_precision)
    assert np.allclose(rounded.log_prior_shift, expected, atol=1e-3)
    # Not the correction carried from the first model, which models the strokes' sampling.
    carried = carried_log_prior_shift(first, rounded.history)
    assert carried is not None and not np.allclose(rounded.log_prior_shift, carried, atol=0.05)


def test_a_stack_of_images_a_few_pixels_high_trains_with_the_default_network():
    """Line scans or thin crops: patches are padded to fit, and the estimates after the steps predict images far
    smaller than a tile (3 x 200 crashed there, in the network's reflection padding)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 1, 3, 200)).astype(np.uint8)
    labels = np.zeros((3, 3, 200), np.uint8)
    labels[0, 0, :20], labels[0, 2, -20:] = 1, 2
    res = train(images, labels, default_classes(2), TrainConfig(iterations=3, device="cpu", patch_size=64))
    assert res.model.network_config.size_multiple >= 8  # the default depth: a tile more than twice the height
    assert predict_image(res.model, images[1]).labels.shape == (3, 200)


def test_patches_cut_from_raw_images_are_the_normalized_images_patches_to_the_bit():
    from SemSegLib.normalization import normalize_image, percentile_range
    from SemSegLib.patches import PatchSampler, PatchSource

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 4000, (3, 2, 80, 100)).astype(np.uint16)  # 16-bit, 2 channels of their own ranges
    raw[:, 1] //= 7
    targets = torch.from_numpy(rng.integers(-1, 2, (3, 80, 100)).astype(np.int8))
    ranges = [percentile_range(image) for image in raw]
    low, scale = np.stack([r[0] for r in ranges]), np.stack([r[1] for r in ranges])
    normalized = torch.from_numpy(np.stack([normalize_image(image) for image in raw]))
    batches = []
    for source in (PatchSource(normalized, targets, None, 2), PatchSource(raw, targets, None, 2, None, low, scale)):
        sampler = PatchSampler(source, torch.Generator().manual_seed(3), max_scale=1.25)
        batches.append([sampler.sample(4, 48) for _ in range(3)] + [sampler.sample(2, 48, anywhere=True)])
    for (x0, y0, w0), (x1, y1, w1) in zip(*batches):
        assert x1.dtype == torch.float32 and y1.dtype == torch.int64 and w1.dtype == torch.float32
        assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(w0, w1)
        assert torch.equal(w1, (y1 != IGNORE).float())  # no weights given: 1 on every labeled pixel
    assert not torch.equal(batches[1][0][0], batches[1][1][0])  # the draws differ from batch to batch


def test_training_arrays_keep_the_stack_as_it_came_and_weights_only_for_corrections():
    images, refs = disk_task(n=4)
    images = images[:, None]
    labels = sparse_labels(refs, [0, 2])
    first = train(images, labels, default_classes(2), TrainConfig(iterations=4, **FAST))
    whole = prepare_training_arrays(images, labels, first.model, None, 1.0, all_images=True)
    assert whole.images is images  # pseudo-labels need every image: the caller's array, no normalized copy
    assert whole.targets.dtype == np.int8 and whole.weights is None and whole.keep == [0, 2]
    assert np.array_equal(whole.targets, labels.astype(np.int64) - 1)
    painted = prepare_training_arrays(images, labels, first.model, None, 1.0)
    assert np.array_equal(painted.images, images[[0, 2]]) and np.array_equal(painted.low, whole.low[[0, 2]])
    corrected = labels.copy()
    corrected[1] = sparse_labels(refs, [1], seed=2)[1]
    names = [f"image_{i}" for i in range(4)]
    for weight, dtype in ((2.0, np.float16), (1.3, np.float32)):  # float16 only where it holds the weight exactly
        arrays = prepare_training_arrays(images, corrected, first.model, names, weight)
        assert arrays.weights.dtype == dtype and arrays.keep == [0, 1, 2]
        assert np.all(arrays.weights[1][corrected[1] > 0] == dtype(weight))  # the new strokes
        assert np.all(arrays.weights[0][corrected[0] > 0] == 1)  # the old ones
        assert np.all(arrays.weights[corrected[[0, 1, 2]] == 0] == 0)


def test_the_first_map_s_forest_reads_a_few_painted_images_spread_over_the_stack(monkeypatch):
    from SemSegLib import train_preview
    from SemSegLib.model_file import SemSegModel

    images, refs = disk_task(n=10, size=48)
    painted = [0, 1, 2, 3, 5, 6, 7, 9]
    labels = sparse_labels(refs, painted, strokes=2)
    fitted = []
    real = train_preview.PixelForest.fit
    monkeypatch.setattr(train_preview.PixelForest, "fit",
                        lambda stack, lab, *args: fitted.append(lab) or real(stack, lab, *args))
    model = SemSegModel.create(1, default_classes(2))
    maps = train_preview.forest_labels(model, images[[4, 8], None], images[:, None], labels, [], seed=0)
    assert maps.shape == (2, 48, 48) and set(np.unique(maps)) <= {1, 2}
    # A first training on many labeled slices does not wait for all of their filters: the first, the last, and
    # evenly between them, up to FOREST_IMAGES.
    assert train_preview.FOREST_IMAGES == 6
    used = [next(i for i in range(10) if np.array_equal(lab, labels[i])) for lab in fitted[0]]
    assert used == [0, 1, 3, 5, 7, 9]
    assert train_preview.forest_labels(model, images[[4], None], images[:, None], np.zeros_like(labels), [], 0) is None
