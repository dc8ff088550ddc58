"""The fixed filter bank computes the Gaussian-derivative features it names, at every scale."""

import numpy as np
import pytest
import torch
from SemSegLib.filters import FEATURES_PER_SCALE, FilterBank
from SemSegLib.network import NetworkConfig


def test_the_bank_measures_smoothing_gradient_and_hessian_of_a_known_surface():
    # f = a y^2 + b x + c x y: at the center the gradient is (0, b), the Hessian [[2a, c], [c, 0]], and a
    # Gaussian of sigma adds a sigma^2 to the smoothed value. Responses are scale-normalized (sigma, sigma^2);
    # 10%: sampled kernels cut at 3 sigma (the second derivative runs ~6% low). A response in the wrong slot
    # is off by a factor of 2 or more.
    a, b, c = 0.01, 0.5, 0.004
    n = 65
    y, x = np.mgrid[:n, :n].astype(np.float64) - n // 2
    image = torch.tensor(a * y**2 + b * x + c * x * y, dtype=torch.float32)[None, None]
    bank = FilterBank(1, (1.0, 2.0, 4.0))
    out = bank(image)[0, :, n // 2, n // 2].double().numpy()
    assert out.shape == (1 + FEATURES_PER_SCALE * 3,) and out[0] == 0
    hessian = np.array([[2 * a, c], [c, 0.0]])
    for i, s in enumerate(bank.sigmas):
        smooth, grad, trace, larger, smaller = out[1 + FEATURES_PER_SCALE * i:1 + FEATURES_PER_SCALE * (i + 1)]
        eigen = np.linalg.eigvalsh(hessian) * s * s
        assert smooth == pytest.approx(a * s * s, rel=0.1)
        assert grad == pytest.approx(b * s, rel=0.1)
        assert trace == pytest.approx(2 * a * s * s, rel=0.1)
        assert [larger, smaller] == pytest.approx([eigen[1], eigen[0]], rel=0.1, abs=1e-5)


def test_the_banks_scales_travel_with_the_network_description():
    config = NetworkConfig(in_channels=2, num_classes=3, input_filters=True, filter_sigmas=(1.0, 3.0))
    again = NetworkConfig.from_dict(dict(config.to_dict(), filter_sigmas=[1.0, 3.0]))  # as JSON gives it back
    assert again == config and FilterBank(2, again.filter_sigmas).out_channels == 2 * (1 + 2 * FEATURES_PER_SCALE)
    assert NetworkConfig.from_dict({"input_filters": True}).filter_sigmas == (1.0, 2.0, 4.0)  # older files


def test_the_bank_computes_in_float32_inside_a_bfloat16_network():
    # The Hessian's eigenvalues are differences of nearly equal responses, which a 16-bit float rounds coarsely.
    image = torch.rand(1, 1, 48, 48) * 0.01 + torch.linspace(0, 1, 48)  # a faint texture on a ramp
    bank = FilterBank(1, (1.0, 2.0))
    exact = bank(image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = bank(image)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, exact)
