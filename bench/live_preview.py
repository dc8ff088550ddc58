"""What a person sees while a training runs: the preview's mean IoU over time, and what it costs.

The sparse benchmark's strokes (3 painted images, `--strokes` per class) train one first model with the default
settings and an iteration budget; the training shows two images as it runs (training.TrainPreview, as the
panel's Train does for the slice in view): the first painted image and the first of the 10 new ones. Per
preview: seconds since the training was called, iteration (0: the forest of the strokes, before any step), mean
IoU of the preview on each, and the seconds it took. At the end: the trained model's own prediction of the same
two images (forest, class-prior correction and all), which the panel writes when the training ends. The previews
do not change the training (an iteration budget gives the same weights), so their cost is the time they took.
`--no-forest`: no forest of the strokes first, as before session 76; `--both` runs the two one after the other, in
one process (the second starts with everything imported: time a first *Train* with each alone, in a fresh process).
`--round-from M.pt`: instead, the correction round `sparse.py` runs from that first model (its strokes and seed's
simulated corrections), with the start model's map of the two images as `start_*_iou`.

    python bench/live_preview.py [--data ../shared/data] [--sets isbi2012-em,dsb2018-fluo] [--seed N]
                                 [--iterations 750] [--every 10] [--no-forest | --both] [--round-from M.pt]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "SemSegModule"))
sys.path.insert(0, str(HERE))

from sparse import load_set, make_strokes, split  # noqa: E402


def run(folder: Path, seed: int, iterations: int, every: float, strokes: int, forest: bool,
        round_from: str | None = None) -> dict:
    from SemSegLib import training
    from SemSegLib.metrics import evaluate
    from SemSegLib.model_file import SemSegModel
    from SemSegLib.prediction import predict_image
    from SemSegLib.simulate import simulate_corrections

    stack, ref, classes = load_set(folder)
    labeled, test = split(len(stack.images))
    labels = make_strokes(ref, len(classes), labeled, seed, strokes)
    shown = [labeled[0], test[0]]
    names = [c.name for c in classes]

    def iou(pred: np.ndarray, i: int) -> float:
        return evaluate(pred[None], ref[[i]], names).mean_iou

    init, started = None, {}
    if round_from:  # sparse.py's correction round
        init = SemSegModel.load(round_from)
        rng = np.random.default_rng(seed + 1)
        for i in labeled:
            labels[i] = simulate_corrections(ref[i], predict_image(init, stack.images[i]).labels, labels[i],
                                             len(classes), 5, rng=rng)
        started = {f"start_{kind}_iou": round(iou(predict_image(init, stack.images[i]).labels, i), 4)
                   for kind, i in zip(("painted", "new"), shown)}

    rows, costs = [], []
    real = {(training, "first_map"): training.first_map,
            (training.PreviewModel, "labels"): training.PreviewModel.labels}

    def timed(real):
        def call(*args):
            t = time.perf_counter()
            out = real(*args)
            costs.append(time.perf_counter() - t)
            return out
        return call

    for (owner, name), function in real.items():
        setattr(owner, name, timed(function))
    start = time.perf_counter()

    def show(iteration: int, previews: np.ndarray) -> None:
        rows.append({"seconds": round(time.perf_counter() - start, 1), "iteration": iteration,
                     "painted_iou": round(iou(previews[0], shown[0]), 4),
                     "new_iou": round(iou(previews[1], shown[1]), 4), "preview_s": round(costs[-1], 3)})
        print(json.dumps(rows[-1]), flush=True)

    config = training.TrainConfig(seed=seed, iterations=iterations)
    preview = training.TrainPreview(stack.images[shown], show, every, forest)
    try:
        result = training.train(stack.images, labels, classes, config, init_model=init, names=stack.names,
                                preview=preview)
    finally:
        for (owner, name), function in real.items():
            setattr(owner, name, function)
    trained = time.perf_counter() - start
    final = [predict_image(result.model, stack.images[i]) for i in shown]
    return {"set": folder.name, "seed": seed, "forest_first": forest, "round_from": round_from, **started,
            "images": {"painted": shown[0], "new": shown[1]},
            "previews": rows, "preview_seconds_total": round(sum(costs), 2), "train_s": round(trained, 1),
            "train_loop_s": round(result.seconds, 1), "predict_shown_s": round(sum(p.seconds for p in final), 2),
            "final_painted_iou": round(iou(final[0].labels, shown[0]), 4),
            "final_new_iou": round(iou(final[1].labels, shown[1]), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--sets", default="isbi2012-em,dsb2018-fluo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=750)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between previews (the panel's default)")
    ap.add_argument("--strokes", type=int, default=10)
    ap.add_argument("--no-forest", action="store_true", help="no forest of the strokes first (before session 76)")
    ap.add_argument("--both", action="store_true", help="with the forest, then without, one after the other")
    ap.add_argument("--round-from", help="a first model of the set (one set only): its correction round instead")
    args = ap.parse_args()
    for name in args.sets.split(","):
        for forest in ([True, False] if args.both else [not args.no_forest]):
            out = run(Path(args.data) / name, args.seed, args.iterations, args.every, args.strokes, forest,
                      args.round_from)
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
