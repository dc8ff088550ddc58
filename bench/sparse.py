"""Sparse-stroke benchmark: SemSeg U-Net vs an ilastik-style random forest on the same strokes.

Protocol (per set in ../shared/data): 3 images evenly spread get 10 simulated strokes per class (`--strokes`);
train with the default budget; T1 = mean IoU on those 3 images, T2 = on 10 other images. Then one correction round
(5 strokes per class on the largest errors of the labeled images, fine-tuned from the first model).
Each method runs in its own process so its peak memory is its own.

    python bench/sparse.py [--data ../shared/data] [--sets isbi2012-em,dsb2018-fluo] [--seconds S]
                           [--iterations N] [--device cuda] [--control] [--full-labels --no-rf] [--seed N]
                           [--strokes N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "SemSegModule"))
sys.path.insert(0, str(HERE))


def load_set(folder: Path):
    from SemSegLib.classes import read_classes_csv
    from SemSegLib.stack_io import read_stack

    stack = read_stack(folder / "images")
    ref = read_stack(folder / "reference").images[:, 0]
    return stack, ref, read_classes_csv(folder / "classes.csv")


def split(n: int) -> tuple[list[int], list[int]]:
    labeled = [int(round(v)) for v in np.linspace(0, n - 1, 5)[1:-1]]
    rest = [i for i in range(n) if i not in labeled]
    test = [rest[int(round(v))] for v in np.linspace(0, len(rest) - 1, 10)]
    return labeled, test


def make_strokes(ref: np.ndarray, k: int, labeled: list[int], seed: int, per_class: int = 10) -> np.ndarray:
    from SemSegLib.simulate import simulate_strokes

    rng = np.random.default_rng(seed)
    labels = np.zeros(ref.shape, np.uint16)
    for i in labeled:
        labels[i] = simulate_strokes(ref[i], k, per_class, rng=rng)
    return labels


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def miou(pred: dict, ref: np.ndarray, idx: list[int], names: list[str]) -> float:
    from SemSegLib.metrics import evaluate

    return evaluate(np.stack([pred[i] for i in idx]), ref[idx], names).mean_iou


def train_first_model(stack, labels: np.ndarray, classes, config, cache: str | None, key: str,
                      overrides: dict | None = None):
    """train()'s model, or the one cached in `cache` under `key`: an iteration budget is deterministic, so the
    cached model is the one training would give (a seconds budget is never cached)."""
    from SemSegLib.model_file import SemSegModel
    from SemSegLib.training import attach_forest, train

    # The budget is in the name already; other settings change the model.
    # The forest is fit after the network's training and does not change it: cached models get today's.
    changed = "".join(f"_{k}={v}" for k, v in sorted((overrides or {}).items())
                      if k not in ("iterations", "seconds", "device", "forest_weight"))
    cached = Path(cache) / f"{key}_it{config.iterations}{changed}.pt" if cache and config.iterations else None
    if cached is not None and cached.exists():
        model = SemSegModel.load(cached)
        if "line_classes" not in model.history[-1]:  # cached before session 19: the same network, no line classes
            from SemSegLib.line_classes import detect_line_classes

            model.line_classes = detect_line_classes(labels, model.num_classes) if config.thin_line_classes else []
        attach_forest(model, stack.images, labels, config)
        return model
    model = train(stack.images, labels, classes, config, names=stack.names).model
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        model.save(cached)
    return model


def run_unet(folder: str, seconds: float | None, seed: int, overrides: dict, control: bool, cache: str | None,
             queue) -> None:
    from SemSegLib.prediction import PredictConfig, predict_stack
    from SemSegLib.simulate import simulate_corrections
    from SemSegLib.training import TrainConfig, train

    stack, ref, classes = load_set(Path(folder))
    k, names = len(classes), [c.name for c in classes]
    labeled, test = split(len(stack))
    overrides = dict(overrides)
    strokes = overrides.pop("strokes", 10)
    labels = make_strokes(ref, k, labeled, seed, strokes)
    finetune_fraction = overrides.pop("finetune_fraction", 1.0)
    finetune_overrides = overrides.pop("finetune_overrides", {})
    if overrides.pop("full_labels", False):  # the upper bound: the same 3 images, every pixel labeled
        labels = np.zeros_like(labels)
        labels[labeled] = ref[labeled]
    config = TrainConfig(seed=seed, **overrides)
    if seconds is not None:
        config.seconds = seconds
    # The correction round's budget is a fraction of the first round's, in the same unit.
    finetune_budget = ({"seconds": config.seconds * finetune_fraction} if config.iterations is None
                       else {"iterations": int(config.iterations * finetune_fraction)})
    # Studies of the correction round can reuse the first model.
    model = train_first_model(stack, labels, classes, config, cache if finetune_fraction else None,
                              f"{Path(folder).name}_seed{seed}" + (f"_strokes{strokes}" if strokes != 10 else ""),
                              overrides)
    res = argparse.Namespace(model=model, seconds=model.history[-1]["seconds"],
                             iterations=model.history[-1]["iterations"])
    preds, unc, times = {}, {}, []
    for i, p in predict_stack(res.model, stack.images, PredictConfig(), indices=labeled + test):
        preds[i], unc[i] = p.labels, p.uncertainty
        times.append(p.seconds)
    out = {"method": "semseg", "train_s": res.seconds, "iterations": res.iterations,
           "predict_s_per_image": float(np.median(times)),
           "T1": miou(preds, ref, labeled, names), "T2": miou(preds, ref, test, names),
           "labeled_fraction": float((labels[labeled] > 0).mean())}
    out.update(without_prior_correction(res.model, stack.images, ref, labeled, test, names))
    out.update(without_line_thinning(res.model, stack.images, ref, labeled, test, names))
    out.update(without_forest(res.model, stack.images, ref, labeled, test, names))
    if not finetune_fraction:  # first-round studies: no correction round
        out.update({"T1_corrected": float("nan"), "T2_corrected": float("nan"), "finetune_s": 0.0,
                    "finetune_iterations": 0, "correction_pixels": 0, "peak_mb": peak_mb()})
        _send_result(out, preds, unc, labeled, test, queue)
        return
    # One correction round on the labeled images, fine-tuned from the first model.
    rng = np.random.default_rng(seed + 1)
    corrected = labels.copy()
    for i in labeled:
        corrected[i] = simulate_corrections(ref[i], preds[i], labels[i], k, 5, rng=rng)
    finetune = TrainConfig(**{**config.to_dict(), **finetune_budget, **finetune_overrides})
    res2 = train(stack.images, corrected, classes, finetune, init_model=res.model, names=stack.names)
    preds2 = {i: p.labels for i, p in predict_stack(res2.model, stack.images, PredictConfig(), indices=labeled + test)}
    out.update({f"{k}_round": v for k, v in
                without_prior_correction(res2.model, stack.images, ref, labeled, test, names).items()})
    out.update(round_network_alone(res2.model, stack.images, ref, labeled, test, names))
    out.update({f"{k}_round": v for k, v in
                without_line_thinning(res2.model, stack.images, ref, labeled, test, names).items()})
    out.update({f"{k}_round": v for k, v in
                without_forest(res2.model, stack.images, ref, labeled, test, names).items()})
    out.update({"T1_corrected": miou(preds2, ref, labeled, names), "T2_corrected": miou(preds2, ref, test, names),
                "finetune_s": res2.seconds, "finetune_iterations": res2.iterations,
                "correction_pixels": int(((corrected > 0) & (labels == 0)).sum()), "peak_mb": peak_mb()})
    if control:  # the same fine-tuning on the old strokes: what the corrections add beyond more training
        res3 = train(stack.images, labels, classes, finetune, init_model=res.model, names=stack.names)
        preds3 = {i: p.labels for i, p in predict_stack(res3.model, stack.images, PredictConfig(), indices=test)}
        out["T2_control"] = miou(preds3, ref, test, names)
    _send_result(out, preds, unc, labeled, test, queue)


def without_prior_correction(model, images: np.ndarray, ref: np.ndarray, labeled: list[int], test: list[int],
                             names: list[str]) -> dict:
    """T1 / T2 of the same network without its class-prior correction (the ablation, paired in every run)."""
    if model.log_prior_shift is None:
        return {}
    earlier = [dataclasses.replace(m, log_prior_shift=None) for m in model.earlier_rounds]
    return {**paired(model, "no_prior_correction", images, ref, labeled, test, names, log_prior_shift=None,
                     earlier_rounds=earlier),
            "log_prior_shift": [round(float(v), 3) for v in model.log_prior_shift]}


def without_line_thinning(model, images: np.ndarray, ref: np.ndarray, labeled: list[int], test: list[int],
                          names: list[str]) -> dict:
    """T1 / T2 of the same model without thinning its line classes (the ablation, paired in every run)."""
    if not model.line_classes:
        return {}
    return {**paired(model, "no_line_thinning", images, ref, labeled, test, names, line_classes=[]),
            "line_classes": list(model.line_classes)}


def without_forest(model, images: np.ndarray, ref: np.ndarray, labeled: list[int], test: list[int],
                   names: list[str]) -> dict:
    """T1 / T2 of the same model without its random forest in the average (the ablation, paired in every run)."""
    if model.forest is None or not model.forest_weight:
        return {}
    return paired(model, "no_forest", images, ref, labeled, test, names, forest_weight=0.0)


def round_network_alone(model, images: np.ndarray, ref: np.ndarray, labeled: list[int], test: list[int],
                        names: list[str]) -> dict:
    """T1 / T2 after the round from the round's network alone, without the one it started from (paired)."""
    if not model.earlier_rounds:
        return {}
    return paired(model, "corrected_round_network_alone", images, ref, labeled, test, names, earlier_rounds=[])


def paired(model, name: str, images: np.ndarray, ref: np.ndarray, labeled: list[int], test: list[int],
           names: list[str], **changed) -> dict:
    """T1_`name` / T2_`name`: the scores of `model` with the SemSegModel fields in `changed` replaced."""
    t1, t2 = scores(dataclasses.replace(model, **changed), images, ref, labeled, test, names)
    return {f"T1_{name}": t1, f"T2_{name}": t2}


def scores(model, images: np.ndarray, ref: np.ndarray, labeled: list[int], test: list[int],
           names: list[str]) -> tuple[float, float]:
    """T1 and T2 of `model` (mean IoU on the painted and on the test images)."""
    from SemSegLib.prediction import predict_stack

    preds = {i: p.labels for i, p in predict_stack(model, images, indices=labeled + test)}
    return miou(preds, ref, labeled, names), miou(preds, ref, test, names)


def _send_result(out: dict, preds: dict, unc: dict, labeled: list[int], test: list[int], queue) -> None:
    show = test[len(test) // 2]
    out["figure"] = {"index": show, "labels_index": labeled[1], "pred": preds[show], "unc": unc[show],
                     "labels_pred": preds[labeled[1]], "labels_unc": unc[labeled[1]]}
    queue.put(out)


def run_rf(folder: str, seed: int, strokes: int, queue) -> None:
    import random_forest

    stack, ref, classes = load_set(Path(folder))
    k, names = len(classes), [c.name for c in classes]
    labeled, test = split(len(stack))
    labels = make_strokes(ref, k, labeled, seed, strokes)
    start = time.perf_counter()
    preds = random_forest.train_and_predict(stack.images[:, 0], labels, labeled + test, seed)
    total = time.perf_counter() - start
    queue.put({"method": "random forest", "train_predict_s": total, "T1": miou(preds, ref, labeled, names),
               "T2": miou(preds, ref, test, names), "peak_mb": peak_mb()})


def in_child(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    while True:  # a child that crashed never puts a result: do not wait for it forever
        try:
            result = q.get(timeout=5)
            break
        except Exception as e:  # noqa: BLE001 - queue.Empty
            if not p.is_alive():
                raise RuntimeError(f"{target.__name__} failed (exit code {p.exitcode}); see its traceback") from e
    p.join()
    return result


def figure(out: Path, rows: list[tuple[str, Path, dict]], seed: int, per_class: int) -> None:
    """Per set: a painted image with the run's strokes, and an unpainted one with prediction and uncertainty."""
    from SemSegLib.figures import overview_figure

    for name, folder, fig_data in rows:
        stack, ref, classes = load_set(folder)
        labeled, _ = split(len(stack))
        i, j = fig_data["labels_index"], fig_data["index"]
        strokes = make_strokes(ref, len(classes), labeled, seed, per_class)[i]
        overview_figure(out / f"sparse_{name}.png", [
            {"title": f"image {j + 1} (not painted)", "image": stack.images[j, 0], "strokes": None,
             "prediction": fig_data["pred"], "uncertainty": fig_data["unc"]},
            {"title": f"image {i + 1} (painted)", "image": stack.images[i, 0], "strokes": strokes,
             "prediction": fig_data["labels_pred"], "uncertainty": fig_data["labels_unc"]},
        ], classes)


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, value = item.split("=", 1)
        out[key] = json.loads(value.lower()) if value.lower() in ("true", "false") else json.loads(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--sets", default="isbi2012-em,dsb2018-fluo")
    ap.add_argument("--seconds", type=float, default=None, help="training budget (default: SemSeg's default)")
    ap.add_argument("--iterations", type=int, default=None, help="iteration budget instead of seconds (GPU studies)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--control", action="store_true",
                    help="also fine-tune on the old strokes alone (what corrections add beyond more training)")
    ap.add_argument("--finetune-fraction", type=float, default=1.0,
                    help="correction round's budget as a fraction of the first round's (0: no round; default 1: "
                         "the same budget, as the engine's retraining cap since session 35)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strokes", type=int, default=10,
                    help="simulated strokes per class on each painted image, for both methods")
    ap.add_argument("--no-rf", action="store_true")
    ap.add_argument("--full-labels", action="store_true", help="upper bound: train on the full reference of the 3")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a TrainConfig field, e.g. --set input_filters=True (ablations)")
    ap.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a TrainConfig field for the correction round only")
    ap.add_argument("--first-model-cache", default=None, metavar="DIR",
                    help="with --iterations: keep the first model per set and seed in DIR and reuse it "
                         "(studies of the correction round; use only while the first round's settings are fixed)")
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, fig_rows = [], []
    for name in args.sets.split(","):
        folder = Path(args.data) / name
        overrides = {**parse_overrides(args.set), "full_labels": args.full_labels, "device": args.device,
                     "finetune_fraction": args.finetune_fraction,
                     "finetune_overrides": parse_overrides(args.finetune_set), "strokes": args.strokes}
        if args.iterations:
            overrides["iterations"] = args.iterations
        u = in_child(run_unet, str(folder), args.seconds, args.seed, overrides, args.control, args.first_model_cache)
        fig_rows.append((name, folder, u.pop("figure")))
        rf = None if args.no_rf else in_child(run_rf, str(folder), args.seed, args.strokes)
        rows.append((name, u, rf))
        print(json.dumps({"set": name, "semseg": u, "rf": rf}), flush=True)
    lines = ["| set | method | T1 mIoU | T2 mIoU | T2 after 1 correction round | train s | predict s/img | peak MB |",
             "|---|---|---|---|---|---|---|---|"]
    for name, u, rf in rows:
        lines.append(f"| {name} | SemSeg U-Net | {u['T1']:.3f} | {u['T2']:.3f} | {u['T2_corrected']:.3f} | "
                     f"{u['train_s']:.0f} (+{u['finetune_s']:.0f}) | {u['predict_s_per_image']:.2f} | "
                     f"{u['peak_mb']:.0f} |")
        if rf:
            lines.append(f"| {name} | random forest (100 trees) | {rf['T1']:.3f} | {rf['T2']:.3f} | - | "
                         f"{rf['train_predict_s']:.0f} (train+predict 13 img) | - | {rf['peak_mb']:.0f} |")
            lines.append(f"| {name} | **T2 margin over RF** | | **{u['T2'] - rf['T2']:+.3f}** | | | | |")
    table = "\n".join(lines)
    print(table)
    (out / "sparse.md").write_text(table + "\n")
    figure(out, fig_rows, args.seed, args.strokes)
    print(f"written {out / 'sparse.md'} and {out}/sparse_<set>.png")


if __name__ == "__main__":
    main()
