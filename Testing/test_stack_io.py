import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image
from SemSegLib import cli
from SemSegLib.classes import ClassInfo, default_classes, read_classes_csv, write_classes_csv
from SemSegLib.errors import InputError
from SemSegLib.lazy_stack import open_stack
from SemSegLib.model_file import SemSegModel
from SemSegLib.stack_io import check_output_dir, read_image, read_labels, read_stack, write_tiff


def _write(folder, name, arr):
    folder.mkdir(exist_ok=True)
    tifffile.imwrite(folder / name, arr)


def test_natural_order_and_names(tmp_path):
    for n in (10, 2, 1):
        _write(tmp_path, f"img_{n}.tif", np.full((8, 9), n, np.uint8))
    stack = read_stack(tmp_path)
    assert stack.names == ["img_1", "img_2", "img_10"]
    assert stack.shape == (3, 1, 8, 9)
    assert [int(stack.images[i, 0, 0, 0]) for i in range(3)] == [1, 2, 10]


def test_png_and_16bit_and_float(tmp_path):
    Image.fromarray(np.full((5, 6), 7, np.uint8)).save(tmp_path / "a_1.png")
    _write(tmp_path, "a_2.tif", np.full((5, 6), 40000, np.uint16))
    stack = read_stack(tmp_path)
    assert stack.images.dtype == np.uint16 and stack.images[1, 0, 0, 0] == 40000 and stack.images[0, 0, 0, 0] == 7
    f = tmp_path / "f"
    _write(f, "x.tif", np.random.rand(5, 6).astype(np.float32))
    assert read_stack(f).images.dtype == np.float32
    alpha = tmp_path / "alpha"
    alpha.mkdir()
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6)
    Image.fromarray(np.stack([gray, np.full_like(gray, 255)], -1), "LA").save(alpha / "g.png")
    stack = read_stack(alpha)  # one gray channel, not a second channel of alpha
    assert stack.shape == (1, 1, 5, 6) and np.array_equal(stack.images[0, 0], gray)


def test_multipage_gray_and_rgb(tmp_path):
    pages = np.arange(4 * 6 * 7, dtype=np.uint16).reshape(4, 6, 7)
    tifffile.imwrite(tmp_path / "stack.tif", pages, photometric="minisblack")
    stack = read_stack(tmp_path / "stack.tif")
    assert stack.shape == (4, 1, 6, 7) and np.array_equal(stack.images[2, 0], pages[2])
    rgb = np.random.default_rng(0).integers(0, 255, (3, 6, 7, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    s = read_stack(tmp_path / "rgb.tif")
    assert s.shape == (3, 3, 6, 7) and np.array_equal(s.images[1, 2], rgb[1, :, :, 2])


def test_rgb_folder_is_three_channels(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    _write(tmp_path, "c1.tif", rgb)
    s = read_stack(tmp_path)
    assert s.shape == (1, 3, 10, 12) and np.array_equal(s.images[0, 1], rgb[:, :, 1])


def test_a_stack_says_whether_its_channels_are_a_picture_s_red_green_and_blue(tmp_path):
    """Samples of a pixel (S; a PNG's or a TIFF's RGB) make a picture, a channel axis (C) a microscope's channels."""
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (6, 7, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([picture, picture]), photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(picture, -1, 0), photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "cells.ome.tif", np.moveaxis(np.stack([picture, picture]), -1, 0),
                     metadata={"axes": "CZYX"})
    tifffile.imwrite(tmp_path / "hyper.tif", np.moveaxis(np.stack([picture, picture]), -1, 1), imagej=True,
                     metadata={"axes": "ZCYX"})
    (tmp_path / "pngs").mkdir()
    Image.fromarray(picture).save(tmp_path / "pngs" / "a.png")
    (tmp_path / "gray").mkdir()
    Image.fromarray(picture[..., 0]).save(tmp_path / "gray" / "a.png")
    said = {name: read_stack(tmp_path / name) for name in ("rgb.tif", "planar.tif", "cells.ome.tif", "hyper.tif",
                                                           "pngs", "gray")}
    assert {name: (s.shape[1], s.rgb) for name, s in said.items()} == {
        "rgb.tif": (3, True), "planar.tif": (3, True), "cells.ome.tif": (3, False), "hyper.tif": (3, False),
        "pngs": (3, True), "gray": (1, False)}
    assert not read_stack(tmp_path / "rgb.tif", channel_axis=-1).rgb  # the person's word: channels


def test_mismatched_sizes_name_the_files_before_any_pixels_are_read(tmp_path, monkeypatch):
    from SemSegLib import stack_io

    _write(tmp_path, "img_1.tif", np.zeros((8, 8), np.uint8))
    _write(tmp_path, "img_2.tif", np.zeros((8, 8), np.uint8))
    _write(tmp_path, "img_3.tif", np.zeros((9, 8), np.uint8))
    monkeypatch.setattr(stack_io, "_read_file", lambda path: pytest.fail(f"{path} read"))  # headers only
    for read in (read_stack, open_stack):
        with pytest.raises(InputError, match=r"img_3\.tif: 9x8") as e:
            read(tmp_path)
        assert "img_1.tif is 8x8" in str(e.value)


def test_a_multipage_tiff_opened_lazily_reads_each_page_when_it_is_used(tmp_path):
    from SemSegLib.lazy_stack import LazyPages

    rng = np.random.default_rng(0)
    gray = rng.random((4, 6, 7)).astype(np.float32)
    gray[2, 1, 1] = np.inf
    tifffile.imwrite(tmp_path / "gray.tif", gray, photometric="minisblack")
    rgba = rng.integers(0, 255, (3, 6, 7, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    opened = open_stack(tmp_path / "gray.tif")
    assert isinstance(opened.images, LazyPages) and opened.shape == (4, 1, 6, 7)
    assert opened.names == [f"gray_{i:04d}" for i in (1, 2, 3, 4)]
    assert np.array_equal(opened.images[3], gray[3][None])
    with pytest.raises(InputError, match=r"gray.tif: NaN or infinite pixel values in page 3 \(1 pixels\)"):
        opened.images[2]  # when it is used: `read_stack` refuses the whole file at once
    opened = open_stack(tmp_path / "rgba.tif")
    eager = read_stack(tmp_path / "rgba.tif")
    assert isinstance(opened.images, LazyPages) and opened.shape == eager.shape == (3, 3, 6, 7)
    assert all(np.array_equal(opened.images[i], eager.images[i]) for i in range(3))
    planar = np.moveaxis(rgba[..., :3], -1, 1)  # (3, 3, 6, 7): pages of planar RGB
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    opened = open_stack(tmp_path / "planar.tif")
    assert isinstance(opened.images, LazyPages) and np.array_equal(opened.images[2], planar[2])
    tifffile.imwrite(tmp_path / "one.tif", planar[0], photometric="rgb", planarconfig="separate")
    assert isinstance(open_stack(tmp_path / "one.tif").images, np.ndarray)  # one page, one image: read whole


def test_a_stack_file_says_which_of_its_series_were_left_out(tmp_path, capsys):
    # An OME-TIFF of several positions keeps each as a series; SemSeg reads the first and says what it left out.
    rng = np.random.default_rng(0)
    positions = rng.integers(0, 255, (3, 4, 16, 16), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "plate.ome.tif", ome=True) as tif:
        for position in positions:
            tif.write(position, metadata={"axes": "ZYX"})
    for opened in (open_stack(tmp_path / "plate.ome.tif"), read_stack(tmp_path / "plate.ome.tif")):
        assert np.array_equal(np.stack([opened.images[i][0] for i in range(len(opened))]), positions[0])
        assert opened.note.startswith("plate.ome.tif holds 3 image series; SemSeg read the first (4 x 16 x 16, ZYX) "
                                      "and left out 2: 4 x 16 x 16 (ZYX); 4 x 16 x 16 (ZYX).")
    with tifffile.TiffWriter(tmp_path / "ragged.tif") as tif:  # pages of two sizes: a series each
        tif.write(positions[0, 0])
        tif.write(positions[0, 0, :8])
    assert "left out 1: 8 x 16 (YX)" in read_stack(tmp_path / "ragged.tif").note
    assert read_stack(tmp_path / "plate.ome.tif", channel_axis=0).note != ""
    tifffile.imwrite(tmp_path / "one.tif", positions[0], photometric="minisblack")
    assert open_stack(tmp_path / "one.tif").note == read_stack(tmp_path / "one.tif").note == ""
    # A folder's files of several series: the first of each is read, and the files are named.
    (tmp_path / "wells").mkdir()
    for well in ("A1", "A2"):
        with tifffile.TiffWriter(tmp_path / "wells" / f"{well}.ome.tif", ome=True) as tif:
            for position in positions[:, 0]:
                tif.write(position, metadata={"axes": "YX"})
    tifffile.imwrite(tmp_path / "wells" / "B1.tif", positions[0, 0])
    for opened in (open_stack(tmp_path / "wells"), read_stack(tmp_path / "wells")):
        assert len(opened) == 3 and np.array_equal(opened.images[0][0], positions[0, 0])
        assert opened.note.startswith("2 file(s) of wells hold several image series, and SemSeg read the first of "
                                      "each: A1.ome.tif (3 series), A2.ome.tif (3 series).")
    _write(tmp_path / "plain", "a.tif", positions[0, 0])
    assert open_stack(tmp_path / "plain").note == read_stack(tmp_path / "plain").note == ""
    model = tmp_path / "m.pt"
    SemSegModel.create(1, default_classes(2), base_width=8, levels=3).save(model)
    assert cli.main(["predict", "--images", str(tmp_path / "plate.ome.tif"), "--model", str(model), "--out",
                     str(tmp_path / "maps"), "--device", "cpu"]) == 0
    assert "warning: plate.ome.tif holds 3 image series" in capsys.readouterr().err
    assert len(list((tmp_path / "maps").glob("plate*.tif"))) == 4


def test_labels_of_several_series_say_which_were_left_out(tmp_path, capsys):
    # Label files and label stacks of several series: the first is read, as for images, and the rest named.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 16, 16), dtype=np.uint8)
    for k, image in enumerate(images):
        _write(tmp_path / "images", f"img_{k + 1}.tif", image)
    stack = read_stack(tmp_path / "images")
    maps = np.ones((3, 16, 16), np.uint8)
    maps[:, 4:9, 4:9] = 2
    (tmp_path / "labels").mkdir()
    with tifffile.TiffWriter(tmp_path / "labels" / "img_1.tif") as tif:  # a thumbnail after the map
        tif.write(maps[0])
        tif.write(maps[0, :4, :4])
    _write(tmp_path / "labels", "img_2.tif", maps[1])
    read = read_labels(tmp_path / "labels", stack)
    assert read.labeled_names == ["img_1", "img_2"] and np.array_equal(read.labels[:2], maps[:2])
    assert read.note == ("1 file(s) of labels hold several label series, and SemSeg read the first of each: "
                         "img_1.tif (2 series). If the labels are in another series, save that series as the label "
                         "file.")
    with tifffile.TiffWriter(tmp_path / "labels.tif") as tif:
        tif.write(maps, photometric="minisblack")
        tif.write(maps[0, :4], photometric="minisblack")
    read = read_labels(tmp_path / "labels.tif", stack)
    assert np.array_equal(read.labels, maps)
    assert read.note.startswith("labels.tif holds 2 label series; SemSeg read the first, a page per image, and left "
                                "out 1.")
    tifffile.imwrite(tmp_path / "one.tif", maps, photometric="minisblack")
    assert read_labels(tmp_path / "one.tif", stack).note == ""
    (tmp_path / "labels" / "img_1.tif").unlink()
    assert read_labels(tmp_path / "labels", stack).note == ""
    # The command line says it as a warning.
    assert cli.main(["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels.tif"),
                     "--model", str(tmp_path / "m.pt"), "--iterations", "1", "--device", "cpu", "--start", "none"]) == 0
    assert "warning: labels.tif holds 2 label series" in capsys.readouterr().err


def test_a_tiff_s_axes_say_which_number_the_images_and_which_are_channels(tmp_path):
    """An OME z-stack of 2 channels is CZYX: 5 images of 2 channels, not 2 images of 5; a Fiji hyperstack TZCYX
    is every (t, z) image; planar RGB is one image. Read whole or page by page, the same images."""
    rng = np.random.default_rng(0)
    czyx = rng.integers(0, 4000, (2, 5, 6, 7), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "cells.ome.tif", czyx, metadata={"axes": "CZYX"})
    tzcyx = rng.integers(0, 255, (3, 4, 2, 6, 7), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "movie.tif", tzcyx, imagej=True, metadata={"axes": "TZCYX"})
    planar = rng.integers(0, 255, (3, 6, 7), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    for read in (read_stack, open_stack):
        stack = read(tmp_path / "cells.ome.tif")
        assert stack.shape == (5, 2, 6, 7) and stack.names[:2] == ["cells_0001", "cells_0002"]  # not cells.ome_
        assert all(np.array_equal(stack.images[k], czyx[:, k]) for k in range(5))
        stack = read(tmp_path / "movie.tif")
        assert stack.shape == (12, 2, 6, 7)
        assert stack.names[:5] == [f"movie_t0001_z000{z}" for z in (1, 2, 3, 4)] + ["movie_t0002_z0001"]
        assert all(np.array_equal(stack.images[4 * t + z], tzcyx[t, z]) for t in range(3) for z in range(4))
        stack = read(tmp_path / "planar.tif")
        assert stack.shape == (1, 3, 6, 7) and np.array_equal(stack.images[0], planar)
    tifffile.imwrite(tmp_path / "odd.tif", np.zeros((2, 3, 4, 6, 7), np.uint8), photometric="minisblack")  # QQQYX
    with pytest.raises(InputError, match=r"odd.tif: TIFF has shape \(2, 3, 4, 6, 7\) \(axes QQQYX\).*hyperstack"):
        read_stack(tmp_path / "odd.tif")
    # Axes that say nothing (QQYX): the person names the channel axis; the last two others are the image.
    six = rng.integers(0, 255, (2, 6, 7, 6), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "six.tif", six, photometric="minisblack")
    for read in (read_stack, open_stack):
        stack = read(tmp_path / "six.tif", channel_axis=3)
        assert stack.shape == (2, 6, 6, 7) and np.array_equal(stack.images[1], np.moveaxis(six[1], -1, 0))
    with pytest.raises(InputError, match=r"six.tif: .*channel axis 4 is not one of them.*Give one of 0..3"):
        read_stack(tmp_path / "six.tif", channel_axis=4)
    bad = tzcyx.astype(np.float32)
    bad[1, 2, 1, 3, 3] = np.nan
    tifffile.imwrite(tmp_path / "bad.tif", bad, imagej=True, metadata={"axes": "TZCYX"})
    for read in (read_stack, lambda path: open_stack(path).images[6]):
        with pytest.raises(InputError, match=r"bad.tif: NaN or infinite pixel values in bad_t0002_z0003"):
            read(tmp_path / "bad.tif")


def test_a_folder_file_s_axes_say_whether_it_is_one_image(tmp_path):
    """In a stack folder each file is one image: a file whose axes say it holds a z-stack is refused (by shape it
    would be an image of 5 channels), 10 channels that say C are 10 channels (by shape: refused), and a numpy
    array saved without axes (QYX) is read by shape as before."""
    rng = np.random.default_rng(0)
    zyx = rng.integers(0, 255, (2, 5, 12, 14), dtype=np.uint8)
    ten = rng.integers(0, 4000, (2, 10, 12, 14), dtype=np.uint16)
    plain = rng.integers(0, 4000, (2, 5, 12, 14), dtype=np.uint16)
    for folder in ("zyx", "ten", "plain"):
        (tmp_path / folder).mkdir()
    for i in (0, 1):
        tifffile.imwrite(tmp_path / "zyx" / f"img_{i + 1}.tif", zyx[i], imagej=True, metadata={"axes": "ZYX"})
        tifffile.imwrite(tmp_path / "ten" / f"img_{i + 1}.ome.tif", ten[i], metadata={"axes": "CYX"})
        tifffile.imwrite(tmp_path / "plain" / f"img_{i + 1}.tif", plain[i], photometric="minisblack")
    for read in (read_stack, open_stack):
        with pytest.raises(InputError, match=r"img_1.tif: the file holds 5 images \(axes ZYX.*Give this file alone"):
            read(tmp_path / "zyx")
        stack = read(tmp_path / "ten")
        assert stack.shape == (2, 10, 12, 14) and np.array_equal(stack.images[1], ten[1])
        stack = read(tmp_path / "plain")
        assert stack.shape == (2, 5, 12, 14) and np.array_equal(stack.images[1], plain[1])


def test_a_folder_opened_lazily_reads_each_image_when_it_is_used(tmp_path, monkeypatch):
    from SemSegLib import lazy_stack

    rng = np.random.default_rng(0)
    _write(tmp_path, "img_1.tif", rng.integers(0, 60000, (10, 12, 3), dtype=np.uint16))
    Image.fromarray(rng.integers(0, 255, (10, 12, 4), dtype=np.uint8), "RGBA").save(tmp_path / "img_2.png")
    nan = np.ones((10, 12, 3), np.float32)
    nan[4, 4, 1] = np.nan
    tifffile.imwrite(tmp_path / "img_10.tif", nan, photometric="rgb")
    read = []
    monkeypatch.setattr(lazy_stack, "read_image", lambda path, axis: read.append(path.name) or read_image(path, axis))
    stack = open_stack(tmp_path)
    assert read == [] and stack.names == ["img_1", "img_2", "img_10"] and stack.shape == (3, 3, 10, 12)
    eager = read_stack(tmp_path / "img_1.tif").images[0]
    assert np.array_equal(stack.images[0], eager) and read == ["img_1.tif"]
    assert np.array_equal(stack.images[1], np.asarray(Image.open(tmp_path / "img_2.png"))[..., :3].transpose(2, 0, 1))
    with pytest.raises(InputError, match=r"NaN or infinite pixel values in img_10.tif \(1 pixels\)"):
        stack.images[2]


def test_corrupt_file_is_named(tmp_path):
    _write(tmp_path, "img_1.tif", np.zeros((8, 8), np.uint8))
    (tmp_path / "img_2.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match="img_2.tif: cannot read"):
        read_stack(tmp_path)


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_stack(tmp_path / "nope")
    with pytest.raises(InputError, match="no .tif"):
        read_stack(tmp_path)


def test_compressed_tiffs_are_read_and_without_imagecodecs_the_error_says_to_install_it(tmp_path):
    """Microscopes write LZW or zstd TIFFs; tifffile decodes them only with imagecodecs (a declared dependency)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 4000, (3, 12, 14), dtype=np.uint16)
    (tmp_path / "lzw").mkdir()
    for i, image in enumerate(images):
        tifffile.imwrite(tmp_path / "lzw" / f"img_{i + 1}.tif", image, compression="lzw")
    tifffile.imwrite(tmp_path / "zstd.tif", images, compression="zstd", photometric="minisblack")
    for read in (read_stack, open_stack):
        for source in (tmp_path / "lzw", tmp_path / "zstd.tif"):
            assert np.array_equal(np.stack([read(source).images[i][0] for i in range(3)]), images)
    # A hand-made environment without it: blocked before tifffile is imported, in a process of its own.
    code = ("import sys; sys.modules['imagecodecs'] = None\n"
            "from SemSegLib.errors import InputError\nfrom SemSegLib.stack_io import read_stack\n"
            "from SemSegLib.lazy_stack import open_stack\n"
            "for read in (lambda: read_stack(sys.argv[1]), lambda: open_stack(sys.argv[2]).images[1]):\n"
            "    try:\n        read()\n    except InputError as e:\n        print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "lzw"), str(tmp_path / "zstd.tif")],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == 2 and all("needs the imagecodecs package, which is not installed" in line for line in out)
    assert "img_1.tif: this image is compressed" in out[0] and "zstd.tif: page 2 is compressed" in out[1]


def test_labels_partial_and_bad(tmp_path):
    imgs, labs = tmp_path / "images", tmp_path / "labels"
    for i in (1, 2, 3):
        _write(imgs, f"img_{i}.tif", np.zeros((8, 8), np.uint8))
    lab = np.zeros((8, 8), np.uint8)
    lab[2, 3] = 2
    _write(labs, "img_2.tif", lab)
    stack = read_stack(imgs)
    ls = read_labels(labs, stack)
    assert ls.labeled_names == ["img_2"] and ls.labels[1, 2, 3] == 2 and not ls.labels[0].any()
    assert [c.value for c in ls.classes] == [1, 2]
    write_classes_csv(labs / "classes.csv", [ClassInfo(1, "a", (1, 2, 3))])
    with pytest.raises(InputError, match="label value 2 found in img_2"):
        read_labels(labs, stack)
    (labs / "classes.csv").unlink()
    _write(labs, "img_3.tif", np.zeros((7, 8), np.uint8))
    with pytest.raises(InputError, match=r"img_3.tif: label image is \(7, 8\)"):
        read_labels(labs, stack)
    colours = np.zeros((8, 8, 3), np.uint8)
    colours[2, 3] = (255, 0, 0)  # a class's colour, as annotation tools export masks
    Image.fromarray(colours).save(labs / "img_3.png")
    (labs / "img_3.tif").unlink()
    with pytest.raises(InputError, match=r"img_3.png: this label file is a colour \(RGB\) image, not class values"):
        read_labels(labs, stack)


def test_labels_may_be_one_multipage_tiff_with_a_page_per_image(tmp_path):
    """As napari and Fiji save a label stack: page k labels image k; its classes.csv lies beside it."""
    for i in (1, 2, 3):
        _write(tmp_path / "images", f"img_{i}.tif", np.zeros((8, 9), np.uint8))
    stack = read_stack(tmp_path / "images")
    pages = np.zeros((3, 8, 9), np.uint8)
    pages[1, 2, 3], pages[1, 4, 4] = 1, 2
    tifffile.imwrite(tmp_path / "labels.tif", pages, photometric="minisblack")
    write_classes_csv(tmp_path / "classes.csv", [ClassInfo(1, "a", (1, 2, 3)), ClassInfo(2, "b", (3, 2, 1))])
    ls = read_labels(tmp_path / "labels.tif", stack)
    assert np.array_equal(ls.labels, pages) and ls.labeled_names == ["img_2"]
    assert [c.name for c in ls.classes] == ["a", "b"]
    tifffile.imwrite(tmp_path / "two.tif", pages[:2], photometric="minisblack")
    with pytest.raises(InputError, match=r"two.tif: the label stack has shape \(2, 8, 9\), but there are 3 images "
                                         r"of 8x9 .*one 2D page per image"):
        read_labels(tmp_path / "two.tif", stack)
    # Maps saved from numpy keep its types: int64, or floats of whole numbers, hold the same classes.
    for dtype in (np.int64, np.int32, np.float32, bool):
        tifffile.imwrite(tmp_path / "typed.tif", pages.astype(dtype), photometric="minisblack")
        assert np.array_equal(read_labels(tmp_path / "typed.tif", stack).labels, pages.astype(dtype))
    for bad, shown in ((pages * 0.5, "holds 0.5 (not a whole number). Is it an image or a probability map"),
                       (pages.astype(np.int32) - 1, "holds -1"), (pages.astype(np.int32) * 40000, "holds 80000")):
        tifffile.imwrite(tmp_path / "bad.tif", bad, photometric="minisblack")
        with pytest.raises(InputError, match=rf"bad.tif: label pixels must be class values 0..65535 \(0 = "
                                             rf"unlabeled\), but this .* map {re.escape(shown)}"):
            read_labels(tmp_path / "bad.tif", stack)
    (tmp_path / "notes.txt").write_text("not labels")
    with pytest.raises(InputError, match=r"notes.txt: labels must be a folder .* or a multi-page TIFF"):
        read_labels(tmp_path / "notes.txt", stack)


def test_nan_or_infinite_pixels_are_refused_with_the_files_named(tmp_path):
    good = np.ones((8, 8), np.float32)
    bad = good.copy()
    bad[1, 1:4] = np.nan
    bad[5, 5] = np.inf
    for i, arr in enumerate((good, bad, good), start=1):
        _write(tmp_path / "images", f"img_{i}.tif", arr)
    with pytest.raises(InputError, match=r"images: NaN or infinite pixel values in img_2.tif \(4 pixels\)\. "
                                         "Replace them"):
        read_stack(tmp_path / "images")
    tifffile.imwrite(tmp_path / "pages.tif", np.stack([good, good, bad]), photometric="minisblack")
    with pytest.raises(InputError, match=r"pages.tif: NaN or infinite pixel values in page 3 \(4 pixels\)"):
        read_stack(tmp_path / "pages.tif")
    tifffile.imwrite(tmp_path / "pages.tif", np.stack([good, good]), photometric="minisblack")
    assert read_stack(tmp_path / "pages.tif").images.shape == (2, 1, 8, 8)


def test_masks_are_not_taken_for_hundreds_of_classes(tmp_path):
    imgs, labs = tmp_path / "images", tmp_path / "labels"
    for i in (1, 2):
        _write(imgs, f"img_{i}.tif", np.zeros((8, 8), np.uint8))
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 255  # a 0/255 mask: 255 classes, 254 never painted, if taken at its word
    _write(labs, "img_2.tif", mask)
    stack = read_stack(imgs)
    with pytest.raises(InputError, match=r"labels: label value 255 found in img_2\. .*Convert 0/255 masks"):
        read_labels(labs, stack)
    mask[mask > 0] = 64  # up to 64 classes need no classes.csv
    _write(labs, "img_2.tif", mask)
    assert len(read_labels(labs, stack).classes) == 64
    # Classes the caller knows (a model's, the panel's): a value beyond them is refused with the caller's advice.
    with pytest.raises(InputError, match=r"value 64 found in img_2, but there are only 2 classes \(the model's\)\. "
                                         r"Label maps hold class values 1\.\.2 \(0 = unlabeled\)\. Retry\."):
        read_labels(labs, stack, classes=[ClassInfo(1, "a", (0, 0, 0)), ClassInfo(2, "b", (1, 1, 1))],
                    classes_from="the model's", advice="Retry.")


def test_classes_csv_roundtrip_and_errors(tmp_path):
    classes = [ClassInfo(1, "collagen", (200, 10, 10)), ClassInfo(2, "cells, nuclei", (1, 2, 3))]
    write_classes_csv(tmp_path / "c.csv", classes)
    assert read_classes_csv(tmp_path / "c.csv") == classes
    (tmp_path / "bad.csv").write_text("value,name,r,g,b\n1,a,1,2,3\n3,b,1,2,3\n")
    with pytest.raises(InputError, match="1..K with no gaps"):
        read_classes_csv(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("value,name,r,g,b\n\n1,a,1,2,3\ntwo,b,1,2,3\n")
    with pytest.raises(InputError, match=r"bad2.csv: line 4 \['two', 'b', '1', '2', '3'\] is not 'value,name,r,g,b'"):
        read_classes_csv(tmp_path / "bad2.csv")
    (tmp_path / "twice.csv").write_text("value,name,r,g,b\n1,cells,1,2,3\n2,class 3,1,2,3\n3,,1,2,3\n")
    with pytest.raises(InputError, match="twice.csv: the classes of values 2 and 3 are both named 'class 3'"):
        read_classes_csv(tmp_path / "twice.csv")
    # As spreadsheets save it in many locales: semicolons (a name may hold a comma), or tabs; with or without header.
    (tmp_path / "semicolons.csv").write_text("value;name;r;g;b\n1;collagen;200;10;10\n2;cells, nuclei;1;2;3\n")
    (tmp_path / "tabs.csv").write_text("1\tcollagen\t200\t10\t10\n2\tcells, nuclei\t1\t2\t3\n")
    (tmp_path / "no_header.csv").write_text('1;collagen;200;10;10\n2;cells, nuclei;1;2;3\n')
    for name in ("semicolons.csv", "tabs.csv", "no_header.csv"):
        assert read_classes_csv(tmp_path / name) == classes


def test_reading_does_not_modify_inputs_and_outputs_refuse_input_folders(tmp_path):
    _write(tmp_path / "images", "img_1.tif", np.ones((8, 8), np.uint8))
    before = (tmp_path / "images" / "img_1.tif").read_bytes()
    read_stack(tmp_path / "images")
    assert (tmp_path / "images" / "img_1.tif").read_bytes() == before
    with pytest.raises(InputError, match="input folder"):
        check_output_dir(tmp_path / "images", [tmp_path / "images"])
    out = check_output_dir(tmp_path / "out", [tmp_path / "images"])
    write_tiff(out / "x.tif", np.ones((4, 4), np.uint8))
    assert [p.name for p in out.iterdir()] == ["x.tif"]  # no temp files left behind


def test_kept_strokes_are_found_for_the_same_images_the_newest_first():
    import os

    from SemSegLib import kept_strokes
    from SemSegLib.classes import default_classes

    images = np.random.default_rng(0).integers(0, 255, (3, 1, 8, 8), dtype=np.uint8)
    labels = np.zeros((3, 8, 8), np.uint16)
    labels[0, 1, 1], labels[2, 3, 3] = 1, 2
    older, newer = kept_strokes.new_folder("stack"), kept_strokes.new_folder("stack")
    assert older != newer  # the same stack name in the same second: two folders
    for folder in (older, newer):
        kept_strokes.keep_strokes(folder, images, ["a", "b", "c"], labels, default_classes(2))
    os.utime(older, (1, 1))
    assert sorted(p.name for p in newer.iterdir()) == ["a.tif", "c.tif", "classes.csv", "images.json"]
    assert kept_strokes.kept_folders(images, ["a", "b", "c"]) == [newer, older]
    assert kept_strokes.kept_folders(images, ["a", "b", "c"], exclude=newer) == [older]
    # Other images of the same names (microscopes name files alike), or images without c: not these strokes.
    other = images.copy()
    other[1, 0, 7, 7] += 1
    assert kept_strokes.kept_folders(other, ["a", "b", "c"]) == []
    assert kept_strokes.kept_folders(images[:2], ["a", "b"]) == []


def test_the_autosave_folder_keeps_recent_and_newest_models_and_strokes_and_nothing_but_its_own_goes():
    import os
    import time

    from SemSegLib import kept_strokes
    from SemSegLib.classes import default_classes

    images = np.zeros((2, 1, 8, 8), np.uint8)
    labels = np.ones((2, 8, 8), np.uint16)
    day, now = 86400, time.time()
    ages = [0, 1, 29, 31, 40, 60, 90, 100, 200, 300, 400, 500]  # days; the 11th and 12th newest are old
    models, strokes = [], []
    for age in ages:
        model, folder = kept_strokes.new_model_file(), kept_strokes.new_folder("stack")
        model.write_bytes(b"model")
        kept_strokes.keep_strokes(folder, images, ["a", "b"], labels, default_classes(2))
        for path in (model, folder):
            os.utime(path, (now - age * day, now - age * day))
        models.append(model)
        strokes.append(folder)
    (strokes[-1] / "my notes.txt").write_text("not SemSeg's")  # a strokes folder with a person's file in it
    os.utime(strokes[-1], (now - 500 * day, now - 500 * day))
    removed = kept_strokes.prune(now)
    assert sorted(removed) == sorted([models[10], models[11], strokes[10]])
    assert all(p.exists() for p in models[:10] + strokes[:10])
    assert [p.name for p in strokes[-1].iterdir()] == ["my notes.txt"]  # the person's file stays, and its folder
    kept_strokes.KEEP_NEWEST, before = 1, kept_strokes.KEEP_NEWEST
    try:  # beyond the newest, what was written in the last KEEP_DAYS days stays (ages 1 and 29)
        assert sorted(kept_strokes.prune(now)) == sorted(models[3:10] + strokes[3:10])
        assert all(p.exists() for p in models[:3] + strokes[:3])
    finally:
        kept_strokes.KEEP_NEWEST = before


def test_a_stack_is_named_after_its_folder_or_its_file_without_suffixes(tmp_path):
    from SemSegLib.stack_io import stack_name

    (tmp_path / "heart.v2").mkdir()
    assert stack_name(tmp_path / "heart.v2") == "heart.v2"  # a folder's name keeps its dots
    assert [stack_name(tmp_path / f) for f in ("cells.ome.tif", "cells.OME.TIFF", "cells.tif", ".ome.tif")] == [
        "cells", "cells", "cells", ".ome"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_files_are_written_with_the_permissions_an_ordinary_write_gives(tmp_path):
    from SemSegLib.atomic import write_bytes_atomic

    old = os.umask(0o027)  # a lab's shared disk: the group reads, others do not
    try:
        write_bytes_atomic(tmp_path / "new.pt", b"x")
        write_tiff(tmp_path / "map.tif", np.ones((4, 4), np.uint8))
        assert (tmp_path / "new.pt").stat().st_mode & 0o777 == 0o640  # not the temp file's 0o600
        assert (tmp_path / "map.tif").stat().st_mode & 0o777 == 0o640
        (tmp_path / "map.tif").chmod(0o664)  # a file the person opened to their group keeps that when replaced
        write_tiff(tmp_path / "map.tif", np.zeros((4, 4), np.uint8))
        assert (tmp_path / "map.tif").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="one temporary folder per user on Windows")
def test_the_autosave_folder_is_the_users_own_in_a_shared_temporary_folder():
    from SemSegLib import kept_strokes
    from SemSegLib.classes import default_classes

    folder = kept_strokes.new_folder("stack")
    kept_strokes.keep_strokes(folder, np.zeros((1, 1, 4, 4), np.uint8), ["a"], np.ones((1, 4, 4)), default_classes(2))
    assert folder.parent.name == f"SemSeg-{os.getuid()}"  # another person's SemSeg folder is never in the way
    assert folder.parent.stat().st_mode & 0o777 == 0o700  # and they cannot read this one's strokes or models
    assert kept_strokes.new_model_file().parent == folder.parent


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="one temporary folder per user on Windows")
def test_an_autosave_folder_someone_else_made_is_not_written_to(monkeypatch):
    from SemSegLib import kept_strokes

    ours = kept_strokes.new_model_file().parent
    uid = os.getuid()
    # Another user's process meeting this folder under its own name (made there before it came).
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)
    monkeypatch.setattr(kept_strokes, "autosave_folder", lambda: ours)
    with pytest.raises(OSError, match="belongs to another user"):
        kept_strokes.new_model_file()


def test_images_of_any_real_pixel_type_load_as_types_a_volume_can_hold(tmp_path):
    """Integer images of 32 or 64 bits load as they are; 16-bit floats, which VTK (a Slicer volume) has no type for,
    as 32-bit floats; complex pixels are refused, naming the file."""
    rng = np.random.default_rng(0)
    for dtype, read_as in ((np.int32, np.int32), (np.uint32, np.uint32), (np.int64, np.int64),
                           (np.float16, np.float32), (np.int8, np.int8)):
        folder = tmp_path / np.dtype(dtype).name
        image = rng.integers(0, 100, (6, 7)).astype(dtype)
        _write(folder, "img_1.tif", image)
        stack = read_stack(folder)
        assert stack.images.dtype == read_as and np.array_equal(stack.images[0, 0], image.astype(read_as))
    _write(tmp_path / "complex", "img_1.tif", np.ones((6, 7), np.complex64))
    with pytest.raises(InputError, match="img_1.tif: pixel type complex64 is not supported; save the image as uint8"):
        read_stack(tmp_path / "complex")


def test_a_folder_is_read_image_by_image_into_the_stack_with_its_progress(tmp_path, monkeypatch):
    """`on_image` hears each image as it is read and may stop the reading; files of mixed pixel types give the type
    that holds them all, as numpy would; a file that changed after its header was read is named."""
    from SemSegLib import stack_io

    rng = np.random.default_rng(0)
    first, second = rng.integers(0, 200, (5, 6), dtype=np.uint8), rng.integers(-300, 300, (5, 6), dtype=np.int16)
    _write(tmp_path, "img_1.tif", first)
    _write(tmp_path, "img_2.tif", second)
    _write(tmp_path, "img_3.tif", first)
    heard = []
    stack = read_stack(tmp_path, on_image=lambda read, total: heard.append((read, total)))
    assert heard == [(1, 3), (2, 3), (3, 3)]
    assert stack.images.dtype == np.int16 and np.array_equal(stack.images[:, 0], np.stack([first, second, first]))

    class Stop(Exception):
        pass

    def stop_after_two(read, total):
        if read == 2:
            raise Stop
    with pytest.raises(Stop):
        read_stack(tmp_path, on_image=stop_after_two)

    # The headers say 5x6, then img_2 is read as something else (it was replaced between the two reads).
    real = stack_io._read_file
    monkeypatch.setattr(stack_io, "_read_file", lambda path: (np.zeros((7, 6), np.uint8), "YX", 1)
                        if path.name == "img_2.tif" else real(path))
    with pytest.raises(InputError, match=r"img_1.tif is 5x6x1ch but img_2.tif: 7x6x1ch"):
        read_stack(tmp_path)
