import numpy as np
import pytest
from SemSegLib.suggest import rank_by_uncertainty, uncertain_regions


def test_regions_rank_by_how_unsure_the_model_is_there_not_by_size():
    u = np.zeros((100, 100), np.float32)
    u[10:20, 10:20] = 0.9  # small, very uncertain: first
    u[50:90, 50:90] = 0.7  # large, fairly uncertain: more total uncertainty, but second
    u[10:30, 60:80] = 0.7  # as unsure as the large one, smaller: after it
    u[95:97, 2:4] = 1.0  # too small for a brush stroke even after smoothing: not a region
    regions = uncertain_regions(u, threshold=0.5, top=5)
    assert len(regions) == 3
    assert 10 <= regions[0].row < 20 and 10 <= regions[0].column < 20
    assert 50 <= regions[1].row < 90 and 50 <= regions[1].column < 90 and regions[1].area > regions[2].area
    assert regions[0].mean_uncertainty > regions[1].mean_uncertainty
    assert regions[1].mean_uncertainty == pytest.approx(regions[2].mean_uncertainty, abs=0.02)
    assert uncertain_regions(u, threshold=0.5, top=1) == regions[:1]
    assert uncertain_regions(np.zeros((20, 20)), top=3) == []


def test_rank_by_uncertainty():
    assert rank_by_uncertainty({0: 0.1, 3: 0.5, 7: 0.3}, 2, spread=False) == [3, 7]


def test_spread_ranking_takes_the_most_uncertain_image_of_each_part_of_the_stack():
    # Slices 0-5 are the most uncertain of the stack; 6-11 a little less so.
    means = {i: 0.5 - 0.01 * i if i < 6 else 0.3 - 0.01 * abs(i - 9) for i in range(12)}
    assert rank_by_uncertainty(means, 3, spread=False) == [0, 1, 2]  # all from the first part
    # Parts 0-3, 4-7, 8-11: each gives its most uncertain slice, the most uncertain first.
    assert rank_by_uncertainty(means, 3) == [0, 4, 9]  # spread is the default
    assert rank_by_uncertainty({5: 0.2, 9: 0.4}, 3, spread=True) == [9, 5]  # fewer images than parts
    assert rank_by_uncertainty(means, 0, spread=True) == []
