"""What the "standard" transforms cost per render step, with and without building many steps'
matrices at once.

A render hands :class:`featviz.transforms.Compose` its images' random streams, and Compose then
draws and builds the affine matrices of 32 steps in a few batched operations; a step is left
with one grid and one ``grid_sample``. Built call by call, a step runs dozens of tiny tensor
operations (draws, 3x3 products, index look-ups): on a CPU each costs dispatcher time, on a
GPU each is a kernel launch. This prints, for a few sizes and batches, the forward and the
forward + backward time of both ways (the best of several alternating rounds) and their ratio.

    python benchmarks/transforms_cost.py
    python benchmarks/transforms_cost.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from featviz import transforms as T


def per_call_ms(pipe, x: torch.Tensor, streams: T.ImageStreams, calls: int,
                backward: bool) -> float:
    def sync():
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        y = pipe(x, streams)
        if backward:
            y.sum().backward()
    sync()
    return (time.perf_counter() - t0) / calls * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cases", default="128x1,224x1,128x16,224x16",
                    help="comma-separated SIZExBATCH")
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    print(f"device: {device}; torch {torch.__version__}; {torch.get_num_threads()} threads\n")
    print("| px | batch | planned fwd ms | call by call fwd ms | ratio | planned fwd+bwd ms | "
          "call by call fwd+bwd ms | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in args.cases.split(","):
        size, batch = (int(v) for v in case.split("x"))
        x = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
        planned = T.standard()
        by_call = T.standard()
        by_call.transforms.append(lambda t: t)  # a non-affine step: matrices call by call
        seeds = list(range(batch))
        best: dict[tuple[str, bool], float] = {}
        for _ in range(args.rounds):  # alternate, so load from elsewhere hits both alike
            for name, pipe in (("planned", planned), ("by_call", by_call)):
                for backward in (False, True):
                    ms = per_call_ms(pipe, x, T.ImageStreams(seeds, device), args.calls,
                                     backward)
                    key = (name, backward)
                    best[key] = min(best.get(key, float("inf")), ms)
        pf, cf = best[("planned", False)], best[("by_call", False)]
        pb, cb = best[("planned", True)], best[("by_call", True)]
        print(f"| {size} | {batch} | {pf:.2f} | {cf:.2f} | {cf / pf:.2f}x | {pb:.2f} | "
              f"{cb:.2f} | {cb / pb:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
