"""Does painting where SemSeg suggests help more than painting at random? (benchmark, not a test)

Start: 3 images with 10 strokes per class, trained with the default budget. Then 3 rounds; each round a
simulated person adds strokes on 3 images and the model is fine-tuned from the previous round:
- "suggested": the 3 images (of those not used for testing) and their most uncertain regions, as `semseg
  suggest --top 3` lists them: the most uncertain image of each of 3 groups (`spread_groups`: parts of the stack
  on isbi2012-em, look-alike images on dsb2018-fluo, whose order means nothing), an image's uncertainty counted
  as 0 near the person's labels (`--painted-reach -1`: the ranking before session 38), no region where the
  person has painted (`--regions-on-painted`: the ranking before session 37); the person corrects the
  biggest error seen in each region (its true class from the reference), or paints the right class at its
  center where it shows no error (`--leave-regions`: corrects the biggest error left in the image instead,
  the person before session 39); regions in SemSeg's order, by the uncertainty they hold (`--region-order
  mean`: by their mean uncertainty, the order before session 53); more strokes than regions go to the top
  regions again (`simulate_corrections_in`);
- "random": 3 random images, strokes at random spots (class from the reference).
Same number of strokes per round for both. T2 = mean IoU on the 10 test images after each round.

    python bench/suggest_curves.py [--data ../shared/data] [--sets ...] [--rounds 3] [--strokes 10]
                                   [--iterations N --finetune M --device cuda] [--seed N] [--save-models]
                                   [--people suggested|random] [--set KEY=VALUE ...]
                                   [--first-model-cache DIR] [--no-spread] [--regions-on-painted]
                                   [--painted-reach PX] [--leave-regions] [--region-order mean|total]
    python bench/suggest_curves.py --merge run0/suggest.json run1/suggest.json ... --out DIR  (mean of seeds)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "SemSegModule"))
sys.path.insert(0, str(HERE))

from sparse import in_child, load_set, make_strokes, miou, parse_overrides, split, train_first_model  # noqa: E402


def run_curves(folder: str, rounds: int, strokes: int, budget: dict, seed: int, save_models: str | None,
               queue) -> None:
    from SemSegLib.prediction import PredictConfig, predict_stack
    from SemSegLib.simulate import simulate_corrections_in, simulate_strokes_at
    from SemSegLib.suggest import (
        PAINTED_REACH,
        REGION_ORDER,
        image_descriptors,
        image_uncertainty,
        rank_by_uncertainty,
        spread_groups,
        uncertain_regions,
    )
    from SemSegLib.training import TrainConfig, train

    stack, ref, classes = load_set(Path(folder))
    k, names = len(classes), [c.name for c in classes]
    labeled, test = split(len(stack))
    candidates = [i for i in range(len(stack)) if i not in test]
    labels0 = make_strokes(ref, k, labeled, seed)
    # budget: "seconds"/"iterations" for the first model, "finetune" for each round (same unit), "device".
    overrides = budget.get("overrides") or {}  # TrainConfig fields for every training (ablations)
    base = TrainConfig(seed=seed, device=budget.get("device", "auto"), **overrides)
    if budget.get("iterations"):
        base.iterations = budget["iterations"]
    elif budget.get("seconds"):
        base.seconds = budget["seconds"]
    first_model = train_first_model(stack, labels0, classes, base, budget.get("first_cache"),
                                    f"{Path(folder).name}_seed{seed}", overrides)

    def t2(model) -> float:
        preds = {i: p.labels for i, p in predict_stack(model, stack.images, PredictConfig(), indices=test)}
        return miou(preds, ref, test, names)

    start = t2(first_model)
    reach = PAINTED_REACH if budget.get("painted_reach") is None else budget["painted_reach"]  # -1: whole image
    groups = (spread_groups(image_descriptors(stack.images, candidates, first_model.normalization), 3)
              if budget.get("spread", True) else None)
    out = {}
    for strategy in budget.get("people") or ("suggested", "random"):
        rng = np.random.default_rng(seed + 7)
        model, labels = first_model, labels0.copy()
        curve = [(int((labels > 0).sum()), 0, start)]
        total_strokes = 0
        for _ in range(rounds):
            if strategy == "suggested":
                preds = dict(predict_stack(model, stack.images, PredictConfig(), indices=candidates))
                means = {i: image_uncertainty(p.uncertainty, labels[i] > 0 if reach >= 0 else None, max(reach, 0))
                         for i, p in preds.items()}
                chosen = rank_by_uncertainty(means, 3, groups)
                for i in chosen:
                    painted = labels[i] > 0 if budget.get("skip_painted", True) else None
                    regions = uncertain_regions(preds[i].uncertainty, top=strokes,
                                                smoothing=budget.get("smoothing", 2.0), painted=painted,
                                                order=budget.get("region_order") or REGION_ORDER)
                    boxes = [regions[j % len(regions)].bbox for j in range(strokes)] if regions else []
                    labels[i] = simulate_corrections_in(ref[i], preds[i].labels, labels[i], k, boxes, rng=rng,
                                                        stay_in_region=budget.get("stay_in_region", True))
                    total_strokes += len(boxes)
                print(f"round {len(curve)}: suggested images {chosen}", flush=True)
            else:
                chosen = list(rng.choice(candidates, 3, replace=False))
                h, w = ref.shape[1:]
                for i in chosen:
                    points = [(int(rng.integers(h)), int(rng.integers(w))) for _ in range(strokes)]
                    labels[i] = simulate_strokes_at(ref[i], points, labels[i], rng=rng)
                    total_strokes += len(points)
            cfg = TrainConfig(seed=seed, device=base.device, **overrides)
            if base.iterations:
                cfg.iterations = int(budget.get("finetune") or base.iterations)
            else:
                cfg.seconds = budget.get("finetune") or base.seconds
            model = train(stack.images, labels, classes, cfg, init_model=model, names=stack.names).model
            curve.append((int((labels > 0).sum()), total_strokes, t2(model)))
            if save_models:  # for post hoc studies of a round's prediction (bench/RESULTS.md, session 15)
                model.save(Path(save_models) / f"{Path(folder).name}_seed{seed}_{strategy}_round{len(curve) - 1}.pt")
        out[strategy] = curve
    queue.put(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--sets", default="isbi2012-em,dsb2018-fluo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--strokes", type=int, default=10, help="strokes per image per round (3 images a round)")
    ap.add_argument("--seconds", type=float, default=None, help="first training budget (default: SemSeg's)")
    ap.add_argument("--iterations", type=int, default=None, help="first training in iterations (GPU studies)")
    ap.add_argument("--finetune", type=float, default=None,
                    help="budget per round, in the first budget's unit (default: the same as the first)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--smoothing", type=float, default=2.0,
                    help="sigma (px) of the uncertainty smoothing before finding regions (larger: blobs over edges)")
    ap.add_argument("--no-spread", action="store_true",
                    help="suggested person: the 3 most uncertain images of the stack, not the most uncertain of "
                         "each of 3 groups (the ranking before session 21)")
    ap.add_argument("--regions-on-painted", action="store_true",
                    help="suggested person: regions may lie where the person painted (the ranking before session 37)")
    ap.add_argument("--painted-reach", type=int, default=None, metavar="PX",
                    help="suggested person: an image's uncertainty leaves out PX around its labels (default: "
                         "SemSeg's, suggest.PAINTED_REACH; -1: the whole image counts, the ranking before session 38)")
    ap.add_argument("--leave-regions", action="store_true",
                    help="suggested person: where a region shows no error, correct the biggest error left in the "
                         "image instead of painting the right class at the region (the person before session 39)")
    ap.add_argument("--region-order", default=None, choices=("mean", "total"),
                    help="suggested person: regions by the uncertainty they hold (area x mean; SemSeg's default) or "
                         "by their mean uncertainty (the order before session 53)")
    ap.add_argument("--people", default="suggested,random", help="which simulated people run (comma-separated)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a TrainConfig field in every training, e.g. --set round_networks=2 (ablations)")
    ap.add_argument("--first-model-cache", default=None, metavar="DIR",
                    help="reuse the first model of an iteration budget from DIR (deterministic; saves its training)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--save-models", action="store_true",
                    help="also write every round's model to OUT/models/ (post hoc studies)")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="no training: average the suggest.json files of several runs (seeds) into one report")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        results = merge_runs([json.loads(Path(f).read_text()) for f in args.merge])
    else:
        results = {}
        models = str(out / "models") if args.save_models else None
        if models:
            Path(models).mkdir(exist_ok=True)
        for name in args.sets.split(","):
            budget = {"seconds": args.seconds, "iterations": args.iterations, "finetune": args.finetune,
                      "device": args.device, "smoothing": args.smoothing,
                      "people": args.people.split(","), "overrides": parse_overrides(args.set),
                      "first_cache": args.first_model_cache, "spread": not args.no_spread,
                      "skip_painted": not args.regions_on_painted, "painted_reach": args.painted_reach,
                      "stay_in_region": not args.leave_regions, "region_order": args.region_order}
            results[name] = in_child(run_curves, str(Path(args.data) / name), args.rounds, args.strokes, budget,
                                     args.seed, models)
            print(json.dumps({name: results[name]}), flush=True)
    (out / "suggest.json").write_text(json.dumps(results, indent=1))
    write_report(results, out)


def merge_runs(runs: list[dict]) -> dict:
    """Element-wise mean of the curves of several runs (same sets, strategies and rounds)."""
    merged: dict = {}
    for name in dict.fromkeys(name for run in runs for name in run):  # every set, in first-seen order
        with_set = [run[name] for run in runs if name in run]
        merged[name] = {strategy: np.mean([curves[strategy] for curves in with_set], 0).tolist()
                        for strategy in with_set[0]}
    return merged


def write_report(results: dict, out: Path) -> None:
    rounds = len(next(iter(next(iter(results.values())).values()))) - 1
    head = " | ".join(f"round {r}" for r in range(rounds + 1))
    lines = [f"| set | strategy | {head} | T2 gain per 10 strokes |",
             "|---|---|" + "---|" * (rounds + 1) + "---|"]
    for name, curves in results.items():
        for strategy, curve in curves.items():
            gain = (curve[-1][2] - curve[0][2]) / max(curve[-1][1], 1) * 10
            lines.append(f"| {name} | {strategy} | " + " | ".join(f"{c[2]:.3f}" for c in curve) + f" | {gain:+.4f} |")
    (out / "suggest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (name, curves) in zip(axes[0], results.items()):
        for strategy, curve in curves.items():
            ax.plot([c[1] for c in curve], [c[2] for c in curve], "o-", label=strategy)
        ax.set_title(name)
        ax.set_xlabel("correction strokes added")
        ax.set_ylabel("T2 mean IoU")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "suggest.png", dpi=80)


if __name__ == "__main__":
    mp.freeze_support()
    main()
