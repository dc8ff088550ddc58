"""Make a shipped starting point: SemSeg's default network trained densely on generated images.

    python bench/make_starting_point.py [--kind fluorescent-nuclei|em-membranes] [--steps 2000] [--images 500]
                                        [--seed 0] [--out FILE]

(default FILE: the shipped one of that kind in SemSegModule/SemSegLib/starting_points/).

Deterministic (seeded generator and initialization); about 6 minutes on one CPU core. The images come from
SemSegLib.synthetic_nuclei and SemSegLib.synthetic_membranes, never from ../shared/data: the benchmark's sets and
held-out images must not train anything SemSeg ships.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "SemSegModule"))

from SemSegLib.model_file import SemSegModel  # noqa: E402
from SemSegLib.normalization import normalize_image  # noqa: E402
from SemSegLib.starting_points import FOLDER, SHIPPED, StartingPoint  # noqa: E402
from SemSegLib.synthetic_membranes import MEMBRANE_CLASSES, make_membrane_image  # noqa: E402
from SemSegLib.synthetic_nuclei import NUCLEI_CLASSES, make_nuclei_image  # noqa: E402
from SemSegLib.training import TrainConfig  # noqa: E402

IMAGE_SIZE, PATCH, BATCH = 256, 192, 4
# Per kind: the generator, its classes and their weights in the loss. The nuclei's 1-pixel border is 6% of the
# generated pixels: weighted up so the network draws it where it belongs. Membranes are about a fifth.
KINDS = {
    "fluorescent-nuclei": (make_nuclei_image, NUCLEI_CLASSES, (1.0, 1.0, 3.0)),
    "em-membranes": (make_membrane_image, MEMBRANE_CLASSES, (1.0, 1.0)),
}


def pretrain(steps: int, num_images: int, seed: int = 0, learning_rate: float = 3e-3, log=print,
             kind: str = "fluorescent-nuclei") -> StartingPoint:
    make_image, classes, class_weights = KINDS[kind]
    rng = np.random.default_rng(seed)
    pairs = [make_image(rng, IMAGE_SIZE) for _ in range(num_images)]
    images = torch.from_numpy(np.stack([normalize_image(image) for image, _ in pairs]))
    targets = torch.from_numpy(np.stack([labels.astype(np.int64) - 1 for _, labels in pairs]))
    defaults = TrainConfig()  # the network a first training builds, so it can start from this one
    torch.manual_seed(seed)
    model = SemSegModel.create(1, classes, base_width=defaults.base_width, levels=defaults.levels,
                               input_filters=defaults.input_filters, filter_sigmas=defaults.filter_sigmas)
    net = model.network.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    weights = torch.tensor(class_weights)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for step in range(steps):
        warmup = min(1.0, step / 100)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * warmup * 0.5 * (1 + math.cos(math.pi * step / steps))
        pick = torch.randint(num_images, (BATCH,), generator=generator)
        corner = torch.randint(0, IMAGE_SIZE - PATCH + 1, (BATCH, 2), generator=generator)
        x = torch.stack([images[i, :, y:y + PATCH, c:c + PATCH] for i, (y, c) in zip(pick, corner)])
        y = torch.stack([targets[i, r:r + PATCH, c:c + PATCH] for i, (r, c) in zip(pick, corner)])
        if torch.rand(1, generator=generator) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        turns = int(torch.randint(4, (1,), generator=generator))
        x, y = torch.rot90(x, turns, (-2, -1)), torch.rot90(y, turns, (-2, -1))
        # What the percentile normalization leaves of contrast and offset differences between stacks.
        x = x * (0.8 + 0.4 * torch.rand(BATCH, 1, 1, 1, generator=generator)) \
            + 0.1 * (torch.rand(BATCH, 1, 1, 1, generator=generator) - 0.5)
        loss = F.cross_entropy(net(x), y, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"step {step}: loss {float(loss.detach()):.4f} ({time.perf_counter() - start:.0f} s)")
    made_with = {"generator": make_image.__module__, "images": num_images, "image_size": IMAGE_SIZE,
                 "steps": steps, "batch": BATCH, "patch": PATCH, "learning_rate": learning_rate,
                 "class_weights": list(class_weights), "seed": seed, "torch": str(torch.__version__)}
    return StartingPoint(kind, [c.name for c in classes], model.network_config,
                         model.normalization, {k: v.detach() for k, v in net.eval().state_dict().items()}, made_with)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=list(KINDS), default="fluorescent-nuclei")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="default: the shipped file of --kind")
    args = ap.parse_args()
    args.out = args.out or str(FOLDER / SHIPPED[args.kind])
    point = pretrain(args.steps, args.images, args.seed, log=lambda m: print(m, flush=True), kind=args.kind)
    point.save(args.out)
    print(f"written {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
