"""`semseg predict` into a folder of maps or into one multi-page TIFF (`predict_folder`)."""

import numpy as np
import pytest
import tifffile
from SemSegLib import predict_folder
from SemSegLib.classes import ClassInfo, default_classes, read_classes_csv, write_classes_csv
from SemSegLib.errors import InputError
from SemSegLib.model_file import SemSegModel
from SemSegLib.predict_folder import plan_folder_prediction
from SemSegLib.prediction import PredictConfig
from SemSegLib.stack_io import read_labels, read_stack

CPU = PredictConfig(device="cpu")


@pytest.fixture
def model():
    import torch

    torch.manual_seed(0)
    return SemSegModel.create(1, default_classes(3), base_width=8, levels=3)


@pytest.fixture
def stack_file(tmp_path):
    images = np.random.default_rng(0).integers(0, 4000, (4, 64, 80)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", images, photometric="minisblack")  # a z-stack as Fiji saves it
    return tmp_path / "stack.tif"


def test_one_multipage_tiff_holds_what_the_folder_of_maps_holds(tmp_path, model, stack_file):
    folder = plan_folder_prediction(model, stack_file, tmp_path / "maps", CPU, uncertainty=True, probabilities=True)
    assert len(folder.run()) == 4
    # Beside the images' file is where the person wants the maps of a stack file.
    one = plan_folder_prediction(model, stack_file, tmp_path / "labels.tif", CPU, uncertainty=True,
                                 probabilities=True)
    assert len(one.run()) == 4
    names = read_stack(stack_file).names
    assert sorted(p.name for p in tmp_path.glob("labels*.tif")) == [
        "labels.tif", "labels_probabilities.tif", "labels_uncertainty.tif"]
    for suffix, shape in (("", (4, 64, 80)), ("_uncertainty", (4, 64, 80)), ("_probabilities", (4, 3, 64, 80))):
        pages = tifffile.imread(tmp_path / f"labels{suffix}.tif")
        assert pages.shape == shape
        for k, name in enumerate(names):
            assert np.array_equal(pages[k], tifffile.imread(tmp_path / "maps" / f"{name}{suffix}.tif"))
    with tifffile.TiffFile(tmp_path / "labels.tif") as tif:
        assert tif.pages[0].description == predict_folder.WRITTEN_BY and len(tif.series) == 1
    # Read back as labels of the stack, with the model's classes from the classes.csv beside it.
    labels = read_labels(tmp_path / "labels.tif", read_stack(stack_file))
    assert labels.classes == model.classes and labels.labels.min() >= 1
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left


def test_the_images_and_foreign_files_are_never_replaced_by_one_file(tmp_path, model, stack_file):
    before = stack_file.read_bytes()
    with pytest.raises(InputError, match="overwritten by their own label maps"):
        plan_folder_prediction(model, stack_file, stack_file, CPU, overwrite=True)
    with pytest.raises(InputError, match="overwritten by their own label maps"):
        plan_folder_prediction(model, stack_file, tmp_path / "stack.tif", CPU, uncertainty=True, overwrite=True)
    (tmp_path / "x_uncertainty.tif").write_bytes(before)
    with pytest.raises(InputError, match="overwritten by their own label maps"):  # nor as a companion file
        plan_folder_prediction(model, tmp_path / "x_uncertainty.tif", tmp_path / "x.tif", CPU, uncertainty=True,
                               overwrite=True)
    assert (tmp_path / "x_uncertainty.tif").read_bytes() == before
    assert stack_file.read_bytes() == before
    tifffile.imwrite(tmp_path / "painted.tif", np.ones((4, 64, 80), np.uint8), photometric="minisblack")  # by a person
    with pytest.raises(InputError, match="painted.tif already exist"):
        plan_folder_prediction(model, stack_file, tmp_path / "painted.tif", CPU)
    plan_folder_prediction(model, stack_file, tmp_path / "labels.tif", CPU).run()
    plan_folder_prediction(model, stack_file, tmp_path / "labels.tif", CPU).run()  # its own file is replaced
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", np.zeros((64, 80), np.uint16))
    with pytest.raises(InputError, match="input folder"):  # it would be read as an image next time
        plan_folder_prediction(model, folder, folder / "labels.tif", CPU)


def test_a_stopped_run_into_one_file_writes_nothing_into_a_folder_keeps_its_maps(tmp_path, model, stack_file):
    stop = {"after": 2}

    def should_stop():
        stop["after"] -= 1
        return stop["after"] < 0

    assert plan_folder_prediction(model, stack_file, tmp_path / "out" / "labels.tif", CPU,
                                  uncertainty=True).run(should_stop=should_stop) == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["classes.csv"]  # no partial stack, no temporary file
    stop["after"] = 2
    assert len(plan_folder_prediction(model, stack_file, tmp_path / "maps", CPU).run(should_stop=should_stop)) == 2
    assert len(list((tmp_path / "maps").glob("stack_*.tif"))) == 2


def test_a_large_stack_file_is_written_as_bigtiff(tmp_path, model, stack_file, monkeypatch):
    small = plan_folder_prediction(model, stack_file, tmp_path / "small.tif", CPU)
    small.run()
    monkeypatch.setattr(predict_folder, "BIGTIFF_BYTES", 4 * 64 * 80 - 1)  # the label stack's size, less a byte
    plan_folder_prediction(model, stack_file, tmp_path / "big.tif", CPU).run()
    with tifffile.TiffFile(tmp_path / "small.tif") as small, tifffile.TiffFile(tmp_path / "big.tif") as big:
        assert not small.is_bigtiff and big.is_bigtiff
        assert np.array_equal(small.asarray(), big.asarray())


def test_a_classes_csv_of_the_same_classes_is_left_as_the_person_wrote_it(tmp_path, model, stack_file):
    mine = [ClassInfo(c.value, c.name, (9, 9, 9)) for c in model.classes]  # their own colours
    write_classes_csv(tmp_path / "out" / "classes.csv", mine)
    before = (tmp_path / "out" / "classes.csv").read_bytes()
    plan_folder_prediction(model, stack_file, tmp_path / "out" / "labels.tif", CPU).run()
    assert (tmp_path / "out" / "classes.csv").read_bytes() == before
    assert read_classes_csv(tmp_path / "out" / "classes.csv") == mine


def test_semseg_predict_writes_one_multipage_tiff_when_out_names_one(tmp_path, model, stack_file, capsys):
    from SemSegLib import cli

    model.save(tmp_path / "m.pt")
    assert cli.main(["predict", "--images", str(stack_file), "--model", str(tmp_path / "m.pt"), "--out",
                     str(tmp_path / "maps" / "stack_labels.tif"), "--device", "cpu"]) == 0
    assert "4 label maps written to one multi-page TIFF" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["classes.csv", "stack_labels.tif"]
    assert tifffile.imread(tmp_path / "maps" / "stack_labels.tif").shape == (4, 64, 80)


def test_a_folder_of_fields_of_different_sizes_is_segmented_image_by_image(tmp_path, model):
    """A plate reader's or a slide's fields often differ in size: each gets the map it gets alone. One stack file
    cannot hold them, a field of another channel count is refused, and a stack read whole (a volume in Slicer)
    still wants one size."""
    from SemSegLib.lazy_stack import open_stack
    from SemSegLib.prediction import predict_image

    rng = np.random.default_rng(1)
    sizes = [(48, 64), (70, 40), (33, 90)]
    fields = tmp_path / "fields"
    fields.mkdir()
    for i, (h, w) in enumerate(sizes):
        tifffile.imwrite(fields / f"field_{i + 1}.tif", rng.integers(0, 4000, (h, w)).astype(np.uint16))
    with pytest.raises(InputError, match=r"fields: the images differ in size \(33x90, 48x64, 70x40\), and one "
                                         r"multi-page TIFF .* Give a folder for the maps instead of maps.tif"):
        plan_folder_prediction(model, fields, tmp_path / "maps.tif", CPU)
    plan = plan_folder_prediction(model, fields, tmp_path / "maps", CPU, uncertainty=True)
    assert len(plan.run()) == 3
    for i, size in enumerate(sizes):
        alone = predict_image(model, tifffile.imread(fields / f"field_{i + 1}.tif")[None], CPU)
        assert alone.labels.shape == size
        assert np.array_equal(tifffile.imread(tmp_path / "maps" / f"field_{i + 1}.tif"), alone.labels)
        assert np.array_equal(tifffile.imread(tmp_path / "maps" / f"field_{i + 1}_uncertainty.tif"), alone.uncertainty)
    assert not (tmp_path / "maps.tif").exists()
    # The maps read back as labels of the fields, a map per field; a label stack file cannot be theirs.
    opened = open_stack(fields, one_size=False)
    assert not opened.one_size and [opened.image_size(i) for i in range(3)] == sizes
    labels = read_labels(tmp_path / "maps", opened)
    assert [lab.shape for lab in labels.labels] == sizes and labels.classes == model.classes
    tifffile.imwrite(tmp_path / "pages.tif", np.ones((3, 48, 64), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match="pages.tif: a label stack file holds maps of one size, but the images"):
        read_labels(tmp_path / "pages.tif", opened)
    tifffile.imwrite(tmp_path / "maps" / "field_2.tif", np.ones((70, 41), np.uint8))
    with pytest.raises(InputError, match=r"field_2.tif: label image is \(70, 41\) but its image field_2 is 70x40"):
        read_labels(tmp_path / "maps", opened)
    # A stack read whole, as Slicer loads a volume, has one size: the fields are refused there, naming them.
    with pytest.raises(InputError, match=r"must have the same height, width and channels. field_1.tif is 48x64x1ch "
                                         r"but field_2.tif: 70x40x1ch; field_3.tif: 33x90x1ch"):
        read_stack(fields)
    tifffile.imwrite(fields / "field_4.tif", np.zeros((20, 20, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError, match=r"same number of channels. field_1.tif is 48x64x1ch but field_4.tif: "
                                         r"20x20x3ch"):
        plan_folder_prediction(model, fields, tmp_path / "maps2", CPU)
    assert not (tmp_path / "maps2").exists()
