import numpy as np
from scipy import ndimage as ndi
from SemSegLib.metrics import evaluate
from SemSegLib.simulate import simulate_corrections, simulate_corrections_in, simulate_strokes


def test_metrics_known_values():
    ref = np.array([[1, 1, 2, 2]])
    pred = np.array([[1, 2, 2, 2]])
    m = evaluate(pred, ref, ["a", "b"])
    assert m.confusion.tolist() == [[1, 1], [0, 2]]
    assert np.allclose(m.iou, [1 / 2, 2 / 3])
    assert np.allclose(m.dice, [2 / 3, 4 / 5])
    assert m.pixel_accuracy == 0.75 and np.isclose(m.mean_iou, 7 / 12)
    d = m.to_dict()
    assert d["classes"][1]["reference_pixels"] == 2


def test_metrics_skip_unlabeled_reference():
    m = evaluate(np.array([[1, 2]]), np.array([[0, 2]]), ["a", "b"])
    assert m.confusion.sum() == 1 and m.pixel_accuracy == 1.0


def test_a_stack_s_confusion_counts_every_pixel_pair_in_any_label_type():
    # Counted image by image in the maps' own types: the counts must be those of each pixel pair, with reference
    # values outside 1..K skipped and predictions outside clipped (0 -> none, beyond K -> K), in any integer type.
    rng = np.random.default_rng(1)
    for pred_type, ref_type in ((np.uint8, np.uint16), (np.int16, np.int32), (np.uint16, np.uint8)):
        pred = rng.integers(0, 6, (3, 2, 17, 13)).astype(pred_type)
        ref = rng.integers(0, 6, (3, 2, 17, 13)).astype(ref_type)
        if np.issubdtype(ref_type, np.signedinteger):
            ref[0, 0, :3] = -1
            pred[0, 0, 3:6] = -2
        expected = np.zeros((3, 3), np.int64)
        for p, r in zip(pred.ravel().tolist(), ref.ravel().tolist()):
            if 1 <= r <= 3 and p > 0:
                expected[r - 1, min(p, 3) - 1] += 1
        assert evaluate(pred, ref, ["a", "b", "c"]).confusion.tolist() == expected.tolist()
        assert evaluate(pred[1, 0], ref[1, 0], ["a", "b", "c"]).confusion.sum() > 0


def test_strokes_are_sparse_and_correct():
    rng = np.random.default_rng(0)
    ref = np.ones((128, 128), np.uint8)
    ref[30:90, 30:90] = 2
    ref[60, :] = 3  # a thin 1-pixel class must still get strokes
    lab = simulate_strokes(ref, 3, strokes_per_class=5, rng=rng)
    painted = lab > 0
    assert np.all(lab[painted] == ref[painted])  # a careful annotator never paints the wrong class
    assert set(np.unique(lab[painted])) == {1, 2, 3}
    assert 0.002 < painted.mean() < 0.1
    again = simulate_strokes(ref, 3, strokes_per_class=5, rng=np.random.default_rng(0))
    assert np.array_equal(lab, again)


def test_a_stroke_in_a_one_pixel_class_is_as_long_as_asked():
    # A 1-pixel ring (8-connected, like a nucleus border): the smooth walk alone leaves it within a few
    # pixels; a stroke must trace it for its whole length, as a hand does.
    yy, xx = np.mgrid[:128, :128]
    disk = (yy - 64) ** 2 + (xx - 64) ** 2 <= 40**2
    ref = np.ones((128, 128), np.uint8)
    ref[disk & ~ndi.binary_erosion(disk)] = 2
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(20):
        lab = simulate_strokes(ref, 2, strokes_per_class=1, brush_radius=1, stroke_length=25, rng=rng)
        assert np.all(lab[lab == 2] == ref[lab == 2])
        lengths.append(int((lab == 2).sum()))
    assert np.mean(lengths) >= 20, lengths
    assert max(lengths) <= 25 + 4  # a pixel a step, and the brush reaches up to 2 more past either end


def test_corrections_go_to_the_largest_error_and_keep_old_strokes():
    ref = np.ones((100, 100), np.uint8)
    ref[10:60, 10:60] = 2
    pred = np.ones_like(ref)  # the whole class-2 square is wrong
    pred[80:83, 80:83] = 2  # and a small false positive
    old = np.zeros_like(ref)
    old[5, 5] = 1
    new = simulate_corrections(ref, pred, old, 2, strokes_per_class=1, rng=np.random.default_rng(1))
    added = (new > 0) & (old == 0)
    assert added.any() and np.all(new[added] == ref[added])
    assert np.all(new[added & (ref == 2)] == 2) and (added & (ref == 2)).sum() > 10
    assert new[5, 5] == 1


def test_corrections_stay_off_the_rim_next_to_a_thin_class():
    # A nucleus (2) with a 1-pixel border (3); the model draws the border 3 pixels thick.
    ref = np.ones((100, 100), np.uint8)
    ref[10:60, 10:60] = 3
    ref[11:59, 11:59] = 2
    pred = ref.copy()
    pred[10:60, 10:60] = 3
    pred[13:57, 13:57] = 2
    old = np.zeros_like(ref)
    rim_distance = ndi.distance_transform_edt(ref == 2)
    for missed_blob in (False, True):
        if missed_blob:
            pred[25:45, 25:45] = 1
        new = simulate_corrections(ref, pred, old, 3, strokes_per_class=5, rng=np.random.default_rng(0))
        added = (new > 0) & (old == 0)
        nucleus = added & (ref == 2)
        assert np.all(new[added] == ref[added])
        # The 2-pixel rim inside the border is where the border runs, not a blob a person would paint over.
        assert not (nucleus & (rim_distance < 3)).any()
        assert nucleus.sum() > 10 if missed_blob else not nucleus.any()


def test_corrections_in_a_suggested_region_fix_its_errors_one_blob_per_stroke():
    ref = np.ones((100, 100), np.uint8)
    ref[10:40, 10:40] = 2  # two missed class-2 blobs in the region, the first bigger
    ref[55:75, 10:30] = 2
    ref[10:30, 70:90] = 2  # a third one outside the region
    pred = np.ones_like(ref)
    old = np.zeros_like(ref)
    old[50, 50] = 1
    box = (5, 5, 80, 45)
    one = simulate_corrections_in(ref, pred, old, 2, [box], rng=np.random.default_rng(0))
    added = (one > 0) & (old == 0)
    assert np.all(one[added] == ref[added]) and one[50, 50] == 1
    assert added[10:40, 10:40].sum() > 10 and not added[55:75, 10:30].any()  # the biggest error first
    two = simulate_corrections_in(ref, pred, old, 2, [box, box], rng=np.random.default_rng(0))
    assert (two[55:75, 10:30] == 2).sum() > 10  # the second stroke fixes the next error, not the same one
    # The person before session 39 went on to the biggest error outside a region with none left.
    three = simulate_corrections_in(ref, pred, old, 2, [box] * 3, rng=np.random.default_rng(0), stay_in_region=False)
    assert (three[10:30, 70:90] == 2).sum() > 10
    # Where the model is right, the stroke confirms the class at the region's center.
    right = simulate_corrections_in(ref, ref, old, 2, [(20, 20, 30, 30)], rng=np.random.default_rng(0))
    confirmed = (right > 0) & (old == 0)
    assert confirmed[20:30, 20:30].any() and np.all(right[confirmed] == 2)
    # Today's person keeps to the regions: the region's center gets its right class once the region shows no
    # error left, and the error outside it is left alone.
    stay = simulate_corrections_in(ref, pred, old, 2, [box] * 3, rng=np.random.default_rng(0))
    assert not (stay[10:30, 70:90] > 0).any()
    center = (stay > 0) & (two == 0)
    assert center[40:45, 23:27].any() and np.all(stay[center] == ref[center])
