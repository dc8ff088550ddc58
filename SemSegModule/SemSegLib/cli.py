"""The `semseg` command line: train, predict, evaluate, simulate, suggest, info, demo.

Exit codes: 0 ok, 2 bad input (message on stderr), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from .errors import InputError, TrainingDiverged

# What `predict` and `simulate` write into their TIFFs' ImageDescription: a rerun into the same folder may replace
# these, and nothing else without --overwrite (stack_io.check_overwrite).
SIMULATE = "semseg simulate"
OVERWRITE_HELP = "replace files of these names that an earlier run of this command did not write"
DEMO_MARK = "semseg-demo.txt"


def _at_least(minimum: float, kind: type = int, strictly: bool = False):
    """An argparse type: a number of `kind` at least (or, `strictly`, above) `minimum`, else a usage error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            number = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {number}") from None
        if value < minimum or (strictly and value == minimum):
            raise argparse.ArgumentTypeError(f"{text} must be {'above' if strictly else 'at least'} {minimum:g}")
        return value

    return parse


def _parse_indices(text: str | None, n: int) -> list[int]:
    """'1,11,21' (1-based image numbers) -> 0-based indices; default: 3 images evenly spread."""
    if not text:
        return sorted({int(round(v)) for v in np.linspace(0, n - 1, min(3, n) + 2)[1:-1]}) or [0]
    try:
        idx = [int(t) - 1 for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise InputError(f"--images {text!r}: give 1-based image numbers separated by commas, e.g. 1,11,21.") from e
    bad = [i + 1 for i in idx if not 0 <= i < n]
    if bad:
        raise InputError(f"--images: image numbers {bad} are outside 1..{n}.")
    return idx


def _told(read):
    """A stack or labels as read (`ImageStack`, `LabelSet`), its `note` said first (the series SemSeg left out)."""
    if read.note:
        print(f"warning: {read.note}", file=sys.stderr)
    return read


def cmd_train(args: argparse.Namespace) -> None:
    from .lazy_stack import open_stack
    from .log_progress import progress_bar
    from .model_file import SemSegModel
    from .pixel_forest import LINE_CLASS_WEIGHT
    from .stack_io import read_labels
    from .training import TrainConfig, train

    stack = _told(open_stack(args.images, args.channel_axis, one_size=False))  # fields may differ in size
    init = SemSegModel.load(args.init) if args.init else None
    if init is not None:
        init.check_stack(stack.channels, str(args.images))
    named = bool(args.classes) or (Path(args.labels) / "classes.csv").exists()
    if init is not None and not named:  # labels without a classes.csv are in the model's classes
        labels = _told(read_labels(args.labels, stack, classes=init.classes, classes_from=f"the model's, {args.init}",
                                   advice="Fine-tuning keeps the model's classes: train a new model when they change."))
    else:
        labels = _told(read_labels(args.labels, stack, args.classes))
    if init is not None and [c.name for c in labels.classes] != [c.name for c in init.classes]:
        raise InputError(f"{args.classes or Path(args.labels) / 'classes.csv'}: the classes "
                         f"{', '.join(c.name for c in labels.classes)} are not the model's "
                         f"({', '.join(c.name for c in init.classes)}, {args.init}). Fine-tuning keeps each class "
                         "in its place: give the model's classes in the same order, or train a new model without "
                         "--init.")
    if len(labels.classes) < 2:
        where = args.classes or (Path(args.labels) / "classes.csv" if named else f"{args.labels} (its largest value)")
        named_ones = ", ".join(c.name for c in labels.classes) or "none"
        raise InputError(f"{where}: only one class, {named_ones}. A segmentation needs at least two: label the "
                         "background (or another class) too, as value 2, and name both in classes.csv.")
    missing = [c.name for c in labels.classes if not any((lab == c.value).any() for lab in labels.labels)]
    if missing:
        raise InputError(f"{args.labels}: no labeled pixel of class(es) {', '.join(missing)}. Paint at least one "
                         "stroke of each class, or leave the class out of classes.csv.")
    config = TrainConfig(seed=args.seed, device=args.device, correction_weight=args.correction_weight,
                         mixed_precision=not args.float32)
    if args.no_prior_correction:
        config.prior_correction_images = 0
    if args.round_network_alone:
        config.round_networks = 1
    if args.no_line_thinning:
        config.thin_line_classes = False
    if args.no_forest:
        config.forest_weight = 0.0
    config.starting_point = args.start
    if args.iterations is not None:
        config.iterations, config.seconds = args.iterations, None
    elif args.seconds is not None:
        config.seconds = args.seconds
    total = config.iterations or int(config.seconds)
    unit = "it" if config.iterations else "s"
    bar = progress_bar(total, unit, "train")

    def progress(p) -> None:
        bar.n = p.iteration if config.iterations else min(int(p.seconds), total)
        known = {"left": f"{p.remaining_seconds:.0f}s", "loss": f"{p.loss:.4f}"}  # before the first step: nan
        bar.set_postfix(it=p.iteration, **{k: v for k, v in known.items() if "nan" not in v})
        if p.message:
            bar.write(p.message)

    n_labeled = sum(int((lab > 0).sum()) for lab in labels.labels)
    painted = sum(bool(lab.any()) for lab in labels.labels)  # files of only 0 do not count
    print(f"training on {painted} labeled image(s), {n_labeled} labeled pixels, "
          f"{len(labels.classes)} classes", file=sys.stderr)
    images, label_maps, fields = _training_arrays(stack, labels.labels)
    result = train(images, label_maps, labels.classes, config, init_model=init, names=stack.names,
                   progress=progress)
    bar.close()
    if fields:  # the model's image size is the mirrored one (its labeled masks are on it): `semseg info` says so
        result.model.history[-1]["mirrored_fields"] = fields
    replaced = ", replacing the earlier file" if Path(args.model).exists() else ""
    result.model.save(args.model)
    networks = 1 + len(result.model.earlier_rounds)
    first = (f"; the first, trained from the shipped start, keeps {result.model.first_network_share:g}"
             if result.model.first_network_share > 0 else "")
    rounds = f"; predicts with {networks} networks (this round's and earlier ones{first})" if networks > 1 else ""
    lines = result.model.line_class_names()
    lines = f"; painted as 1-pixel lines, predicted as lines: {', '.join(lines)}" if lines else ""
    forest = ""
    if result.model.forest is not None:
        weight = result.model.forest_weight
        taught = " and the networks' confident pixels" if result.model.history[-1].get("forest_taught_pixels") else ""
        line_weight = min(weight, LINE_CLASS_WEIGHT)
        of_lines = f" ({line_weight:g} of a line class)" if lines and line_weight < weight else ""
        forest = f"; a random forest on the same labels{taught} gets {weight:g} of each prediction{of_lines}"
    start = result.model.history[-1].get("starting_point")
    start = (f"; started from the shipped {start['name']} network (its classes agree with {start['agreement']:.0%} "
             "of the strokes)" if start else "")
    weights = result.model.history[-1].get("class_weights")
    if weights:
        each = ", ".join(f"{c.name} {w:.2g}" for c, w in zip(labels.classes, weights))
        weights = f"; the loss weighs the classes {each} (the labels are dense: each patch brings its image's mix)"
    else:
        weights = ""
    print(f"model written to {args.model}{replaced} ({result.iterations} iterations, {result.seconds:.1f} s on "
          f"{result.device}, final loss {result.final_loss:.4f}{start}{weights}{rounds}{lines}{forest})")
    if result.warning:
        print(f"warning: {result.warning}", file=sys.stderr)


MIRRORED_PIXELS_WARNING = 4  # times the fields' own pixels


def _training_arrays(stack, labels) -> tuple[np.ndarray, np.ndarray, str | None]:
    """The (N, C, H, W) images and (N, H, W) labels a training samples from, and for images of different sizes,
    mirrored out to the largest (`mixed_sizes`, which is said), the range of their own sizes."""
    from .mixed_sizes import mirrored_to_one_size, size_range

    if isinstance(stack.images, np.ndarray):  # a stack file read whole
        return stack.images, labels, None
    if stack.one_size:
        return _read_into_one_array(stack), labels, None
    images = [stack.images[i] for i in range(len(stack))]  # each read (and checked) once
    images, labels = mirrored_to_one_size(images, labels)
    sizes = [stack.image_size(i) for i in range(len(stack))]
    print(f"the images differ in size ({size_range(sizes)}): for the training each is mirrored out to "
          f"{images.shape[2]}x{images.shape[3]}, the added pixels unlabeled; a prediction sees each image as it is",
          file=sys.stderr)
    held, real = images[:, 0].size, sum(h * w for h, w in sizes)
    if held > MIRRORED_PIXELS_WARNING * real:
        # One large field among small ones makes every field as large, and the training holds them all (pseudo-labels
        # need every image): say so before memory runs out, with what to do.
        print(f"warning: mirrored out, the training holds {held / real:.0f} times the fields' pixels ("
              f"{(images.nbytes + labels.nbytes) / 1e9:.1f} GB of images and labels); if memory runs out, cut the "
              "largest fields into pieces of about the others' size", file=sys.stderr)
    return images, labels, size_range(sizes)


def _read_into_one_array(stack) -> np.ndarray:
    """The (N, C, H, W) images of a stack of one size, each read (and checked) once, straight into the array: a list of
    them and their np.stack would hold the stack twice at once, and the training holds no other copy of it."""
    out = None
    for i in range(len(stack)):
        image = stack.images[i]
        if out is None:
            out = np.empty((len(stack), *image.shape), image.dtype)
        elif np.result_type(out.dtype, image.dtype) != out.dtype:  # a file of a wider type, as np.stack would
            out = out.astype(np.result_type(out.dtype, image.dtype))
        out[i] = image
    return out


def cmd_predict(args: argparse.Namespace) -> None:
    from .atomic import write_bytes_atomic
    from .log_progress import progress_bar
    from .model_file import SemSegModel
    from .predict_folder import plan_folder_prediction
    from .prediction import PredictConfig

    model = SemSegModel.load(args.model)
    config = PredictConfig(tta=args.tta, device=args.device, mixed_precision=not args.float32,
                           unsure_pieces=not args.keep_unsure_pieces)
    if args.suggest is None and (args.top is not None or args.labels or args.no_spread):
        raise InputError("--top, --labels and --no-spread say where to paint next: give them with --suggest FILE.json "
                         "(or leave them out).")
    if args.suggest is not None:
        _check_suggestions_file(Path(args.suggest), args.overwrite)
    plan = plan_folder_prediction(model, args.images, args.out, config, args.uncertainty, args.probabilities,
                                  args.overwrite, channel_axis=args.channel_axis)
    _told(plan.stack)
    ranking = None
    if args.suggest is not None:  # the labels read, and the JSON's folder made, before the first map is written
        ranking = _suggestion_ranking(args, model, plan.stack, 5 if args.top is None else args.top)
        try:
            Path(args.suggest).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"--suggest {args.suggest}: its folder cannot be made ({e.strerror}); name a file in "
                             "a folder you can write to.") from e
    with progress_bar(len(plan.stack), "img", "predict") as bar:
        times = plan.run(progress=lambda done, total, seconds: bar.update(1),
                         each=None if ranking is None else lambda i, pred: ranking.add(i, pred.uncertainty))
    into = f"one multi-page TIFF, {plan.out}" if plan.one_file else str(plan.out)
    maps = "1 label map" if len(times) == 1 else f"{len(times)} label maps"
    print(f"{maps} written to {into} ({np.mean(times):.2f} s per image)")
    if ranking is not None:
        result = ranking.result()
        write_bytes_atomic(Path(args.suggest), (json.dumps(result, indent=2) + "\n").encode())
        first = result["images"][0] if result["images"] else None
        said = f": first image {first['number']}, {first['name']} (uncertainty {first['mean_uncertainty']:.2f})" \
            if first else ""
        print(f"where to paint next written to {args.suggest}{said}")


def _suggestion_ranking(args: argparse.Namespace, model, stack, top: int):
    """`suggest`'s ranking of `stack` (`SuggestionRanking`), with the strokes of `--labels` if given."""
    from .suggest import SuggestionRanking

    return SuggestionRanking.of(model, stack.images, stack.names, top, spread=not args.no_spread,
                                labels=_painted_labels(args, model, stack))


def _painted_labels(args: argparse.Namespace, model, stack) -> np.ndarray | None:
    """The strokes of `--labels` (where not to send the person), in the model's classes; None without it."""
    from .stack_io import read_labels

    if not args.labels:
        return None
    return _told(read_labels(args.labels, stack, classes=model.classes, classes_from=f"the model's, {args.model}",
                             advice="Give the labels this model was trained with.")).labels


def _check_suggestions_file(path: Path, overwrite: bool) -> None:
    """`predict --suggest`'s JSON: a .json file (never one of the TIFFs it reads or writes), which replaces only a
    suggestions file (one `suggest` or `predict --suggest` wrote) unless `overwrite`."""
    if path.suffix.lower() != ".json" or path.is_dir():
        raise InputError(f"--suggest {path}: name a .json file for where to paint next (suggestions.json, say).")
    if path.exists() and not overwrite and not _is_suggestions_file(path):
        raise InputError(f"--suggest {path}: the file exists and is not where-to-paint suggestions SemSeg wrote; name "
                         "another file, or add --overwrite to replace it.")


def _is_suggestions_file(path: Path) -> bool:
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(content, dict) and {"images", "stack_mean_uncertainty"} <= set(content)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .lazy_stack import open_stack
    from .metrics import evaluate
    from .stack_io import read_labels, reference_maps

    reference = _told(open_stack(args.reference, one_size=False))  # the fields of a collection may differ in size
    ref = reference_maps(reference)
    classes, csv = _reference_classes(args, ref, reference.names)  # the reference's, whatever the prediction holds
    pred = _told(read_labels(args.pred, reference, classes=classes,
                             classes_from=str(csv) if csv.exists() else "the reference's values",
                             advice="Give the folder of label maps that `semseg predict` wrote.")).labels
    missing = [n for i, n in enumerate(reference.names) if not pred[i].any()]
    if missing:
        raise InputError(f"{args.pred}: no prediction for {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} (same file names as the reference expected).")
    unlabeled = [n for i, n in enumerate(reference.names) if ((pred[i] == 0) & (ref[i] > 0)).any()]
    if unlabeled:  # a map with strokes only (an export of an unpredicted slice, say): its 0s count as wrong
        print(f"warning: {args.pred}: unlabeled (0) pixels in {', '.join(unlabeled[:5])}"
              f"{' ...' if len(unlabeled) > 5 else ''} count as wrong; predict those images to score them fully.",
              file=sys.stderr)
    names = [c.name for c in classes]
    if not args.labels:
        m = evaluate(pred, ref, names)
        print(json.dumps(m.to_dict(), indent=2) if args.json else m.format_table())
        return
    groups = _images_with_and_without_strokes(args, reference, classes)
    scores = {key: evaluate([pred[i] for i in idx], [ref[i] for i in idx], names) for key, _, idx in groups if idx}
    if args.json:
        print(json.dumps({key: {"images": [reference.names[i] for i in idx], **scores[key].to_dict()}
                          for key, _, idx in groups if idx}, indent=2))
        return
    for key, what, idx in groups:
        print(f"{len(idx)} image{'s' if len(idx) > 1 else ''} {what}:\n{scores[key].format_table()}\n" if idx
              else f"no image {what}\n")


def _images_with_and_without_strokes(args: argparse.Namespace, reference, classes) -> list[tuple[str, str, list[int]]]:
    """`evaluate --labels`: (JSON key, description, indices) of the images without strokes and of those with.
    A painted image's score says how well the model gives back what it was shown; the others', how well it does on
    images new to it (the benchmark's T2), which is what the rest of a stack gets. The strokes may all lie on
    images the reference does not cover (a reference made for a few test images): then every image is new."""
    from .stack_io import find_label_file, read_labels

    folder = Path(args.labels)
    if folder.is_dir() and not any(find_label_file(folder, name) for name in reference.names):
        painted = [False] * len(reference)
    else:
        labels = _told(read_labels(folder, reference, classes=classes, classes_from="the reference's",
                                   advice="Give the strokes the model was trained with.")).labels
        painted = [bool(lab.any()) for lab in labels]
    if not any(painted):
        print(f"note: no image of {args.reference} has strokes in {args.labels}: every image scored is new to the "
              "model.", file=sys.stderr)
    new, shown = [i for i, p in enumerate(painted) if not p], [i for i, p in enumerate(painted) if p]
    return [("without_strokes", "without strokes (new to the model)", new),
            ("with_strokes", "with strokes (the model was shown part of them)", shown)]


def _reference_classes(args: argparse.Namespace, ref, names: list[str]) -> tuple[list, Path]:
    """The classes of reference maps `ref` (`evaluate`, `simulate`): their classes.csv (`--classes`, else beside the
    reference folder), whose values the reference must keep to, else 1..its largest value; and that csv's path."""
    from .classes import read_classes_csv
    from .stack_io import check_class_values, implicit_classes

    csv = Path(args.classes) if args.classes else Path(args.reference).parent / "classes.csv"
    if not csv.exists():
        return implicit_classes(ref, names, args.reference), csv
    classes = read_classes_csv(csv)
    check_class_values(ref, len(classes), names, args.reference, str(csv), "Fix the reference or the classes file.")
    return classes, csv


def cmd_simulate(args: argparse.Namespace) -> None:
    from .classes import write_classes_csv
    from .lazy_stack import open_stack
    from .simulate import simulate_corrections, simulate_strokes
    from .stack_io import check_output_dir, check_overwrite, label_dtype, read_labels, reference_maps, write_tiff

    reference = _told(open_stack(args.reference, one_size=False))  # as `evaluate`: fields may differ in size
    ref = reference_maps(reference)
    classes, csv = _reference_classes(args, ref, reference.names)
    k = len(classes)
    out = check_output_dir(args.out, [args.reference, args.labels, args.correct_from])
    rng = np.random.default_rng(args.seed)
    if args.correct_from:
        if not args.labels:
            raise InputError("--correct-from needs --labels OLD_LABELS_DIR (the strokes to add corrections to).")
        old = _told(read_labels(args.labels, reference, csv if csv.exists() else None)).labels
        pred = _told(read_labels(args.correct_from, reference, csv if csv.exists() else None)).labels
        indices = [i for i in range(len(ref)) if old[i].any()]
        new = {i: simulate_corrections(ref[i], pred[i], old[i], k, args.strokes, rng=rng) for i in indices}
    else:
        indices = _parse_indices(args.images, len(ref))
        new = {i: simulate_strokes(ref[i], k, args.strokes, rng=rng) for i in indices}
    check_overwrite([out / f"{reference.names[i]}.tif" for i in new], SIMULATE, args.overwrite)
    for i, lab in new.items():
        write_tiff(out / f"{reference.names[i]}.tif", lab.astype(label_dtype(k)), SIMULATE)
    if csv.exists():
        write_classes_csv(out / "classes.csv", classes)
    total = sum(int((v > 0).sum()) for v in new.values())
    print(f"{len(new)} label image(s) written to {out} ({total} labeled pixels)")


def cmd_suggest(args: argparse.Namespace) -> None:
    from .lazy_stack import open_stack
    from .model_file import SemSegModel
    from .prediction import PredictConfig
    from .suggest import suggest_slices

    model = SemSegModel.load(args.model)
    stack = _told(open_stack(args.images, args.channel_axis, one_size=False))  # as `predict`: an image at a time
    model.check_stack(stack.channels, str(args.images))
    result = suggest_slices(model, stack.images, stack.names, top=args.top, config=PredictConfig(device=args.device),
                            spread=not args.no_spread, labels=_painted_labels(args, model, stack))
    print(json.dumps(result, indent=2))


def cmd_info(args: argparse.Namespace) -> None:
    from .model_file import SemSegModel
    from .model_info import info_lines, model_info

    info = model_info(SemSegModel.load(args.model))
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(args.model)
    for line in info_lines(info):
        print(f"  {line}")


def cmd_demo(args: argparse.Namespace) -> None:
    """The whole loop on the bundled sample: simulate strokes -> train -> predict -> evaluate."""
    from .metrics import evaluate
    from .prediction import PredictConfig, predict_stack
    from .sample_data import SAMPLE_CLASSES, write_sample_stack
    from .simulate import simulate_strokes
    from .stack_io import read_stack, write_tiff
    from .training import TrainConfig, train

    out = Path(args.out)
    # The demo rewrites sample/, strokes/, predictions/, model.pt and overview.png: only in a folder of its own.
    if out.is_dir() and any(out.iterdir()) and not (out / DEMO_MARK).is_file():
        raise InputError(f"{out}: this folder holds other files, and the demo writes sample/, strokes/, predictions/, "
                         "model.pt and overview.png into its folder. Give --out a new or empty folder.")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARK).write_text("This folder is semseg demo's; it rewrites its files here.\n")
    sample = write_sample_stack(out / "sample", seed=args.seed)
    print(f"sample stack written to {sample} (images/, reference/, classes.csv)")
    if args.sample_only:
        return
    stack, ref = read_stack(sample / "images"), read_stack(sample / "reference").images[:, 0]
    rng = np.random.default_rng(args.seed)
    labels = np.zeros_like(ref, dtype=np.uint16)
    painted = _parse_indices(None, len(stack))
    for i in painted:
        labels[i] = simulate_strokes(ref[i], len(SAMPLE_CLASSES), 10, rng=rng)
        write_tiff(out / "strokes" / f"{stack.names[i]}.tif", labels[i].astype(np.uint8))
    print(f"simulated 10 strokes per class on images {[i + 1 for i in painted]} "
          f"({int((labels > 0).sum())} labeled pixels, {100 * (labels > 0).mean():.2f}% of the stack)")
    result = train(stack.images, labels, SAMPLE_CLASSES, TrainConfig(seconds=args.seconds, seed=args.seed),
                   names=stack.names)
    result.model.save(out / "model.pt")
    print(f"trained {result.iterations} iterations in {result.seconds:.1f} s -> {out / 'model.pt'}")
    if result.warning:
        print(f"warning: {result.warning}", file=sys.stderr)
    pred = np.zeros_like(ref)
    uncertainty = {}
    start = time.perf_counter()
    for i, p in predict_stack(result.model, stack.images, PredictConfig()):
        pred[i], uncertainty[i] = p.labels, p.uncertainty
        write_tiff(out / "predictions" / f"{stack.names[i]}.tif", p.labels)
    print(f"predicted {len(stack)} images in {time.perf_counter() - start:.1f} s -> {out / 'predictions'}")
    unpainted = [i for i in range(len(stack)) if i not in painted]
    m = evaluate(pred[unpainted], ref[unpainted], [c.name for c in SAMPLE_CLASSES])
    print("metrics on the images without strokes:")
    print(m.format_table())
    from .figures import overview_figure

    shown = [painted[0], unpainted[0]]
    overview_figure(out / "overview.png", [
        {"title": f"{stack.names[i]}", "image": stack.images[i, 0], "strokes": labels[i] if i in painted else None,
         "prediction": pred[i], "uncertainty": uncertainty[i]} for i in shown], SAMPLE_CLASSES)
    print(f"overview figure: {out / 'overview.png'}")


FLOAT32_HELP = ("run the network in float32 (default: float16 on CUDA; on a CPU with AMX units, predictions in "
                "bfloat16, which is faster there)")


IMAGES_HELP = "folder of images (they may differ in size), or a multi-page TIFF"
DEVICE_HELP = "auto, cpu, cuda or mps (default auto)"
MODEL_HELP = "the model file (.pt) `semseg train` or the panel wrote"
SEED_HELP = "of the patches drawn and the network's first weights (default 0): the same seed, the same model"
REFERENCE_HELP = "folder of reference label maps (same file names as the images; 0 = unlabeled), or a multi-page TIFF"
REFERENCE_CLASSES_HELP = "classes.csv of the reference (default: one beside the reference, else 1..its largest value)"

CHANNEL_AXIS_HELP = ("the axis of each image file's array (0-based, as tifffile reads it) that holds its channels, "
                     "for files whose axes do not say it; the last two other axes are the image, any other number "
                     "the images")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semseg", description="Sparse-label U-Net segmentation of image stacks.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on painted strokes")
    t.add_argument("--images", required=True,
                   help="folder of ordered images (they may differ in size), or a multi-page TIFF")
    t.add_argument("--channel-axis", type=int, help=CHANNEL_AXIS_HELP)
    t.add_argument("--labels", required=True, help="folder of sparse label images (same file names; 0 = unlabeled), "
                                                   "or a multi-page TIFF with a page per image")
    t.add_argument("--model", required=True, help="output model file (.pt)")
    t.add_argument("--init", help="start from this model (fine-tuning / correction round)")
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=_at_least(0, float, strictly=True),
                        help="training budget in seconds (default 180; it also ends after 750 iterations)")
    budget.add_argument("--iterations", type=_at_least(1), help="training budget in iterations (deterministic)")
    t.add_argument("--classes", help="classes.csv (value,name,r,g,b); default: LABELS/classes.csv or values present")
    t.add_argument("--device", default="auto", help=DEVICE_HELP)
    t.add_argument("--seed", type=_at_least(0), default=0, help=SEED_HELP)
    t.add_argument("--float32", action="store_true", help=FLOAT32_HELP)
    t.add_argument("--correction-weight", type=_at_least(0, float), default=1.0,
                   help="weight of pixels labeled since the --init model was trained (default 1: see bench/RESULTS.md)")
    t.add_argument("--no-prior-correction", action="store_true",
                   help="predict with the class mix of the strokes instead of the stack's (README: How it works)")
    t.add_argument("--round-network-alone", action="store_true",
                   help="with --init: predict with the retrained network alone, not averaged with the --init "
                        "model's prediction (README: How it works)")
    t.add_argument("--no-line-thinning", action="store_true",
                   help="predict a class traced as 1-pixel lines as wide as the network draws it "
                        "(README: How it works)")
    t.add_argument("--no-forest", action="store_true",
                   help="predict with the network(s) alone, without the random forest's share (README: How it works)")
    # No `choices`: the names live with the engine (starting_points.py), which says which exist when given another.
    t.add_argument("--start", default="auto",
                   help="a first training's starting network: auto (default: a shipped pretrained one when its "
                        "classes agree with the strokes), none (random weights) or a shipped one by name, "
                        "fluorescent-nuclei or em-membranes (README: How it works)")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="label every pixel of a stack (read one image at a time)")
    pr.add_argument("--images", required=True, help=IMAGES_HELP)
    pr.add_argument("--channel-axis", type=int, help=CHANNEL_AXIS_HELP)
    pr.add_argument("--model", required=True, help=MODEL_HELP)
    pr.add_argument("--out", required=True,
                    help="output folder for <name>.tif label maps, or a .tif file: one multi-page TIFF with a page "
                         "per image, in the images' order (with --uncertainty / --probabilities also "
                         "<file>_uncertainty.tif / <file>_probabilities.tif)")
    pr.add_argument("--probabilities", action="store_true", help="also write <name>_probabilities.tif (float)")
    pr.add_argument("--uncertainty", action="store_true", help="also write <name>_uncertainty.tif (0..1)")
    pr.add_argument("--tta", action="store_true",
                    help="flip test-time augmentation: 4 network passes, about 1.4x the time on a CPU")
    pr.add_argument("--device", default="auto", help=DEVICE_HELP)
    pr.add_argument("--float32", action="store_true", help=FLOAT32_HELP)
    pr.add_argument("--keep-unsure-pieces", action="store_true",
                    help="keep the argmax class in pieces the network is unsure of throughout, and in unsure bumps "
                         "of a thin class off its lines (default: they get each pixel's next likeliest class)")
    pr.add_argument("--suggest", metavar="FILE.json",
                    help="also work out where to paint next, as `semseg suggest` does, from this prediction (no second "
                         "pass over the stack), into this JSON file")
    pr.add_argument("--top", type=_at_least(1), help="with --suggest: how many images (default 5)")
    pr.add_argument("--labels", help="with --suggest: the strokes painted so far (as suggest's --labels)")
    pr.add_argument("--no-spread", action="store_true", help="with --suggest: as suggest's --no-spread")
    pr.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    pr.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="compare label maps with a reference")
    e.add_argument("--pred", required=True, help="folder of label maps (same file names), or a multi-page TIFF")
    e.add_argument("--reference", required=True, help=REFERENCE_HELP)
    e.add_argument("--classes", help=REFERENCE_CLASSES_HELP)
    e.add_argument("--labels", help="the strokes the model was trained with (folder or multi-page TIFF, as train's "
                                    "--labels): score the images without strokes apart from those with")
    e.add_argument("--json", action="store_true", help="print the scores and the confusion matrix as JSON")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("simulate", help="simulate brush strokes (or corrections) from reference labels")
    s.add_argument("--reference", required=True, help=REFERENCE_HELP)
    s.add_argument("--out", required=True, help="folder for the label maps of the strokes (same file names)")
    s.add_argument("--images", help="1-based image numbers, e.g. 1,11,21 (default: 3 evenly spread)")
    s.add_argument("--strokes", type=_at_least(1), default=10, help="strokes per class and image (default 10)")
    s.add_argument("--seed", type=_at_least(0), default=0, help="where the strokes go (default 0)")
    s.add_argument("--classes", help=REFERENCE_CLASSES_HELP)
    s.add_argument("--correct-from", help="prediction folder (or multi-page TIFF): place correction strokes on its "
                                          "largest errors")
    s.add_argument("--labels", help="the existing strokes (folder or multi-page TIFF) the corrections are added to")
    s.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    s.set_defaults(func=cmd_simulate)

    g = sub.add_parser("suggest", help="rank images by uncertainty: where to paint next (JSON)")
    g.add_argument("--images", required=True, help=IMAGES_HELP)
    g.add_argument("--channel-axis", type=int, help=CHANNEL_AXIS_HELP)
    g.add_argument("--model", required=True, help=MODEL_HELP)
    g.add_argument("--top", type=_at_least(1), default=5, help="how many images to suggest (default 5)")
    g.add_argument("--labels", help="folder of the strokes painted so far: an image's uncertainty leaves out what lies "
                                    "near them, and no region is suggested where they lie")
    g.add_argument("--no-spread", action="store_true",
                   help="the most uncertain images wherever they are (default: the most uncertain of each of TOP "
                        "groups: consecutive parts of an ordered stack, else look-alike images)")
    g.add_argument("--device", default="auto", help=DEVICE_HELP)
    g.set_defaults(func=cmd_suggest)

    i = sub.add_parser("info", help="what a model file holds: classes, images, network, its trainings")
    i.add_argument("--model", required=True, help="a model file (.pt)")
    i.add_argument("--json", action="store_true", help="all of it as JSON")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("demo", help="run the whole loop on the bundled sample stack")
    d.add_argument("--out", default="semseg-demo", help="output folder (default ./semseg-demo)")
    d.add_argument("--seconds", type=_at_least(0, float, strictly=True), default=60.0,
                   help="training budget (default 60)")
    d.add_argument("--seed", type=_at_least(0), default=0, help="of the sample, its strokes and the training")
    d.add_argument("--sample-only", action="store_true", help="only write the sample stack")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except InputError as e:
        print(f"semseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:  # not the input's fault, nor a bug to report: the message says what to try
        print(f"semseg {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - report, then exit 1
        traceback.print_exc()
        print(f"semseg {args.command}: internal error (see above); please report it.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
