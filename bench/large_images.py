"""What a training costs on large images, and whether the windowed estimates after its steps change its result.

`--timing`: random images of each `--sizes` (square, 8-bit), a few strokes on 3 of them, `--iterations` steps on
the CPU; seconds of the whole training (steps, class-prior estimate, the forest's teaching and fit) and the
process's peak memory. A fresh process per size, so each peak is its own.

`--mosaics`: dsb2018-fluo's 40 images as 5 mosaics of 2 x 4 images (1040 x 2784), 20 simulated strokes per class
on mosaics 1 and 3, the default training (750 steps), T2 = mean IoU on mosaics 2, 4 and 5.

    python bench/large_images.py --timing [--sizes 512,2048,4096] [--count 10,10,4] [--iterations 50]
    python bench/large_images.py --mosaics [--data ../shared/data] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "SemSegModule"))


def timing(size: int, count: int, iterations: int) -> dict:
    from SemSegLib.classes import default_classes
    from SemSegLib.training import TrainConfig, train

    rng = np.random.default_rng(0)
    images = np.empty((count, 1, size, size), np.uint8)
    for image in images:  # one at a time: a float64 draw of the whole stack would set the peak, not the training
        image[...] = rng.normal(120, 30, (1, size, size)).clip(0, 255)
    labels = np.zeros((count, size, size), np.uint16)
    for k in np.linspace(0, count - 1, 3).round().astype(int):
        labels[k, 100:110, 100:400] = 1
        labels[k, 300:310, 100:400] = 2
    start = time.perf_counter()
    train(images, labels, default_classes(2), TrainConfig(iterations=iterations, device="cpu", seed=0))
    return {"size": size, "images": count, "iterations": iterations,
            "train_s": round(time.perf_counter() - start, 1),
            "peak_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}


def mosaics(data: Path, seed: int) -> dict:
    from SemSegLib.classes import read_classes_csv
    from SemSegLib.metrics import evaluate
    from SemSegLib.prediction import PredictConfig, predict_stack
    from SemSegLib.simulate import simulate_strokes
    from SemSegLib.stack_io import read_stack
    from SemSegLib.training import TrainConfig, train

    folder = data / "dsb2018-fluo"
    classes = read_classes_csv(folder / "classes.csv")

    def tiled(a: np.ndarray) -> np.ndarray:  # (40, ..., H, W) -> (5, ..., 2H, 4W)
        a = a[:40].reshape(5, 2, 4, *a.shape[1:])
        return np.stack([np.concatenate([np.concatenate(list(m[r]), axis=-1) for r in range(2)], axis=-2)
                         for m in a])

    images = tiled(read_stack(folder / "images").images)
    ref = tiled(read_stack(folder / "reference").images[:, 0])
    rng = np.random.default_rng(seed)
    labels = np.zeros_like(ref)
    for i in (0, 2):
        labels[i] = simulate_strokes(ref[i], len(classes), 20, rng=rng)
    start = time.perf_counter()
    result = train(images, labels, classes, TrainConfig(iterations=750, device="cpu", seed=seed))
    seconds = time.perf_counter() - start
    test = [1, 3, 4]
    preds = dict(predict_stack(result.model, images, PredictConfig(device="cpu"), indices=test))
    metrics = evaluate(np.stack([preds[i].labels for i in test]), ref[test], [c.name for c in classes])
    return {"seed": seed, "shape": list(images.shape), "train_s": round(seconds, 1), "T2": round(metrics.mean_iou, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timing", action="store_true")
    p.add_argument("--sizes", default="512,2048,4096")
    p.add_argument("--count", default="10,10,4")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--one", type=int, nargs=2, help=argparse.SUPPRESS)  # size, count: a child of --timing
    p.add_argument("--mosaics", action="store_true")
    p.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.one:
        print(json.dumps(timing(*args.one, args.iterations)))
    elif args.timing:
        for size, count in zip(args.sizes.split(","), args.count.split(",")):
            subprocess.run([sys.executable, __file__, "--one", size, count, "--iterations", str(args.iterations)],
                           check=True)
    elif args.mosaics:
        print(json.dumps(mosaics(Path(args.data), args.seed)))
    else:
        p.error("give --timing or --mosaics")


if __name__ == "__main__":
    main()
