import numpy as np
from SemSegLib.suggest import rank_by_uncertainty, uncertain_regions


def test_regions_rank_by_total_uncertainty():
    u = np.zeros((100, 100), np.float32)
    u[10:20, 10:20] = 0.9  # small, very uncertain
    u[50:90, 50:90] = 0.7  # large, fairly uncertain: more total uncertainty
    regions = uncertain_regions(u, threshold=0.5, top=5)
    assert len(regions) == 2
    assert 50 <= regions[0].row < 90 and 50 <= regions[0].column < 90 and regions[0].area > regions[1].area
    assert regions[1].mean_uncertainty > regions[0].mean_uncertainty
    assert uncertain_regions(np.zeros((20, 20)), top=3) == []


def test_rank_by_uncertainty():
    assert rank_by_uncertainty({0: 0.1, 3: 0.5, 7: 0.3}, 2) == [3, 7]
