import numpy as np
import pytest
from SemSegLib.suggest import (
    image_descriptors,
    image_uncertainty,
    look_alike_groups,
    rank_by_uncertainty,
    spread_groups,
    stack_is_ordered,
    uncertain_regions,
)


def test_regions_in_mean_order_rank_by_how_unsure_the_model_is_there_not_by_size():
    u = np.zeros((100, 100), np.float32)
    u[10:20, 10:20] = 0.9  # small, very uncertain: first
    u[50:90, 50:90] = 0.7  # large, fairly uncertain: more total uncertainty, but second
    u[10:30, 60:80] = 0.7  # as unsure as the large one, smaller: after it
    u[95:97, 2:4] = 1.0  # too small for a brush stroke even after smoothing: not a region
    regions = uncertain_regions(u, threshold=0.5, top=5, order="mean")
    assert len(regions) == 3
    assert 10 <= regions[0].row < 20 and 10 <= regions[0].column < 20
    assert 50 <= regions[1].row < 90 and 50 <= regions[1].column < 90 and regions[1].area > regions[2].area
    assert regions[0].mean_uncertainty > regions[1].mean_uncertainty
    assert regions[1].mean_uncertainty == pytest.approx(regions[2].mean_uncertainty, abs=0.02)
    assert uncertain_regions(u, threshold=0.5, top=1, order="mean") == regions[:1]
    assert uncertain_regions(np.zeros((20, 20)), top=3) == []


def test_regions_by_the_uncertainty_they_hold_put_a_large_unsure_area_before_a_small_very_unsure_spot():
    u = np.zeros((100, 100), np.float32)
    u[10:20, 10:20] = 0.9  # small, very uncertain
    u[50:90, 50:90] = 0.7  # large, fairly uncertain: holds the most uncertainty
    u[10:30, 60:80] = 0.7  # holds more than the small spot
    regions = uncertain_regions(u, threshold=0.5, top=5)  # the default order
    assert regions == uncertain_regions(u, threshold=0.5, top=5, order="total")
    assert [(r.row, r.column) for r in regions] == [(70, 70), (20, 70), (14, 14)]  # centroids, x.5 rounded to even
    totals = [r.area * r.mean_uncertainty for r in regions]
    assert totals == sorted(totals, reverse=True)
    assert {r.bbox for r in regions} == {r.bbox for r in uncertain_regions(u, threshold=0.5, top=5, order="mean")}
    with pytest.raises(ValueError, match="order"):
        uncertain_regions(u, order="size")


def test_no_region_where_the_person_already_painted():
    u = np.zeros((100, 100), np.float32)
    u[10:20, 10:20] = 0.9
    u[50:70, 50:70] = 0.7
    painted = np.zeros((100, 100), bool)
    painted[13:17, 13:17] = True  # a stroke in the middle of the first spot: its margin covers the rest
    regions = uncertain_regions(u, threshold=0.5, top=5, painted=painted)
    assert len(regions) == 1 and 50 <= regions[0].row < 70 and 50 <= regions[0].column < 70
    # Without the margin the spot's rim is still a region; paint elsewhere changes nothing.
    assert len(uncertain_regions(u, threshold=0.5, top=5, painted=painted, painted_margin=0)) == 2
    far = np.zeros((100, 100), bool)
    far[90:95, 5:30] = True
    assert uncertain_regions(u, threshold=0.5, top=5, painted=far) == uncertain_regions(u, threshold=0.5, top=5)


def test_an_image_counts_as_less_unsure_near_what_the_person_painted():
    u = np.full((100, 100), 0.4, np.float32)
    assert image_uncertainty(u) == pytest.approx(0.4)
    assert image_uncertainty(u, np.zeros((100, 100), bool)) == pytest.approx(0.4)
    painted = np.zeros((100, 100), bool)
    painted[50, 20:80] = True  # one stroke across the middle
    rows, columns = np.mgrid[:100, :100]
    reached = (rows - 50) ** 2 + (columns - np.clip(columns, 20, 79)) ** 2 <= 10**2  # within 10 px of the stroke
    assert image_uncertainty(u, painted, reach=10) == pytest.approx(0.4 * (1 - reached.mean()), abs=1e-6)
    assert image_uncertainty(u, painted, reach=10) > image_uncertainty(u, painted, reach=20)
    # Two images alike: the one the person has painted on is no longer the first suggestion.
    other = u.copy()
    other[0, 0] = 0.39
    means = {0: image_uncertainty(u, painted), 1: image_uncertainty(other)}
    assert rank_by_uncertainty(means, 1) == [1]
    assert rank_by_uncertainty({0: image_uncertainty(u), 1: image_uncertainty(other)}, 1) == [0]


def test_rank_by_uncertainty():
    assert rank_by_uncertainty({0: 0.1, 3: 0.5, 7: 0.3}, 2) == [3, 7]
    assert rank_by_uncertainty({0: 0.1, 3: 0.5, 7: 0.3}, 0) == []


def test_grouped_ranking_takes_the_most_uncertain_image_of_each_group():
    # Images 0-5 are the most uncertain of the stack and all look alike (group 0).
    means = {i: 0.5 - 0.01 * i if i < 6 else 0.3 - 0.01 * abs(i - 9) for i in range(12)}
    groups = {i: 0 if i < 6 else (1 if i < 9 else 2) for i in range(12)}
    assert rank_by_uncertainty(means, 3) == [0, 1, 2]  # all from group 0
    assert rank_by_uncertainty(means, 3, groups) == [0, 9, 8]  # each group's least sure, least sure first
    assert rank_by_uncertainty(means, 2, groups) == [0, 9]
    assert rank_by_uncertainty({5: 0.2, 9: 0.4}, 3, {5: 0, 9: 1}) == [9, 5]  # fewer images than groups


def _blobs(rng: np.random.Generator, count: int, radius: int, brightness: float) -> np.ndarray:
    """(1, 96, 96) image: `count` bright disks of `radius` on a dark, noisy background."""
    yy, xx = np.mgrid[:96, :96]
    image = rng.normal(10, 2, (96, 96))
    for cy, cx in rng.integers(radius, 96 - radius, (count, 2)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] += brightness
    return image[None].astype(np.float32)


def test_look_alike_groups_sort_images_by_what_they_show_not_by_brightness_or_order():
    rng = np.random.default_rng(0)
    # Interleaved: many small nuclei (even images) and a few large ones (odd), each kind dim and bright.
    images = np.stack([_blobs(rng, 40, 3, b) if i % 2 == 0 else _blobs(rng, 3, 14, b)
                       for i, b in enumerate([50, 50, 200, 200, 80, 80, 300, 300])])
    descriptors = image_descriptors(images)
    assert set(descriptors) == set(range(8)) and descriptors[0].ndim == 1
    groups = look_alike_groups(descriptors, 2)
    assert {groups[i] for i in (0, 2, 4, 6)} != {groups[i] for i in (1, 3, 5, 7)}
    assert len({groups[i] for i in (0, 2, 4, 6)}) == 1 and len({groups[i] for i in (1, 3, 5, 7)}) == 1
    # The least sure image of each kind is suggested, though the 3 least sure are all small-nuclei images.
    means = {0: 0.5, 2: 0.45, 4: 0.4, 6: 0.35, 1: 0.1, 3: 0.2, 5: 0.15, 7: 0.05}
    assert rank_by_uncertainty(means, 2, groups) == [0, 3]
    assert look_alike_groups(image_descriptors(images, [1, 2]), 3) == {1: 0, 2: 1}  # fewer images than groups
    assert set(look_alike_groups(descriptors, 1).values()) == {0}
    # Neighbours differ more than images in general: the order means nothing, so the groups are look-alikes.
    assert not stack_is_ordered(descriptors)
    assert spread_groups(descriptors, 2) == groups


def test_an_ordered_stack_is_spread_over_consecutive_parts():
    # Serial sections: the same field, with 3 more nuclei in each section than in the one before.
    images = np.stack([_blobs(np.random.default_rng(7), 8 + 3 * i, 5, 100) for i in range(9)])
    descriptors = image_descriptors(images)
    assert stack_is_ordered(descriptors)
    assert spread_groups(descriptors, 3) == {i: i // 3 for i in range(9)}
    shuffled = np.random.default_rng(0).permutation(9)  # the same images in an order that means nothing
    assert not stack_is_ordered({k: descriptors[int(i)] for k, i in enumerate(shuffled)})
    assert stack_is_ordered({k: descriptors[k] for k in range(3)})  # too few images to tell: stack order
    assert spread_groups({k: descriptors[k] for k in range(2)}, 3) == {0: 0, 1: 1}
    assert spread_groups({}, 3) == {}


def test_a_region_over_a_tenth_of_the_image_is_split_into_the_cores_it_is_least_sure_of(monkeypatch):
    from SemSegLib import suggest

    u = np.full((100, 100), 0.6, np.float32)  # a weak model: unsure of nearly everything
    u[:, 90:] = 0.1
    u[20:30, 20:30] = 0.95
    u[60:75, 50:70] = 0.85
    regions = uncertain_regions(u, top=5)
    assert [r.bbox for r in regions] == [(59, 49, 76, 71), (19, 19, 31, 31)]  # the cores, the larger first
    assert all(r.area <= 0.1 * u.size for r in regions)
    monkeypatch.setattr(suggest, "MAX_REGION_SHARE", 1.0)  # not taken apart: one region of nearly the whole image
    (whole,) = uncertain_regions(u, top=5)
    assert whole.bbox[:3] == (0, 0, 100) and whole.area > 0.8 * u.size


def test_suggesting_for_a_stack_holds_only_the_maps_that_can_still_be_suggested(monkeypatch):
    """`semseg suggest` held every image's uncertainty map until the end: 4 GB for 1000 images of 1024 x 1024."""
    import weakref
    from dataclasses import asdict

    import torch
    from SemSegLib import suggest
    from SemSegLib.classes import default_classes
    from SemSegLib.model_file import SemSegModel
    from SemSegLib.network import NetworkConfig
    from SemSegLib.prediction import PredictConfig, predict_stack
    from SemSegLib.suggest import suggest_slices

    torch.manual_seed(0)
    network = torch.nn.Conv2d(1, 3, 1)  # pixel by pixel: a real model, and a few milliseconds an image
    model = SemSegModel(network, NetworkConfig(in_channels=1, num_classes=3, base_width=8, levels=3),
                        default_classes(3))
    rng = np.random.default_rng(0)
    images = np.stack([(rng.random((1, 48, 48)) < rng.uniform(0.05, 0.95)) * rng.integers(20, 255)
                       + rng.integers(0, 30, (1, 48, 48)) for _ in range(12)]).astype(np.uint8)
    labels = np.zeros((12, 48, 48), np.uint8)
    labels[2, 5:9, 5:30] = 1
    config = PredictConfig(device="cpu", tta=False)
    maps = {i: p.uncertainty for i, p in predict_stack(model, images, config)}
    for spread in (True, False):
        means = {i: image_uncertainty(maps[i], labels[i] > 0) for i in maps}
        groups = spread_groups(image_descriptors(images, None, model.normalization), 3) if spread else None
        expected = rank_by_uncertainty(means, 3, groups)
        alive = []

        def held_maps(*args, alive=alive, **kwargs):
            for i, prediction in predict_stack(*args, **kwargs):
                alive.append(weakref.ref(prediction.uncertainty))
                yield i, prediction
                del prediction  # the caller has taken this one in: what is alive now, it holds
                alive[:] = [r for r in alive if r() is not None]
                assert len(alive) <= 3 + 1  # the newest one is also the caller's loop variable

        monkeypatch.setattr(suggest, "predict_stack", held_maps)
        out = suggest_slices(model, images, [f"i{k}" for k in range(12)], top=3, config=config, spread=spread,
                             labels=labels)["images"]
        assert len([r for r in alive if r() is not None]) == 0  # nothing kept once done
        assert [s["index"] for s in out] == expected
        for s in out:
            regions = uncertain_regions(maps[s["index"]], top=3, painted=labels[s["index"]] > 0)
            assert s["regions"] == [asdict(r) for r in regions]
            assert s["mean_uncertainty"] == round(means[s["index"]], 4)
