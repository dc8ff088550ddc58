import numpy as np
import pytest
import torch
from SemSegLib.classes import default_classes
from SemSegLib.errors import InputError
from SemSegLib.model_file import SemSegModel
from SemSegLib.network import NetworkConfig
from SemSegLib.prediction import PredictConfig, normalized_entropy, predict_image, predict_probabilities


class PixelwiseNet(torch.nn.Module):
    """A network whose output at a pixel depends only on that pixel: tiling cannot change it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 1)

    def forward(self, x):
        return self.conv(x) * 3


def model_with(network, classes=3, in_channels=1):
    config = NetworkConfig(in_channels=in_channels, num_classes=classes, base_width=8, levels=3)
    return SemSegModel(network, config, default_classes(classes))


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_tiled_equals_whole_image_for_a_pixelwise_network(blend):
    torch.manual_seed(0)
    m = model_with(PixelwiseNet())
    image = np.random.default_rng(0).integers(0, 4000, (1, 150, 230)).astype(np.uint16)
    whole = predict_probabilities(m, image, PredictConfig(tile_size=512, device="cpu"))
    tiled = predict_probabilities(m, image, PredictConfig(tile_size=48, overlap=0.25, blend=blend, device="cpu"))
    assert whole.shape == (3, 150, 230)
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_tiled_unet_agrees_with_whole_image():
    torch.manual_seed(0)
    m = SemSegModel.create(1, default_classes(3), base_width=8, levels=3)
    m.network.eval()
    image = np.random.default_rng(1).normal(100, 20, (1, 200, 200)).astype(np.float32)
    whole = predict_image(m, image, PredictConfig(tile_size=256, device="cpu"), with_probabilities=True)
    tiled = predict_image(m, image, PredictConfig(tile_size=96, overlap=0.5, device="cpu"), with_probabilities=True)
    assert np.abs(whole.probabilities - tiled.probabilities).mean() < 0.01
    assert (whole.labels == tiled.labels).mean() > 0.95


@pytest.mark.parametrize("shape", [(3, 200), (200, 1), (1, 1), (4, 6)])
def test_an_image_a_few_pixels_high_is_predicted(shape):
    """A tile larger than the image is filled by reflection, which torch cannot do past the image's own size (3 x
    200 crashed a training after its steps); such an image is filled with its edge. A pixelwise network says so:
    every pixel gets what it would get in any image."""
    from SemSegLib.normalization import normalize_image

    m = model_with(PixelwiseNet())
    image = np.random.default_rng(0).integers(0, 255, (1, *shape)).astype(np.uint8)
    with torch.no_grad():
        direct = torch.softmax(m.network(torch.from_numpy(normalize_image(image, m.normalization))[None]), 1)[0]
    for tta in (False, True):
        prob = predict_probabilities(m, image, PredictConfig(tta=tta, device="cpu"))
        assert prob.shape == (3, *shape) and torch.allclose(prob, direct, atol=1e-5)
    p = predict_image(model_with(SemSegModel.create(1, default_classes(3), base_width=8, levels=3).network), image,
                      PredictConfig(device="cpu"))
    assert p.labels.shape == p.uncertainty.shape == shape


def test_outputs_and_uncertainty_range():
    m = model_with(PixelwiseNet())
    image = np.random.default_rng(0).integers(0, 255, (1, 64, 64)).astype(np.uint8)
    p = predict_image(m, image, PredictConfig(tta=True, device="cpu"), with_probabilities=True)
    assert p.labels.dtype == np.uint8 and set(np.unique(p.labels)) <= {1, 2, 3}
    assert p.probabilities.shape == (3, 64, 64) and np.allclose(p.probabilities.sum(0), 1, atol=1e-5)
    assert p.uncertainty.min() >= 0 and p.uncertainty.max() <= 1
    assert np.array_equal(p.labels, p.probabilities.argmax(0) + 1)
    uniform = torch.full((4, 2, 2), 0.25)
    assert torch.allclose(normalized_entropy(uniform), torch.ones(2, 2))
    certain = torch.zeros(4, 2, 2)
    certain[1] = 1
    assert torch.allclose(normalized_entropy(certain), torch.zeros(2, 2))


def test_model_file_round_trip(tmp_path):
    torch.manual_seed(0)
    m = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    m.history.append({"round": 1, "iterations": 5})
    labels = np.zeros((2, 16, 16), np.uint16)
    labels[1, 3, 4] = 2
    m.set_labeled_masks(["a", "b"], labels)
    m.network.eval()
    m.save(tmp_path / "m.pt")
    loaded = SemSegModel.load(tmp_path / "m.pt")
    assert loaded.classes == m.classes and loaded.network_config == m.network_config
    assert loaded.history == m.history
    mask = loaded.previous_labeled_mask("b", (16, 16))
    assert mask.sum() == 1 and mask[3, 4]
    assert not loaded.previous_labeled_mask("a", (16, 16)).any()
    assert loaded.previous_labeled_mask("b", (8, 8)) is None  # another stack: unknown
    image = np.random.default_rng(0).normal(0, 1, (1, 40, 40)).astype(np.float32)
    a = predict_image(m, image, PredictConfig(device="cpu"), with_probabilities=True).probabilities
    b = predict_image(loaded, image, PredictConfig(device="cpu"), with_probabilities=True).probabilities
    assert np.allclose(a, b, atol=1e-6)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["format_version"] == 1 and raw["network"]["in_channels"] == 1


def test_a_model_is_described_as_far_as_its_history_recorded():
    from SemSegLib.model_info import info_lines, info_summary, model_info

    m = SemSegModel.create(3, default_classes(2), base_width=8, levels=3)
    info = model_info(m)
    assert info["channels"] == 3 and info["trainings"] == [] and info["trained_image_shape"] is None
    assert info["network"]["parameters"] == sum(p.numel() for p in m.network.parameters())
    assert info["prediction"] == {"network_weights": [1.0], "class_prior_correction": False, "forest_weight": 0.0,
                                  "forest_samples": 0, "line_classes": []}
    assert info_summary(info) == "2 classes (class 1, class 2), 3 channels; untrained"
    assert info_lines(info)[-1] == "training   none recorded (an untrained network)"
    # A file from an early SemSeg recorded little of its training: what it has is shown, the rest left out.
    m.history.append({"round": 1, "iterations": 5})
    m.line_classes = [1]
    info = model_info(m)
    assert info["classes"][1]["line"] and not info["classes"][0]["line"]
    assert info["trainings"][0]["labeled_pixels"] == 0 and info["trainings"][0]["finished"] is None
    assert info_lines(info)[-1].startswith("training 1 date not recorded: 5 iterations")
    assert "class 2 thinned to 1-pixel lines" in info_lines(info)[3]


def test_model_errors(tmp_path):
    m = SemSegModel.create(1, default_classes(2), base_width=8, levels=3)
    with pytest.raises(InputError, match="3 channel"):
        predict_image(m, np.zeros((3, 32, 32), np.uint8))
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="bad.pt: not a readable SemSeg model file: it is not a PyTorch file"):
        SemSegModel.load(tmp_path / "bad.pt")
    # What torch.load says is not repeated: it advises weights_only=False, which would let the file run code.
    torch.save(torch.nn.Linear(2, 2), tmp_path / "network.pt")
    with pytest.raises(InputError, match="network.pt: .* it holds Python objects") as refused:
        SemSegModel.load(tmp_path / "network.pt")
    assert "weights_only" not in str(refused.value)
    m.save(tmp_path / "m.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "m.pt").read_bytes()[:5000])
    with pytest.raises(InputError, match="cut.pt: .* it is damaged or incomplete"):
        SemSegModel.load(tmp_path / "cut.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(InputError, match="empty.pt: .* it is empty"):
        SemSegModel.load(tmp_path / "empty.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a SemSeg model"):
        SemSegModel.load(tmp_path / "other.pt")
    with pytest.raises(InputError, match="no such model"):
        SemSegModel.load(tmp_path / "missing.pt")


def test_a_large_image_goes_through_the_network_a_few_tiles_at_a_time():
    class RecordingNet(PixelwiseNet):
        largest = 0

        def forward(self, x):
            RecordingNet.largest = max(RecordingNet.largest, x.numel())
            return super().forward(x)

    m = model_with(RecordingNet())
    # Tiles of 512 (1024 by default) so that an image 16 times a tile's size stays small enough for the suite: at
    # 4096 x 4096 this test took 17 s alone and 157 s in a full run (this machine's fresh memory).
    image = np.random.default_rng(0).integers(0, 255, (1, 2048, 2048)).astype(np.uint8)
    config = PredictConfig(device="cpu", tile_size=512)
    p = predict_image(m, image, config)
    assert p.labels.shape == (2048, 2048) and p.probabilities is None
    # Network memory scales with the tiles it is given at once, never with the image.
    assert RecordingNet.largest <= config.tile_batch * config.tile_size ** 2 < image.size
