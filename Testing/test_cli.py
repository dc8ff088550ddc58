import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from SemSegLib import cli
from SemSegLib.classes import ClassInfo, read_classes_csv, write_classes_csv
from SemSegLib.model_file import SemSegModel
from SemSegLib.stack_io import read_stack
from SemSegLib.suggest import image_descriptors, rank_by_uncertainty, spread_groups


def run(*args):
    return cli.main([str(a) for a in args])


def test_full_loop_through_the_cli(disk_stack, capsys, monkeypatch):
    d = disk_stack
    write_classes_csv(d / "classes.csv", [ClassInfo(1, "background", (0, 0, 0)), ClassInfo(2, "disk", (255, 0, 0))])
    assert run("simulate", "--reference", d / "reference", "--out", d / "strokes", "--images", "1,2",
               "--strokes", 4) == 0
    assert sorted(p.name for p in (d / "strokes").iterdir()) == ["classes.csv", "img_1.tif", "img_2.tif"]
    # Small, fast network for the test; the CLI itself uses the defaults.
    from SemSegLib import training

    monkeypatch.setattr(training.TrainConfig, "__init__", _fast_init(training.TrainConfig.__init__))
    capsys.readouterr()
    assert run("train", "--images", d / "images", "--labels", d / "strokes", "--model", d / "m.pt",
               "--iterations", 120, "--device", "cpu") == 0
    assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "pred",
               "--uncertainty", "--probabilities") == 0
    # Not a terminal (a log file): the progress comes as whole lines (log_progress), not tqdm's redraws.
    log = capsys.readouterr().err
    assert "\r" not in log and "\ntrain: 1/120 it (1%), " in log and "\ntrain: 120/120 it (100%), " in log
    assert "\npredict: 4/4 img (100%), " in log
    names = sorted(p.name for p in (d / "pred").iterdir())
    assert "img_3.tif" in names and "img_3_uncertainty.tif" in names and "img_3_probabilities.tif" in names
    assert tifffile.imread(d / "pred" / "img_3_probabilities.tif").shape == (2, 96, 96)
    assert read_classes_csv(d / "pred" / "classes.csv") == read_classes_csv(d / "classes.csv")  # the maps' legend
    # A rerun into its own output folder replaces its files; files it did not write (strokes) are refused.
    assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "pred", "--uncertainty") == 0
    strokes = {p.name: p.read_bytes() for p in (d / "strokes").iterdir()}
    capsys.readouterr()
    assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "strokes") == 2
    assert "img_1.tif, img_2.tif already exist(s) and semseg predict did not write them" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (d / "strokes").iterdir()} == strokes
    assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "p2", "--device", "gpu") == 2
    assert "unknown device 'gpu'" in capsys.readouterr().err and not (d / "p2").exists()
    (d / "mine").mkdir()
    tifffile.imwrite(d / "mine" / "img_2.tif", tifffile.imread(d / "strokes" / "img_2.tif"))
    assert run("simulate", "--reference", d / "reference", "--out", d / "mine", "--images", "1,2") == 2
    assert run("simulate", "--reference", d / "reference", "--out", d / "mine", "--images", "1") == 0
    assert run("simulate", "--reference", d / "reference", "--out", d / "mine", "--images", "1,2", "--overwrite") == 0
    capsys.readouterr()
    assert run("evaluate", "--pred", d / "pred", "--reference", d / "reference", "--json") == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert "unlabeled" not in out.err
    assert result["mean_iou"] > 0.75 and result["classes"][1]["name"] == "disk"
    # A correction round: strokes on the largest errors, fine-tuned from the first model.
    assert run("simulate", "--reference", d / "reference", "--out", d / "strokes2", "--correct-from", d / "pred",
               "--labels", d / "strokes", "--strokes", 2) == 0
    old = tifffile.imread(d / "strokes" / "img_1.tif")
    new = tifffile.imread(d / "strokes2" / "img_1.tif")
    assert np.all(new[old > 0] == old[old > 0])
    assert run("train", "--images", d / "images", "--labels", d / "strokes2", "--model", d / "m2.pt",
               "--init", d / "m.pt", "--iterations", 5, "--no-prior-correction") == 0
    assert "predicts with 2 networks" in capsys.readouterr().out
    assert SemSegModel.load(d / "m.pt").log_prior_shift is not None
    assert SemSegModel.load(d / "m2.pt").log_prior_shift is None
    assert len(SemSegModel.load(d / "m2.pt").earlier_rounds) == 1  # a round averages with its start
    assert run("train", "--images", d / "images", "--labels", d / "strokes2", "--model", d / "m3.pt",
               "--init", d / "m.pt", "--iterations", 2, "--round-network-alone") == 0
    assert SemSegModel.load(d / "m3.pt").earlier_rounds == []
    # `info` says what each file holds, from the file alone.
    capsys.readouterr()
    assert run("info", "--model", d / "m2.pt", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in info["classes"]] == ["background", "disk"] and info["channels"] == 1
    assert [t["iterations"] for t in info["trainings"]] == [120, 5]
    assert info["trainings"][1]["labeled_pixels"] == sum(
        int((tifffile.imread(f) > 0).sum()) for f in (d / "strokes2").glob("img_*.tif"))
    assert info["trainings"][1]["labeled_images"] == 2 and info["trained_image_shape"] == [96, 96]
    assert info["trainings"][1]["labeled_image_names"] == sorted(f.stem for f in (d / "strokes2").glob("img_*.tif"))
    assert info["prediction"]["network_weights"] == [0.5, 0.5]
    assert info["prediction"]["class_prior_correction"] is False  # --no-prior-correction
    assert info["prediction"]["forest_samples"] == len(SemSegModel.load(d / "m2.pt").forest.targets)
    assert run("info", "--model", d / "m.pt") == 0
    text = capsys.readouterr().out
    assert "1 background, 2 disk" in text and "training 1 " in text and "training 2" not in text
    assert "120 iterations" in text and "corrected for the stack's class mix" in text
    assert "labeled pixels on 2 images (img_1, img_2)" in text  # which images it learned from
    assert run("info", "--model", d / "strokes" / "classes.csv") == 2
    assert "not a readable SemSeg model file" in capsys.readouterr().err
    assert run("suggest", "--images", d / "images", "--model", d / "m2.pt", "--top", 2) == 0
    s = json.loads(capsys.readouterr().out)
    assert len(s["images"]) == 2 and s["images"][0]["mean_uncertainty"] >= s["images"][1]["mean_uncertainty"]
    # Two suggestions come one from each of 2 groups (`spread_groups`, test_suggest.py); --no-spread: the 2
    # least sure wherever they are.
    assert run("suggest", "--images", d / "images", "--model", d / "m2.pt", "--top", 4) == 0
    means = {e["index"]: e["mean_uncertainty"] for e in json.loads(capsys.readouterr().out)["images"]}
    groups = spread_groups(image_descriptors(read_stack(d / "images").images), 2)
    assert [e["index"] for e in s["images"]] == rank_by_uncertainty(means, 2, groups)
    assert len({groups[e["index"]] for e in s["images"]}) == 2
    assert run("suggest", "--images", d / "images", "--model", d / "m2.pt", "--top", 2, "--no-spread") == 0
    plain = json.loads(capsys.readouterr().out)["images"]
    assert [e["index"] for e in plain] == sorted(means, key=lambda i: -means[i])[:2]
    # --labels: an image painted all over is settled (uncertainty 0, no region) and comes last; the others keep
    # their order and regions.
    (d / "painted").mkdir()
    top = plain[0]
    assert top["regions"]
    tifffile.imwrite(d / "painted" / f"{top['name']}.tif", np.ones((96, 96), np.uint8))
    assert run("suggest", "--images", d / "images", "--model", d / "m2.pt", "--top", 4, "--no-spread",
               "--labels", d / "painted") == 0
    with_labels = json.loads(capsys.readouterr().out)["images"]
    assert with_labels[-1]["index"] == top["index"] and with_labels[-1]["regions"] == []
    assert with_labels[-1]["mean_uncertainty"] == 0 and with_labels[0] == plain[1]


def _fast_init(original):
    def init(self, *a, **kw):
        original(self, *a, **kw)
        self.patch_size, self.batch_size, self.base_width, self.levels = 64, 4, 8, 3

    return init


def test_train_warns_when_its_seconds_ran_out_after_too_few_steps(disk_stack, capsys, monkeypatch):
    from SemSegLib import training

    d = disk_stack
    write_classes_csv(d / "classes.csv", [ClassInfo(1, "background", (0, 0, 0)), ClassInfo(2, "disk", (255, 0, 0))])
    assert run("simulate", "--reference", d / "reference", "--out", d / "strokes", "--images", "1", "--strokes", 2) == 0
    monkeypatch.setattr(training.TrainConfig, "__init__", _fast_init(training.TrainConfig.__init__))
    monkeypatch.setattr(training, "FEW_ITERATIONS", 10**6)  # whatever this machine's speed
    capsys.readouterr()
    assert run("train", "--images", d / "images", "--labels", d / "strokes", "--model", d / "m.pt",
               "--seconds", 0.5, "--device", "cpu") == 0
    err = capsys.readouterr().err
    assert "warning: only" in err and "more seconds" in err
    assert SemSegModel.load(d / "m.pt").history[-1]["warning"] in err


def test_float32_turns_the_reduced_precision_off_for_train_and_predict(disk_stack, monkeypatch):
    from SemSegLib import prediction, training

    d = disk_stack
    write_classes_csv(d / "classes.csv", [ClassInfo(1, "background", (0, 0, 0)), ClassInfo(2, "disk", (255, 0, 0))])
    assert run("simulate", "--reference", d / "reference", "--out", d / "strokes", "--images", "1", "--strokes", 2) == 0
    monkeypatch.setattr(training.TrainConfig, "__init__", _fast_init(training.TrainConfig.__init__))
    asked = []  # what every prediction asks for, those of the training's class-prior correction included
    monkeypatch.setattr(prediction, "autocast_dtype",
                        lambda device, mixed_precision=True, training=False: asked.append(mixed_precision) or None)
    for flag in ([], ["--float32"]):
        asked.clear()
        assert run("train", "--images", d / "images", "--labels", d / "strokes", "--model", d / "m.pt",
                   "--iterations", 2, "--device", "cpu", *flag) == 0
        assert SemSegModel.load(d / "m.pt").history[-1]["config"]["mixed_precision"] == (not flag)
        assert asked and set(asked) == {not flag}
        asked.clear()
        assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "pred",
                   "--device", "cpu", *flag) == 0
        assert asked and set(asked) == {not flag}


def test_keep_unsure_pieces_turns_their_reassignment_off(disk_stack, monkeypatch):
    from SemSegLib import prediction, training

    d = disk_stack
    assert run("simulate", "--reference", d / "reference", "--out", d / "strokes", "--images", "1", "--strokes", 2) == 0
    monkeypatch.setattr(training.TrainConfig, "__init__", _fast_init(training.TrainConfig.__init__))
    assert run("train", "--images", d / "images", "--labels", d / "strokes", "--model", d / "m.pt",
               "--iterations", 2, "--device", "cpu") == 0
    calls = []
    reassign = prediction.reassign_unsure_pieces
    monkeypatch.setattr(prediction, "reassign_unsure_pieces", lambda *a, **k: calls.append(1) or reassign(*a, **k))
    for flag, expected in (([], True), (["--keep-unsure-pieces"], False)):
        calls.clear()
        assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "pred",
                   "--device", "cpu", *flag) == 0
        assert bool(calls) == expected


def test_train_keeps_the_classes_of_the_model_it_fine_tunes_and_wants_every_class_painted(disk_stack, capsys):
    d = disk_stack
    classes = [ClassInfo(1, "background", (0, 0, 0)), ClassInfo(2, "disk", (255, 0, 0))]
    SemSegModel.create(1, classes, base_width=8, levels=3).save(d / "start.pt")
    fine_tune = ["--images", d / "images", "--iterations", 1, "--init", d / "start.pt", "--device", "cpu"]
    # Labels without a classes.csv are in the model's classes: its names and colors stay.
    assert run("train", "--labels", d / "reference", "--model", d / "m.pt", *fine_tune) == 0
    assert SemSegModel.load(d / "m.pt").classes == classes
    assert f"model written to {d / 'm.pt'} (" in capsys.readouterr().out
    assert run("train", "--labels", d / "reference", "--model", d / "m.pt", *fine_tune) == 0
    assert f"model written to {d / 'm.pt'}, replacing the earlier file (" in capsys.readouterr().out
    write_classes_csv(d / "swapped.csv", [ClassInfo(1, "disk", (255, 0, 0)), ClassInfo(2, "background", (0, 0, 0))])
    capsys.readouterr()
    assert run("train", "--labels", d / "reference", "--classes", d / "swapped.csv", "--model", d / "x.pt",
               *fine_tune) == 2
    assert "swapped.csv: the classes disk, background are not the model's (background, disk" in capsys.readouterr().err
    write_classes_csv(d / "three.csv", [*classes, ClassInfo(3, "debris", (0, 255, 0))])
    assert run("train", "--images", d / "images", "--labels", d / "reference", "--classes", d / "three.csv",
               "--model", d / "x.pt", "--iterations", 1) == 2
    assert "no labeled pixel of class(es) debris" in capsys.readouterr().err
    assert not (d / "x.pt").exists()
    # One class (a mask of the object alone, or a classes.csv of one row) leaves nothing to tell apart.
    (d / "objects").mkdir()
    for f in sorted((d / "reference").glob("*.tif")):
        tifffile.imwrite(d / "objects" / f.name, (tifffile.imread(f) == 2).astype(np.uint8))
    assert run("train", "--images", d / "images", "--labels", d / "objects", "--model", d / "x.pt",
               "--iterations", 1) == 2
    assert "objects (its largest value): only one class, class 1. A segmentation needs at least two" in (
        capsys.readouterr().err)
    write_classes_csv(d / "one.csv", [ClassInfo(1, "disk", (255, 0, 0))])
    assert run("train", "--images", d / "images", "--labels", d / "objects", "--classes", d / "one.csv",
               "--model", d / "x.pt", "--iterations", 1) == 2
    assert "one.csv: only one class, disk." in capsys.readouterr().err
    assert not (d / "x.pt").exists()


def test_bad_input_exits_2_with_a_message(disk_stack, capsys):
    d = disk_stack
    assert run("train", "--images", d / "missing", "--labels", d / "reference", "--model", d / "m.pt") == 2
    assert "missing: no such file" in capsys.readouterr().err
    assert run("predict", "--images", d / "images", "--model", d / "nope.pt", "--out", d / "o") == 2
    # Writing predictions into the image folder would overwrite the user's files: refused.
    (d / "m.pt").write_bytes(b"junk")
    assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "images") == 2
    assert run("simulate", "--reference", d / "reference", "--out", d / "s", "--images", "99") == 2
    assert "outside 1..4" in capsys.readouterr().err
    # A channel axis the images do not have: named, for each command that reads images.
    assert run("train", "--images", d / "images", "--labels", d / "reference", "--model", d / "m.pt",
               "--channel-axis", "5") == 2
    assert "img_1.tif: image has shape" in capsys.readouterr().err
    # Label maps that are masks or images, not class values: named, not taken for 255 classes.
    (d / "masks").mkdir()
    (d / "masks_csv").mkdir()
    for i in (1, 2, 3, 4):
        ref = tifffile.imread(d / "reference" / f"img_{i}.tif")
        tifffile.imwrite(d / "masks" / f"img_{i}.tif", np.where(ref == 2, 255, 0).astype(np.uint8))
        tifffile.imwrite(d / "masks_csv" / f"img_{i}.tif", ref + (i == 3))
    write_classes_csv(d / "two.csv", [ClassInfo(1, "background", (0, 0, 0)), ClassInfo(2, "disk", (255, 0, 0))])
    capsys.readouterr()
    assert run("train", "--images", d / "images", "--labels", d / "masks", "--model", d / "m.pt") == 2
    assert "label value 255 found in img_1, img_2, img_3, img_4. Without a classes.csv" in capsys.readouterr().err
    assert run("simulate", "--reference", d / "masks", "--out", d / "s") == 2
    assert "Convert 0/255 masks" in capsys.readouterr().err
    assert run("simulate", "--reference", d / "masks_csv", "--out", d / "s", "--classes", d / "two.csv") == 2
    assert "label value 3 found in img_3, but there are only 2 classes" in capsys.readouterr().err
    # The images instead of the predictions: the reference has 2 classes, the "prediction" values up to 255.
    assert run("evaluate", "--pred", d / "images", "--reference", d / "reference") == 2
    err = capsys.readouterr().err
    assert "images: label value" in err and "only 2 classes (the reference's values)" in err
    assert "Give the folder of label maps that `semseg predict` wrote." in err
    assert run("evaluate", "--pred", d / "reference", "--reference", d / "masks_csv", "--classes", d / "two.csv") == 2
    assert "masks_csv: label value 3 found in img_3" in capsys.readouterr().err
    # Strokes where a full map belongs: scored, with a word that their 0s count as wrong.
    (d / "partial").mkdir()
    for i in (1, 2, 3, 4):
        full = tifffile.imread(d / "reference" / f"img_{i}.tif")
        if i == 2:
            full[:, 90:] = 0
        tifffile.imwrite(d / "partial" / f"img_{i}.tif", full)
    capsys.readouterr()
    assert run("evaluate", "--pred", d / "partial", "--reference", d / "reference") == 0
    assert "unlabeled (0) pixels in img_2 count as wrong" in capsys.readouterr().err
    assert not any((d / "s").iterdir())  # nothing simulated from them
    # The demo writes only into a folder of its own (new, empty, or an earlier demo's).
    assert run("demo", "--out", d / "images", "--sample-only") == 2
    assert "holds other files" in capsys.readouterr().err
    assert run("demo", "--out", d / "demo", "--sample-only") == 0
    assert run("demo", "--out", d / "demo", "--sample-only") == 0
    # Numbers out of range are usage errors before anything runs (0 iterations crashed, -3 never ended).
    for command, option, value in (("train", "--iterations", "0"), ("train", "--iterations", "-3"),
                                   ("train", "--seconds", "0"), ("train", "--seed", "-1"),
                                   ("train", "--correction-weight", "-1"), ("suggest", "--top", "0"),
                                   ("simulate", "--strokes", "0"), ("demo", "--seconds", "-5")):
        with pytest.raises(SystemExit) as e:
            run(command, option, value)
        assert e.value.code == 2 and f"argument {option}: {value} must be" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run("train", "--images", d / "images")  # missing required arguments
    assert e.value.code == 2


def test_the_channel_axis_of_files_whose_axes_say_nothing_is_the_persons_word(tmp_path, capsys):
    """A stack of 5-channel images saved channels-last without axes (QQYX to tifffile): read by shape, they would
    be 40 channels; given --channel-axis 3, predict and suggest read them as 5."""
    from SemSegLib.classes import default_classes

    SemSegModel.create(5, default_classes(2), base_width=8, levels=3).save(tmp_path / "five.pt")
    images = np.random.default_rng(0).integers(0, 255, (3, 40, 48, 5), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", images, photometric="minisblack")
    common = ["--images", tmp_path / "stack.tif", "--model", tmp_path / "five.pt", "--device", "cpu"]
    assert run("predict", *common, "--out", tmp_path / "out") == 2
    assert "stack.tif: images have 40 channel(s) but the model was trained on 5" in capsys.readouterr().err
    assert run("predict", *common, "--out", tmp_path / "out", "--channel-axis", 3) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("stack_*.tif")) == [f"stack_000{i}.tif" for i in (1, 2, 3)]
    capsys.readouterr()
    assert run("suggest", *common, "--channel-axis", 3, "--top", 1) == 0
    assert json.loads(capsys.readouterr().out)["images"][0]["name"].startswith("stack_")


def test_predict_says_where_to_paint_next_from_its_own_prediction(disk_stack, capsys, monkeypatch):
    """`predict --suggest` writes what `suggest` prints (the same ranking, regions and painted-over rules) from the
    prediction it makes for its maps: each image is predicted once, not twice."""
    from SemSegLib import predict_folder, suggest

    d = disk_stack
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    SemSegModel.create(1, [ClassInfo(1, "background", (0, 0, 0)), ClassInfo(2, "disk", (255, 0, 0))],
                       base_width=8, levels=2).save(d / "m.pt")
    reference = read_stack(d / "reference").images[:, 0]
    (d / "strokes").mkdir()
    tifffile.imwrite(d / "strokes" / "img_2.tif", np.where(np.arange(96) < 30, reference[1], 0).astype(np.uint8))
    predicted = []
    for module in (predict_folder, suggest):
        monkeypatch.setattr(module, "predict_stack", _counted(module.predict_stack, predicted))
    assert run("suggest", "--images", d / "images", "--model", d / "m.pt", "--top", 3, "--labels", d / "strokes") == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["images"]) == 3 and any(e["regions"] for e in printed["images"])
    predicted.clear()
    assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "pred", "--suggest",
               d / "next.json", "--top", 3, "--labels", d / "strokes") == 0
    assert len(predicted) == 4  # one pass: each image once
    assert json.loads((d / "next.json").read_text()) == printed
    assert f"where to paint next written to {d / 'next.json'}: first image" in capsys.readouterr().out
    assert sorted(p.name for p in (d / "pred").glob("img_*.tif")) == [f"img_{i}.tif" for i in range(1, 5)]
    # Into one multi-page TIFF, and rerun over its own file; without --labels as suggest without them; into a folder
    # not there yet.
    assert run("suggest", "--images", d / "images", "--model", d / "m.pt", "--no-spread") == 0
    plain = json.loads(capsys.readouterr().out)
    assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "maps.tif", "--suggest",
               d / "next.json", "--no-spread") == 0
    assert json.loads((d / "next.json").read_text()) == plain and (d / "maps.tif").is_file()
    assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "p3", "--suggest",
               d / "new" / "next.json", "--no-spread") == 0
    assert json.loads((d / "new" / "next.json").read_text()) == plain
    # Refused before anything is written: a file that is not SemSeg's suggestions, a name that is not .json, the
    # suggestion options without --suggest.
    (d / "notes.json").write_text('{"mine": 1}')
    capsys.readouterr()
    assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "p2", "--suggest",
               d / "notes.json") == 2
    assert "is not where-to-paint suggestions SemSeg wrote" in capsys.readouterr().err
    assert (d / "notes.json").read_text() == '{"mine": 1}' and not (d / "p2").exists()
    assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "p2", "--suggest",
               d / "next.txt") == 2
    assert "name a .json file" in capsys.readouterr().err and not (d / "next.txt").exists()
    assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "p2", "--top", 2) == 2
    assert "give them with --suggest" in capsys.readouterr().err and not (d / "p2").exists()
    assert run("predict", "--images", d / "images", "--model", d / "m.pt", "--out", d / "p2", "--suggest",
               d / "notes.json", "--overwrite") == 0
    assert set(json.loads((d / "notes.json").read_text())) == {"images", "stack_mean_uncertainty"}


def _counted(predict_stack, predicted: list):
    def counted(*args, **kwargs):
        for i, pred in predict_stack(*args, **kwargs):
            predicted.append(i)
            yield i, pred

    return counted


def test_labels_and_predictions_may_be_one_multipage_tiff(disk_stack, capsys):
    d = disk_stack
    reference = read_stack(d / "reference").images[:, 0]
    tifffile.imwrite(d / "maps.tif", reference, photometric="minisblack")  # a page per image, as napari saves them
    assert run("evaluate", "--pred", d / "maps.tif", "--reference", d / "reference", "--json") == 0
    assert json.loads(capsys.readouterr().out)["mean_iou"] == 1.0
    strokes = np.where(np.arange(reference.shape[-1]) % 9 == 0, reference, 0).astype(np.uint8)
    tifffile.imwrite(d / "strokes.tif", strokes, photometric="minisblack")
    assert run("simulate", "--reference", d / "reference", "--out", d / "more", "--labels", d / "strokes.tif",
               "--correct-from", d / "maps.tif") == 0
    # No error to correct in a perfect map: the strokes come out as they went in, a file per image.
    assert all(np.array_equal(tifffile.imread(d / "more" / f"img_{i + 1}.tif"), strokes[i]) for i in range(4))


def test_evaluate_and_suggest_take_fields_of_different_sizes(tmp_path, capsys):
    """A collection of fields of several sizes: scored pooled over every pixel, and ranked for painting with each
    field's regions inside it."""
    import torch
    from SemSegLib.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    sizes = [(40, 56), (64, 36), (30, 70)]
    for folder in ("images", "reference", "pred", "strokes"):
        (tmp_path / folder).mkdir()
    refs, preds = [], []
    for i, (h, w) in enumerate(sizes):
        ref = rng.integers(1, 4, (h, w)).astype(np.uint8)
        pred = np.where(rng.random((h, w)) < 0.3, rng.integers(1, 4, (h, w)), ref).astype(np.uint8)
        refs.append(ref)
        preds.append(pred)
        tifffile.imwrite(tmp_path / "images" / f"f{i + 1}.tif", rng.integers(0, 255, (h, w)).astype(np.uint8))
        # As numpy and scikit-image make label maps: int64, int32.
        tifffile.imwrite(tmp_path / "reference" / f"f{i + 1}.tif", ref.astype(np.int64))
        tifffile.imwrite(tmp_path / "pred" / f"f{i + 1}.tif", pred.astype(np.int32))
        tifffile.imwrite(tmp_path / "strokes" / f"f{i + 1}.tif", np.where(np.arange(w) < 5, ref, 0).astype(np.uint8))
    assert run("evaluate", "--pred", tmp_path / "pred", "--reference", tmp_path / "reference", "--json") == 0
    pooled = confusion_matrix(np.concatenate([p.ravel() for p in preds]), np.concatenate([r.ravel() for r in refs]),
                              3)
    assert json.loads(capsys.readouterr().out)["confusion_matrix"] == pooled.tolist()
    (tmp_path / "strokes" / "f2.tif").unlink()  # field 2 unpainted: scored apart from fields 1 and 3
    assert run("evaluate", "--pred", tmp_path / "pred", "--reference", tmp_path / "reference", "--json",
               "--labels", tmp_path / "strokes") == 0
    split = json.loads(capsys.readouterr().out)
    assert split["without_strokes"]["images"] == ["f2"]
    assert split["without_strokes"]["confusion_matrix"] == confusion_matrix(preds[1], refs[1], 3).tolist()
    tifffile.imwrite(tmp_path / "strokes" / "f2.tif", np.where(np.arange(36) < 5, refs[1], 0).astype(np.uint8))
    torch.manual_seed(0)
    SemSegModel.create(1, [ClassInfo(k, f"c{k}", (k, k, k)) for k in (1, 2, 3)], base_width=8, levels=2).save(
        tmp_path / "m.pt")
    assert run("suggest", "--images", tmp_path / "images", "--model", tmp_path / "m.pt", "--top", "3",
               "--labels", tmp_path / "strokes", "--device", "cpu") == 0
    suggested = json.loads(capsys.readouterr().out)["images"]
    assert sorted(s["name"] for s in suggested) == ["f1", "f2", "f3"] and any(s["regions"] for s in suggested)
    for s in suggested:
        h, w = sizes[s["index"]]
        for region in s["regions"]:
            top, left, bottom, right = region["bbox"]
            assert 0 <= top < bottom <= h and 5 <= left < right <= w  # never where the person painted


def test_evaluate_scores_the_images_without_strokes_apart_from_the_painted_ones(tmp_path, capsys):
    """With the strokes the model was trained with, `evaluate` scores the images new to the model (what the rest of
    a stack gets) apart from the painted ones, each group pooled over its own pixels."""
    from SemSegLib.metrics import evaluate

    rng = np.random.default_rng(1)
    for folder in ("reference", "pred", "strokes", "none", "elsewhere"):
        (tmp_path / folder).mkdir()
    refs = rng.integers(1, 3, (4, 30, 40)).astype(np.uint8)
    # The painted images (2 and 4) predicted nearly right, the others often wrong: pooled, the groups differ.
    wrong = rng.random(refs.shape) < np.array([0.4, 0.05, 0.4, 0.05])[:, None, None]
    preds = np.where(wrong, 3 - refs, refs).astype(np.uint8)
    for i in range(4):
        tifffile.imwrite(tmp_path / "reference" / f"img_{i + 1}.tif", refs[i])
        tifffile.imwrite(tmp_path / "pred" / f"img_{i + 1}.tif", preds[i])
        tifffile.imwrite(tmp_path / "none" / f"img_{i + 1}.tif", np.zeros((30, 40), np.uint8))
    for i in (1, 3):  # a stroke on images 2 and 4; no file for 1 and 3 (unlabeled)
        tifffile.imwrite(tmp_path / "strokes" / f"img_{i + 1}.tif", np.pad(refs[i, :2, :5], ((0, 28), (0, 35))))
    evaluate_args = ("evaluate", "--pred", tmp_path / "pred", "--reference", tmp_path / "reference")
    assert run(*evaluate_args, "--labels", tmp_path / "strokes", "--json") == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["without_strokes"]["images"] == ["img_1", "img_3"]
    assert scores["with_strokes"]["images"] == ["img_2", "img_4"]
    for key, idx in (("without_strokes", [0, 2]), ("with_strokes", [1, 3])):
        expected = evaluate(preds[idx], refs[idx], ["c1", "c2"])
        assert scores[key]["confusion_matrix"] == expected.confusion.tolist()
    assert scores["without_strokes"]["mean_iou"] < 0.5 < scores["with_strokes"]["mean_iou"]
    assert run(*evaluate_args, "--labels", tmp_path / "strokes") == 0
    text = capsys.readouterr().out
    assert text.index("2 images without strokes (new to the model):") < text.index("2 images with strokes")
    # Strokes on none of the images scored (empty maps, or only on images the reference leaves out, as when it was
    # made for a few test images): every image is new to the model, and it says so.
    tifffile.imwrite(tmp_path / "elsewhere" / "img_9.tif", np.ones((30, 40), np.uint8))
    for no_strokes in ("none", "elsewhere"):
        assert run(*evaluate_args, "--labels", tmp_path / no_strokes, "--json") == 0
        out = capsys.readouterr()
        scores = json.loads(out.out)
        assert list(scores) == ["without_strokes"] and len(scores["without_strokes"]["images"]) == 4
        assert "every image scored is new to the model" in out.err
    assert run(*evaluate_args, "--labels", tmp_path / "none") == 0
    assert "no image with strokes (the model was shown part of them)" in capsys.readouterr().out


def test_reference_maps_hold_classes_in_any_number_type_and_may_differ_in_size(tmp_path, capsys):
    """`evaluate` and `simulate` read a reference as label files are read: floats of whole numbers (a map saved from
    numpy or Fiji as float32) are its classes, and a map that is not classes is refused naming its file."""
    rng = np.random.default_rng(0)
    sizes = [(40, 56), (64, 36)]
    for folder in ("reference", "pred"):
        (tmp_path / folder).mkdir()
    for i, (h, w) in enumerate(sizes):
        ref = rng.integers(1, 3, (h, w))
        tifffile.imwrite(tmp_path / "reference" / f"f{i + 1}.tif", ref.astype(np.float32 if i else np.int16))
        tifffile.imwrite(tmp_path / "pred" / f"f{i + 1}.tif", ref.astype(np.uint8))
    assert run("evaluate", "--pred", tmp_path / "pred", "--reference", tmp_path / "reference", "--json") == 0
    assert json.loads(capsys.readouterr().out)["mean_iou"] == 1.0
    assert run("simulate", "--reference", tmp_path / "reference", "--out", tmp_path / "strokes", "--images", "1,2",
               "--strokes", 2) == 0
    strokes = [tifffile.imread(tmp_path / "strokes" / f"f{i + 1}.tif") for i in range(2)]
    assert [s.shape for s in strokes] == sizes and all(set(np.unique(s)) == {0, 1, 2} for s in strokes)
    tifffile.imwrite(tmp_path / "reference" / "f2.tif", np.full((64, 36), -1, np.int16))
    assert run("evaluate", "--pred", tmp_path / "pred", "--reference", tmp_path / "reference") == 2
    assert "f2.tif: label pixels must be class values 0..65535 (0 = unlabeled), but this int16 map holds -1" in \
        capsys.readouterr().err
    tifffile.imwrite(tmp_path / "reference" / "f2.tif", np.full((64, 36), 0.5, np.float32))
    assert run("simulate", "--reference", tmp_path / "reference", "--out", tmp_path / "s2") == 2
    assert "f2.tif: label pixels must be class values 0..65535 (0 = unlabeled), but this float32 map holds 0.5 (not " \
        "a whole number)" in capsys.readouterr().err and not (tmp_path / "s2").exists()
    for i in range(len(sizes)):  # gray saved as RGB is gray; colours are not classes
        gray = tifffile.imread(tmp_path / "pred" / f"f{i + 1}.tif")
        tifffile.imwrite(tmp_path / "reference" / f"f{i + 1}.tif", np.stack([gray] * 3, -1), photometric="rgb")
    assert run("evaluate", "--pred", tmp_path / "pred", "--reference", tmp_path / "reference", "--json") == 0
    assert json.loads(capsys.readouterr().out)["mean_iou"] == 1.0
    tifffile.imwrite(tmp_path / "reference" / "f1.tif", rng.integers(0, 3, (40, 56, 3)).astype(np.uint8),
                     photometric="rgb")
    assert run("evaluate", "--pred", tmp_path / "pred", "--reference", tmp_path / "reference") == 2
    assert "f1.tif: a reference label map must be a 2D image of class values, but this one has 3 channels" in \
        capsys.readouterr().err


def test_internal_error_exits_1(disk_stack, monkeypatch, capsys):
    parser_args = ["evaluate", "--pred", disk_stack / "reference", "--reference", disk_stack / "reference"]
    monkeypatch.setattr(cli, "build_parser", _parser_with(cli.build_parser, "evaluate", lambda a: 1 / 0))
    assert run(*parser_args) == 1
    assert "internal error" in capsys.readouterr().err


def _parser_with(build, command, func):
    def patched():
        p = build()
        for action in p._subparsers._group_actions:
            action.choices[command].set_defaults(func=func)
        return p

    return patched


def test_every_command_has_help():
    for command in ("train", "predict", "evaluate", "simulate", "suggest", "demo"):
        out = subprocess.run([sys.executable, "-m", "SemSegLib", command, "--help"], capture_output=True, text=True,
                             cwd=str(__import__("pathlib").Path(cli.__file__).parent.parent))
        assert out.returncode == 0 and "usage: semseg" in out.stdout
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    unexplained = [(name, action.option_strings) for name, command in commands.items() for action in command._actions
                   if not action.help]
    assert unexplained == []


def test_train_reports_its_line_classes_and_forest_and_can_leave_each_out(tmp_path, capsys, monkeypatch):
    from SemSegLib import training
    from SemSegLib.simulate import simulate_strokes
    from test_line_classes import ring_task

    images, refs = ring_task(2, 64)
    rng = np.random.default_rng(0)
    for folder, arrays in (("images", images), ("strokes", [simulate_strokes(r, 3, 4, rng=rng) for r in refs])):
        (tmp_path / folder).mkdir()
        for i, a in enumerate(arrays):
            tifffile.imwrite(tmp_path / folder / f"img_{i + 1}.tif", a.astype(np.uint8))
    write_classes_csv(tmp_path / "strokes" / "classes.csv", [ClassInfo(1, "background", (0, 0, 0)),
                      ClassInfo(2, "nucleus", (0, 0, 255)), ClassInfo(3, "border", (255, 0, 0))])
    monkeypatch.setattr(training.TrainConfig, "__init__", _fast_init(training.TrainConfig.__init__))
    common = ("--images", tmp_path / "images", "--labels", tmp_path / "strokes", "--iterations", 2,
              "--device", "cpu")
    assert run("train", *common, "--model", tmp_path / "m.pt") == 0
    out = capsys.readouterr().out
    assert "predicted as lines: border" in out
    # Two steps leave the networks sure of nothing: the forest has the labels alone.
    assert "a random forest on the same labels gets 0.65 of each prediction (0.2 of a line class)" in out
    from SemSegLib import forest_teacher

    monkeypatch.setattr(forest_teacher, "CONFIDENCE", 0.0)  # now every pixel is sure enough to teach it
    assert run("train", *common, "--model", tmp_path / "taught.pt") == 0
    assert "a random forest on the same labels and the networks' confident pixels gets 0.65" in capsys.readouterr().out
    assert SemSegModel.load(tmp_path / "m.pt").line_classes == [2]
    assert SemSegModel.load(tmp_path / "m.pt").forest is not None
    assert run("train", *common, "--model", tmp_path / "wide.pt", "--no-line-thinning") == 0
    assert "lines" not in capsys.readouterr().out
    assert SemSegModel.load(tmp_path / "wide.pt").line_classes == []
    assert run("train", *common, "--model", tmp_path / "net.pt", "--no-forest") == 0
    assert "random forest" not in capsys.readouterr().out
    assert SemSegModel.load(tmp_path / "net.pt").forest is None


def test_train_names_the_starting_point_it_used_and_takes_another(tmp_path, capsys):
    from SemSegLib.simulate import simulate_strokes
    from SemSegLib.synthetic_nuclei import NUCLEI_CLASSES, make_nuclei_image

    rng = np.random.default_rng(5)
    pairs = [make_nuclei_image(rng, 128) for _ in range(2)]
    for folder, arrays in (("images", [(p[0][0] * 1000).clip(0, 65535).astype(np.uint16) for p in pairs]),
                           ("strokes", [simulate_strokes(p[1], 3, 4, rng=rng).astype(np.uint8) for p in pairs])):
        (tmp_path / folder).mkdir()
        for i, a in enumerate(arrays):
            tifffile.imwrite(tmp_path / folder / f"img_{i + 1}.tif", a)
    write_classes_csv(tmp_path / "strokes" / "classes.csv", NUCLEI_CLASSES)
    # The default network (a smaller one, as the other tests train, fits no shipped start: none is used).
    common = ("--images", tmp_path / "images", "--labels", tmp_path / "strokes", "--iterations", 2,
              "--device", "cpu", "--no-forest")
    assert run("train", *common, "--model", tmp_path / "m.pt") == 0
    assert "started from the shipped fluorescent-nuclei network" in capsys.readouterr().out
    assert SemSegModel.load(tmp_path / "m.pt").history[-1]["starting_point"]["class_order"] == [0, 1, 2]
    assert run("train", *common, "--model", tmp_path / "fresh.pt", "--start", "none") == 0
    assert "started from" not in capsys.readouterr().out
    assert run("train", *common, "--model", tmp_path / "x.pt", "--start", "membranes") == 2
    assert "unknown starting point 'membranes'" in capsys.readouterr().err


def test_train_says_when_dense_labels_make_the_loss_weigh_the_classes(disk_stack, capsys, monkeypatch):
    from SemSegLib import training

    d = disk_stack
    classes = [ClassInfo(1, "background", (0, 0, 0)), ClassInfo(2, "disk", (255, 0, 0))]
    (d / "dense").mkdir()
    write_classes_csv(d / "dense" / "classes.csv", classes)
    ref = tifffile.imread(d / "reference" / "img_1.tif")
    dense = np.where(ref == 1, 1, 0).astype(np.uint8)  # every background pixel, 30 disk pixels
    rows, columns = np.nonzero(ref == 2)
    dense[rows[:30], columns[:30]] = 2
    tifffile.imwrite(d / "dense" / "img_1.tif", dense)
    monkeypatch.setattr(training.TrainConfig, "__init__", _fast_init(training.TrainConfig.__init__))
    capsys.readouterr()
    assert run("train", "--images", d / "images", "--labels", d / "dense", "--model", d / "m.pt",
               "--iterations", 2, "--device", "cpu") == 0
    out = capsys.readouterr().out
    weights = SemSegModel.load(d / "m.pt").history[-1]["class_weights"]
    assert weights[1] > 10 * weights[0]
    assert f"the loss weighs the classes background {weights[0]:.2g}, disk {weights[1]:.2g}" in out


def test_train_on_fields_of_different_sizes_mirrors_them_to_one_and_learns_each(tmp_path, capsys, monkeypatch):
    """A collection of fields of several sizes trains as it predicts: the fields are mirrored out to the largest
    for the patches, the added pixels unlabeled, and each field is then predicted as it is."""
    from conftest import disk_task
    from SemSegLib import training
    from SemSegLib.simulate import simulate_strokes

    sizes = [(96, 96), (64, 80), (72, 56), (80, 96)]
    rng = np.random.default_rng(3)
    for folder in ("images", "reference", "strokes"):
        (tmp_path / folder).mkdir()
    for i, (h, w) in enumerate(sizes):
        images, refs = disk_task(1, 96, seed=i)
        image, ref = images[0, :h, :w], refs[0, :h, :w]
        tifffile.imwrite(tmp_path / "images" / f"field_{i + 1}.tif", image)
        tifffile.imwrite(tmp_path / "reference" / f"field_{i + 1}.tif", ref)
        if i < 3:  # the fourth field is left unpainted
            tifffile.imwrite(tmp_path / "strokes" / f"field_{i + 1}.tif", simulate_strokes(ref, 4, 2, rng=rng))
    monkeypatch.setattr(training.TrainConfig, "__init__", _fast_init(training.TrainConfig.__init__))
    assert run("train", "--images", tmp_path / "images", "--labels", tmp_path / "strokes", "--model",
               tmp_path / "m.pt", "--iterations", 120, "--device", "cpu") == 0
    err = capsys.readouterr().err
    assert "training on 3 labeled image(s)" in err
    assert "the images differ in size (72x56 to 96x96): for the training each is mirrored out to 96x96" in err
    assert run("info", "--model", tmp_path / "m.pt") == 0
    assert "last trained on fields of 72x56 to 96x96, each mirrored out to 96 x 96" in capsys.readouterr().out
    assert run("predict", "--images", tmp_path / "images", "--model", tmp_path / "m.pt", "--out",
               tmp_path / "pred") == 0
    assert [tifffile.imread(tmp_path / "pred" / f"field_{i + 1}.tif").shape for i in range(4)] == sizes
    capsys.readouterr()
    assert run("evaluate", "--pred", tmp_path / "pred", "--reference", tmp_path / "reference", "--json") == 0
    assert json.loads(capsys.readouterr().out)["mean_iou"] > 0.75


def test_fields_are_mirrored_out_to_the_largest_size_and_their_added_pixels_are_unlabeled():
    from SemSegLib.mixed_sizes import mirrored_to_one_size, size_range

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (2, h, w)).astype(np.uint8) for h, w in ((5, 7), (2, 3), (1, 20))]
    labels = [np.full(im.shape[1:], i + 1, np.uint16) for i, im in enumerate(images)]
    stack, maps = mirrored_to_one_size(images, labels)
    assert stack.shape == (3, 2, 5, 20) and maps.shape == (3, 5, 20) and stack.dtype == np.uint8
    for i, (image, lab) in enumerate(zip(images, labels)):
        h, w = image.shape[1:]
        assert np.array_equal(stack[i, :, :h, :w], image) and np.array_equal(maps[i, :h, :w], lab)
        assert (maps[i, h:] == 0).all() and (maps[i, :, w:] == 0).all()
    assert np.array_equal(stack[0, :, :, 7], stack[0, :, :, 5])  # mirrored about the last column, not repeated
    assert np.array_equal(stack[1, :, :, 3:5], stack[1, :, :, 1::-1])  # and again where the pad is wider
    assert (stack[2] == stack[2, :, :1]).all()  # a single row has only itself to mirror
    assert size_range([(5, 7), (2, 3), (1, 20)]) == "2x3 to 5x7"


def test_a_folder_is_read_for_training_into_one_array_as_a_stack_reader_reads_it(tmp_path):
    from SemSegLib.lazy_stack import open_stack

    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "a_1.tif", rng.integers(0, 255, (40, 50), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "a_2.tif", rng.integers(0, 60000, (40, 50), dtype=np.uint16))  # a wider type
    tifffile.imwrite(tmp_path / "a_3.tif", rng.integers(0, 255, (40, 50), dtype=np.uint8))
    images = cli._read_into_one_array(open_stack(tmp_path, one_size=False))
    whole = read_stack(tmp_path).images
    assert images.dtype == whole.dtype == np.uint16 and np.array_equal(images, whole)
    assert images[1].max() > 255  # the wider image is not cut to the first one's type


def test_train_warns_when_mirroring_makes_the_fields_many_times_their_size(tmp_path, capsys):
    from SemSegLib.lazy_stack import open_stack

    rng = np.random.default_rng(0)
    sizes = {"big": (128, 128), **{f"small_{i}": (32, 32) for i in range(5)}}
    for name, shape in sizes.items():
        tifffile.imwrite(tmp_path / f"{name}.tif", rng.integers(0, 255, shape, dtype=np.uint8))
    stack = open_stack(tmp_path, one_size=False)
    labels = [np.zeros(stack.image_size(i), np.uint16) for i in range(len(stack))]
    images, maps, _ = cli._training_arrays(stack, labels)
    assert images.shape == (6, 1, 128, 128) and maps.shape == (6, 128, 128)
    err = capsys.readouterr().err
    assert "mirrored out to 128x128" in err and "holds 5 times the fields' pixels" in err and "cut the largest" in err
    tifffile.imwrite(tmp_path / "big.tif", rng.integers(0, 255, (40, 40), dtype=np.uint8))
    cli._training_arrays(open_stack(tmp_path, one_size=False), [np.zeros((40, 40), np.uint16)] + labels[1:])
    assert "warning" not in capsys.readouterr().err  # a little larger than the others: mirroring costs little
