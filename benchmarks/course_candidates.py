"""Courses compared on InceptionV1 channels: how long each featviz setting needs to reach the
quality lucent reaches in 512 steps (the runs that chose the fast course; until issue 44 this
script was ``time_to_quality.py``, which now measures the defaults on every model).

On InceptionV1 (BVLC GoogLeNet, ``../shared/models``) at 224 px, batch 1, for channels at three
depths (mixed3b, mixed4c, mixed5a), each channel with its own seed:

- lucent 0.1.8 with its defaults (Fourier + decorrelated colour, its standard transforms, Adam
  0.05, 512 steps) is the reference. Its *quality*: the channel's mean activation on its final
  image under 8 random transforms from a stream neither render used (held-out), and the
  high-frequency share of the image's power and its checkerboard energy at the net's strides,
  both as means over its images at steps 480, 496 and 512 (one image's are noisy).
- featviz, with its defaults and with each candidate setting, keeps a snapshot every 16 steps.
  Its *time to quality* is the render clock at the first snapshot whose held-out objective
  reaches lucent's, with high-frequency share and checkerboard energy (means over that
  snapshot and the two before it) at most 5 % above lucent's. A candidate that never gets
  there within its steps counts as its full time.

Both render the same model object; lucent's ``render_vis`` leaves a forward hook on every
module at each call, which this removes after each lucent render (``lucents_hooks_removed``),
so that no render runs the hooks of the ones before it.

Every number of a row comes from one run, side by side (the machine is shared and noisy). The
table prints per channel and the medians; ``--figure`` writes lucent 512 steps / featviz
defaults / featviz at its time-to-quality point for four channels, and ``--batch`` also
renders all channels in one batch and reports the time per image.

    pip install --no-deps torch-lucent==0.1.8 && pip install decorator   # lucent, see speed.py
    python benchmarks/course_candidates.py                       # 12 channels, all settings, ~2 h
    python benchmarks/course_candidates.py --candidates "lr 0.1 ema 0.95 b2 0.99 floor 1"  # ~50 min
    python benchmarks/course_candidates.py --channels 2 --candidates defaults   # 6, about 15 min
    python benchmarks/course_candidates.py --quick               # a smoke run, a few minutes
    python benchmarks/course_candidates.py --only mixed4c:81     # one row again, same seed
    python benchmarks/course_candidates.py --at-the-end --candidates defaults \
        "lr 0.1 ema 0.95 b2 0.99 floor 2" "lr 0.1 ema 0.95 b2 0.99 floor 1" \
        "Adam 0.05 ema 0.95 floor 2" "lr 0.1 cosine ema 0.95 floor 2" \
        --only mixed3b:24,mixed3b:342,mixed4c:2,mixed4c:447   # pictures to step 512, ~25 min
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import featviz
from featviz import metrics
from featviz import objectives as obj
from featviz import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prune_step import pruning  # noqa: E402  (render without featviz.core.prune)
from speed import import_lucent, lucents_hooks_removed  # noqa: E402  (lucent 0.1.8 on today's kornia)

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FEATVIZ_SHARED", HERE.parent.parent / "shared"))
WEIGHTS = SHARED / "models" / "googlenet_bvlc_imagenet.pth"
CHANNELS = {  # four channels per depth, spread over each layer
    "mixed3b": [24, 147, 208, 342],
    "mixed4c": [2, 81, 216, 447],
    "mixed5a": [9, 77, 278, 414],
}
HELD_OUT_DRAWS = 8
HELD_OUT_SEED = 987654321  # a transform stream neither render draws from
TOLERANCE = 1.05  # high-frequency share and checkerboard may be this much above lucent's
EVERY = 16  # featviz snapshot interval, steps
# high-frequency share and checkerboard energy are judged on the mean over the judged snapshot
# and the two before it (16 steps apart), for lucent as for featviz: one image's checkerboard
# energy moves by up to 0.17 between snapshots 32 steps apart, more than the 5 % tolerance
WINDOW = 3
# featviz settings compared; each is render's keyword arguments on top of its defaults. Tried
# and dropped before this table, on 4-6 of these channels in one batch (each image its own
# seed), held-out objective every 32 steps against lucent's at 512:
# - Adam at 0.1 or 0.2 with a cosine decay over 128 or 256 steps, a 3-4x larger rate in the
#   first 64-96 steps, coarse-to-fine (112 px, then the parameters upsampled to 224 px), and
#   the cosine schedule from 0.05 (it reached lucent's bar on 4 of 9 channels, the defaults
#   on 6);
# - a constant 0.2: ahead until step ~100, then behind 0.1, with a high-frequency share above
#   lucent's from step 224 on;
# - bf16 autocast (amp=True): steps 1.3x cheaper on this CPU, but the objective per step lower
#   (mixed4c:81 at step 320: 0.95 of lucent's bar against 1.00 in float32).
# - with the parameters' average (ema): at Adam 0.05 it changes little (one of six channels
#   earlier, one later); at 0.15 or 0.2 (ema 0.95, 0.98) the held-out objective is lower and the
#   high-frequency share higher than at 0.1; ema 0.98 at 0.1 is a step behind 0.95 on two of six;
# - a flatter Fourier scale (1/f^0.75, equal to 1/f at 0.05 cycles per pixel): the
#   high-frequency share 1.1-1.4x lucent's, the objective lower.
# - the view resampled twice per step as lucent does (scale, then rotate, not fused): no lower
#   checkerboard energy on four channels, a high-frequency share 1.04-1.26x the fused one's;
# - a fixed [1,2,1] blur of the view: the high-frequency share 1.2-2.1x, the held-out
#   objective 0.68-0.86x. Adam steps every coefficient about equally far whatever its
#   gradient, so frequencies the model no longer sees drift freely. That is also why grids
#   grow: adam_floor (below);
# - Adam's eps at 1e-3 (a fixed floor): lower high-frequency share and checkerboard at the
#   same objective, but the right value depends on the objective's scale (gradients 4x
#   apart between mixed3b and mixed4c), hence the relative floor; at floor 0.5 mixed4c:2 kept
#   1.3-1.5x lucent's checkerboard; lr 0.2 with floor 2 or 4 climbed slower than lr 0.1.
# Not made the default (--at-the-end, README "Time to a good picture"): at 512 steps every
# course faster than the defaults puts more pixels on the rails (4.6-23x at a constant 0.1,
# 1.9-4.3x with the cosine decay: a step of 0.1 on the strong low frequencies drives the
# sigmoid's colours to 0 and 1), and the floor at the default rate trades 1-4 % of the
# held-out objective for its lower high-frequency share.
# With 1e4 x the clipping regularizer subtracted (the "clip" candidates) the rails stay at
# 0-1 % (no more than the defaults') and floor 1 stays as fast (median 3.06x, 9 of 12; 2.96x,
# 10 of 12 without the wall), and floor 2 matches the defaults at step 512. render's
# rail_guard is that wall with its push relative to the objective's own pull (the "guard"
# candidates): the same course on these channels, 0.0 % saturated at guard 2, and no weight
# to tune for a logit or another model.
CANDIDATES: dict[str, dict] = {
    "defaults": {},  # the careful course (on_careful), render's defaults until issue 44
    # the floor and the average at the default rate: less fine grain, a slower climb
    "Adam 0.05 ema 0.95 floor 2": {"lr": 0.05, "ema": 0.95, "adam_floor": 2.0},
    # 0.1's climb early and small steps late, as the rails fill with the distance travelled
    "lr 0.1 cosine ema 0.95 floor 2": {"lr": 0.1, "lr_schedule": "cosine", "ema": 0.95,
                                       "adam_floor": 2.0},
    "lr 0.1": {"lr": 0.1},
    # Adam's step-to-step jitter averaged out (render's ema): 0.1's speed without its
    # high-frequency share; and Adam's second moment over ~100 steps instead of ~1000, so the
    # step sizes follow the gradients as the picture changes
    "lr 0.1 ema 0.95": {"lr": 0.1, "ema": 0.95},
    "lr 0.1 ema 0.95 b2 0.99": {"lr": 0.1, "ema": 0.95,
                                "optimizer": lambda ps: torch.optim.Adam(ps, lr=0.1,
                                                                         betas=(0.9, 0.99))},
    # Adam's denominator floored at K x each image's mean (render's adam_floor, which is
    # FlooredAdam with beta2 0.99): coefficients with weak, steady gradients (grid
    # frequencies, grain) step in proportion to them
    "lr 0.1 ema 0.95 b2 0.99 floor 1": {"lr": 0.1, "ema": 0.95, "adam_floor": 1.0},
    "lr 0.1 ema 0.95 b2 0.99 floor 2": {"lr": 0.1, "ema": 0.95, "adam_floor": 2.0},
    # the fast course with 1e4 x the clipping regularizer subtracted from the objective it
    # climbs (not from the one it is judged by): 0.1's steps without the rails
    "lr 0.1 ema 0.95 floor 1 clip": {"lr": 0.1, "ema": 0.95, "adam_floor": 1.0,
                                     "clipping": 1e4},
    "lr 0.1 ema 0.95 floor 2 clip": {"lr": 0.1, "ema": 0.95, "adam_floor": 2.0,
                                     "clipping": 1e4},
    # the same wall as render's rail_guard: the push off 0 and 1 a multiple of the objective's
    # own mean pull on the image (1e4 above is 0.4-5x that pull on these channels)
    "lr 0.1 ema 0.95 floor 1 guard 1": {"lr": 0.1, "ema": 0.95, "adam_floor": 1.0,
                                        "rail_guard": 1.0},
    "lr 0.1 ema 0.95 floor 1 guard 2": {"lr": 0.1, "ema": 0.95, "adam_floor": 1.0,
                                        "rail_guard": 2.0},
    # the same in NHWC order (render's memory_format): each step cheaper where the model's
    # convolutions run faster channels-last on this CPU (deeper layers); the sums are taken
    # in another order, so the course is close to the same, not identical
    "lr 0.1 ema 0.95 floor 1 guard 2 NHWC": {"lr": 0.1, "ema": 0.95, "adam_floor": 1.0,
                                             "rail_guard": 2.0,
                                             "memory_format": "channels_last"},
    # the same with every branch of the layer's block computed ("prune": False switches off
    # render's leaving out of the branches no read channel comes from; the images are the
    # same to the bit, so the two columns differ in seconds only)
    "lr 0.1 ema 0.95 floor 1 guard 2 NHWC unpruned": {
        "lr": 0.1, "ema": 0.95, "adam_floor": 1.0, "rail_guard": 2.0,
        "memory_format": "channels_last", "prune": False},
}


def on_careful(settings: dict) -> dict:
    """A candidate's settings on top of the careful course, the defaults these runs compared
    against (render's default pace is now "auto", the fast course for these channels)."""
    return {"pace": "careful", **settings}


def climbed(objective: obj.Objective, settings: dict) -> obj.Objective:
    """The objective a candidate renders: ``objective`` less its ``clipping`` weight (popped
    from ``settings``) times the clipping regularizer."""
    weight = settings.pop("clipping", 0)
    return objective - weight * obj.clipping() if weight else objective


@dataclass
class Quality:
    """What a picture is judged by: held-out objective, high-frequency share, checkerboard."""

    held_out: float
    hf: float
    checker: float

    def reaches(self, ref: Quality) -> bool:
        return (self.held_out >= ref.held_out and self.hf <= TOLERANCE * ref.hf
                and self.checker <= TOLERANCE * ref.checker)


@dataclass
class Run:
    """One render: its wall time and where it reached the reference (if it did)."""

    seconds: float
    image: torch.Tensor
    quality: Quality
    steps: int = 512
    reached_step: int | None = None
    reached_seconds: float | None = None
    reached_image: torch.Tensor | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)


def quality(model, objective, window: list[torch.Tensor]) -> Quality:
    """The quality of the last image of ``window`` (consecutive snapshots [1,3,H,W], oldest
    first): its held-out objective, and its high-frequency share and checkerboard energy as
    means over the whole window."""
    held = metrics.robust_objective(model, objective, window[-1], T.standard(), HELD_OUT_DRAWS,
                                    seed=HELD_OUT_SEED)
    return Quality(float(held.mean()),
                   statistics.fmean(metrics.high_frequency_share(im[0]) for im in window),
                   statistics.fmean(metrics.checkerboard_energy(im[0]) for im in window))


def last_window(snapshots: dict[int, torch.Tensor], step: int) -> list[torch.Tensor]:
    """The snapshots at ``step`` and the WINDOW - 1 before it that exist, oldest first."""
    steps = [step - k * EVERY for k in reversed(range(WINDOW))]
    return [snapshots[s] for s in steps if s in snapshots]


def lucent_run(lucent, model, layer: str, channel: int, seed: int, steps: int) -> Run:
    """lucent's render_vis as a user runs it at 224 px; the preprocessing is the model's own
    (featviz's InceptionV1 normalizes inside), so lucent's is off."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    module = model.featviz_aliases.get(layer, layer)
    name = "net_" + module.replace(".", "_")
    made = {}

    def param_f():
        params, image_f = lucent.param.image(224)
        made["image_f"] = image_f
        return params, image_f

    marks = sorted({max(1, steps - k * EVERY) for k in range(WINDOW)})
    t0 = time.perf_counter()
    with lucents_hooks_removed(model):
        shown = lucent.render.render_vis(model, f"{name}:{channel}", param_f=param_f,
                                         thresholds=marks, preprocess=False, progress=False,
                                         show_image=False)
    seconds = time.perf_counter() - t0
    window = [torch.from_numpy(np.ascontiguousarray(im)).permute(0, 3, 1, 2).float()
              for im in shown]
    with torch.no_grad():
        window[-1] = made["image_f"]().detach().cpu()  # the last exactly, not via numpy
    return Run(seconds, window[-1], quality(model, obj.channel(layer, channel), window), steps)


def featviz_run(model, layer: str, channel: int, seed: int, settings: dict, ref: Quality
                ) -> Run:
    """featviz with ``settings``; snapshots every EVERY steps, judged against ``ref``."""
    settings = dict(settings)
    steps = settings.pop("steps", 512)
    objective = obj.channel(layer, channel)
    rendered = climbed(objective, settings)
    marks = list(range(EVERY, steps + 1, EVERY))
    with pruning(settings.pop("prune", True)):
        res = featviz.render(model, rendered, size=224, steps=steps, seed=seed, progress=False,
                             thresholds=marks, record_every=EVERY, **on_careful(settings))
    clock = dict(zip(res.history_steps, res.history_times, strict=True))
    last = last_window(res.snapshots, res.steps_done) or [res.images]
    run = Run(res.seconds, res.images, quality(model, objective, last), res.steps_done)
    for step in marks:
        if step not in res.snapshots:
            break
        q = quality(model, objective, last_window(res.snapshots, step))
        run.curve.append((step, q.held_out))
        if q.reaches(ref):
            run.reached_step, run.reached_seconds = step, clock[step]
            run.reached_image = res.snapshots[step]
            break
    return run


def seconds_to_quality(run: Run) -> float:
    return run.reached_seconds if run.reached_seconds is not None else run.seconds


def channel_row(lucent, model, layer: str, channel: int, seed: int, steps: int) -> dict:
    """lucent, then featviz with each candidate, on one channel: one row of the table."""
    ref = lucent_run(lucent, model, layer, channel, seed, steps)
    runs = {name: featviz_run(model, layer, channel, seed, settings, ref.quality)
            for name, settings in CANDIDATES.items()}
    # the best setting; not the unpruned twin of one, which draws the same image (it is there
    # to time the pruning, and the faster of two timings of one picture would flatter it)
    settings = [n for n in runs if CANDIDATES[n].get("prune", True)]
    best = max(settings, key=lambda name: ratio(ref.seconds, runs[name]))  # first of ties
    return {"layer": layer, "channel": channel, "seed": seed, "lucent": ref, "runs": runs,
            "best": best}


def ratio(lucent_seconds: float, run: Run) -> float:
    """lucent's seconds over featviz's to the same quality; 0 where featviz never got there
    (so that a median or a minimum counts it as the worst)."""
    return 0.0 if run.reached_seconds is None else lucent_seconds / run.reached_seconds


def missed(run: Run, ref: Run) -> str:
    """A table cell for a run that never reached ``ref``: its last picture's three figures as
    fractions of lucent's, so the reader sees which condition failed."""
    q, bar = run.quality, ref.quality

    def share(mine: float, theirs: float) -> str:
        return f"{mine / theirs:.2f}" if theirs else f"{mine:.3g} (lucent 0)"

    return (f"not in {run.steps} ({run.seconds:.0f} s; held-out {share(q.held_out, bar.held_out)}"
            f", hf {share(q.hf, bar.hf)}, checker {share(q.checker, bar.checker)} of lucent's)")


def print_table(rows: list[dict]) -> None:
    names = list(CANDIDATES)
    print("| channel | lucent s | lucent held-out | lucent hf | " + " | ".join(
        f"featviz {n} s (step)" for n in names) + " | lucent / featviz |")
    print("|---|---:|---:|---:|" + "---:|" * len(names) + "---:|")
    for r in rows:
        cells = []
        for n in names:
            run = r["runs"][n]
            cells.append(f"{run.reached_seconds:.1f} ({run.reached_step})"
                         if run.reached_step is not None else missed(run, r["lucent"]))
        luc = r["lucent"]
        best = ratio(luc.seconds, r["runs"][r["best"]])
        print(f"| {r['layer']}:{r['channel']} | {luc.seconds:.1f} | {luc.quality.held_out:.1f} | "
              f"{luc.quality.hf:.3f} | " + " | ".join(cells) + " | " +
              (f"{best:.1f}x |" if best else "not reached |"))
    print()
    for n in names:
        ratios = [ratio(r["lucent"].seconds, r["runs"][n]) for r in rows]
        reached = sum(x > 0 for x in ratios)
        print(f"featviz {n}: median lucent/featviz {statistics.median(ratios):.2f}x (a channel "
              f"it never reached counts as 0), reached lucent's quality on {reached}/{len(rows)}"
              f", worst reached {min((x for x in ratios if x), default=0):.2f}x")


def batch_row(model, rows: list[dict], name: str, size: int = 16) -> dict:
    """``size`` images in one batch with the candidate ``name``: the table's channels, then
    the first ones again from another seed until the batch is full, each judged against its
    channel's lucent reference. The time per image until every image has reached it (the
    batch runs as many steps as the slowest channel needed alone, plus two snapshots)."""
    settings = dict(CANDIDATES[name])
    steps = settings.pop("steps", 512)
    needed = [r["runs"][name].reached_step for r in rows]
    if None not in needed and "lr_schedule" not in settings:
        steps = min(steps, max(needed) + 2 * EVERY)
    rows = (rows + [dict(r, seed=r["seed"] + 1000) for r in rows])[:max(size, 1)]
    objective = obj.Objective.sum(obj.channel(r["layer"], r["channel"], batch=i)
                                  for i, r in enumerate(rows))
    rendered = climbed(objective, settings)
    marks = list(range(EVERY, steps + 1, EVERY))
    res = featviz.render(model, rendered, size=224, steps=steps, progress=False,
                         seed=[r["seed"] for r in rows], thresholds=marks, record_every=EVERY,
                         **on_careful(settings))
    clock = dict(zip(res.history_steps, res.history_times, strict=True))
    reached = []
    for i, r in enumerate(rows):
        mine = obj.channel(r["layer"], r["channel"])
        mine_only = {s: im[i:i + 1] for s, im in res.snapshots.items()}
        reached.append(next((s for s in marks if quality(model, mine, last_window(mine_only, s))
                             .reaches(r["lucent"].quality)), None))
    last = None if None in reached else max(reached)
    seconds = res.seconds if last is None else clock[last]
    return {"n": len(rows), "step": last, "seconds": seconds, "per_image": seconds / len(rows)}


def at_the_end(model, chosen_rows: list[tuple[str, int, int]], name: str, steps: int = 512
               ) -> None:
    """What a setting's pictures are when a user keeps all ``steps``: the chosen channels in
    one batch (each image its own seed, as in the table), their held-out objective,
    high-frequency share and checkerboard (judged as in the table) and share of saturated
    pixels every 64 steps from 192."""
    settings = {k: v for k, v in CANDIDATES[name].items() if k != "steps"}
    objective = obj.Objective.sum(obj.channel(layer, c, batch=i)
                                  for i, (layer, c, _) in enumerate(chosen_rows))
    rendered = climbed(objective, settings)
    res = featviz.render(model, rendered, size=224, steps=steps, progress=False,
                         seed=[seed for *_, seed in chosen_rows], record_every=EVERY,
                         thresholds=list(range(EVERY, steps + 1, EVERY)), **on_careful(settings))
    print(f"{name} ({res.seconds:.0f} s for {len(chosen_rows)} images); step: held-out / "
          f"high-frequency share / checkerboard / saturated pixels", flush=True)
    for i, (layer, c, _) in enumerate(chosen_rows):
        mine = {s: im[i:i + 1] for s, im in res.snapshots.items()}
        cells = []
        for s in range(min(192, steps), steps + 1, 64):
            q = quality(model, obj.channel(layer, c), last_window(mine, s))
            cells.append(f"{s}: {q.held_out:.0f} / {q.hf:.3f} / {q.checker:.2f} / "
                         f"{100 * metrics.saturated_share(mine[s]):.1f}%")
        print(f"  {layer}:{c}  " + "  ".join(cells), flush=True)


def figure(rows: list[dict], path: Path) -> Path:
    """Four channels: lucent at 512 steps, featviz's defaults at 512, featviz's best at its
    time-to-quality point; each labelled with its seconds and held-out objective."""
    from featviz import images

    tiles, labels = [], []
    picks = sorted({round(i * (len(rows) - 1) / 3) for i in range(4)})  # spread over depths
    for r in (rows[i] for i in picks):
        luc, dflt, best = r["lucent"], r["runs"]["defaults"], r["runs"][r["best"]]
        unit = f"{r['layer']}:{r['channel']}"
        tiles += [luc.image[0], dflt.image[0],
                  (best.reached_image if best.reached_image is not None else best.image)[0]]
        labels += [f"{unit} lucent {luc.steps} steps {luc.seconds:.0f} s",
                   f"featviz defaults {dflt.steps} steps {dflt.seconds:.0f} s",
                   f"featviz {r['best']} " + (f"step {best.reached_step}" if best.reached_step
                                               else "(not reached)") +
                   f" {seconds_to_quality(best):.0f} s"]
    path.parent.mkdir(parents=True, exist_ok=True)
    images.grid(tiles, labels, ncol=3).save(path)
    return path


def chosen(per_depth: int, only: str | None) -> list[tuple[str, int, int]]:
    """(layer, channel, seed) of the rows to run: ``per_depth`` channels of each depth, or the
    ``only`` ones; a channel's seed is its place in the full table, so a rerun repeats it."""
    table = [(layer, c, seed) for seed, (layer, c) in
             enumerate((layer, c) for layer, cs in CHANNELS.items() for c in cs)]
    if only is None:
        return [row for row in table if CHANNELS[row[0]].index(row[1]) < per_depth]
    wanted = [tuple(t.strip().rsplit(":", 1)) for t in only.split(",")]
    rows = [row for row in table if (row[0], str(row[1])) in wanted]
    if len(rows) != len(wanted):
        names = ", ".join(f"{layer}:{c}" for layer, c, _ in table)
        raise SystemExit(f"--only takes channels of the table: {names}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=str(WEIGHTS))
    ap.add_argument("--channels", type=int, default=4, help="channels per depth (at most 4)")
    ap.add_argument("--only", help="these channels instead, LAYER:C,LAYER:C (e.g. to rerun a "
                                   "row a busy machine disturbed); seeds as in the full table")
    ap.add_argument("--steps", type=int, default=512, help="lucent's steps")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", action="store_true",
                    help="also render all channels in one batch with the best candidate")
    ap.add_argument("--figure", help="write the side-by-side figure here (PNG)")
    ap.add_argument("--candidates", nargs="+", choices=list(CANDIDATES),
                    default=list(CANDIDATES),
                    help="featviz settings to run (default: all; 'defaults' always runs)")
    ap.add_argument("--at-the-end", action="store_true",
                    help="no lucent, no timing: the pictures of each of --candidates over all "
                         "512 steps (the channels in one batch), to choose a default by")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: one channel per depth, 32 lucent and 64 featviz steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.channels, args.steps = 1, 32
        for settings in CANDIDATES.values():
            settings["steps"] = 64
    for name in set(CANDIDATES) - set(args.candidates) - {"defaults"}:
        del CANDIDATES[name]
    torch.set_num_threads(args.threads)
    if args.at_the_end:
        model = featviz.models.load("inceptionv1", weights=args.weights)
        for name in args.candidates:
            at_the_end(model, chosen(args.channels, args.only), name,
                       CANDIDATES[name].get("steps", 512))
        return 0
    lucent = import_lucent()
    if lucent is None:
        print("lucent 0.1.8 is not installed: pip install --no-deps torch-lucent==0.1.8")
        return 2
    model = featviz.models.load("inceptionv1", weights=args.weights)
    t0 = time.perf_counter()
    rows = []
    for layer, channel, seed in chosen(args.channels, args.only):
        rows.append(channel_row(lucent, model, layer, channel, seed, args.steps))
        r = rows[-1]
        reached = ", ".join(f"{n} {seconds_to_quality(run):.0f} s (step {run.reached_step})"
                            for n, run in r["runs"].items())
        print(f"{layer}:{channel}: lucent {r['lucent'].seconds:.0f} s, held-out "
              f"{r['lucent'].quality.held_out:.1f}, hf {r['lucent'].quality.hf:.3f}, checker "
              f"{r['lucent'].quality.checker:.2f}; "
              f"featviz {reached} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\nInceptionV1, 224 px, batch 1, {args.threads} thread(s); quality = held-out "
          f"objective ({HELD_OUT_DRAWS} transforms), high-frequency share and checkerboard "
          f"within {TOLERANCE - 1:.0%} of lucent's\n")
    print_table(rows)
    if args.batch:
        best = statistics.mode(r["best"] for r in rows)
        b = batch_row(model, rows, best)
        lucent_median = statistics.median(r["lucent"].seconds for r in rows)
        when = (f"every image at lucent's quality by step {b['step']}" if b["step"]
                else "not every image reached lucent's quality (the full run)")
        print(f"\n{b['n']} channels in one batch ({best}): {when}, {b['seconds']:.0f} s, "
              f"{b['per_image']:.1f} s per image; "
              f"lucent's median {lucent_median:.0f} s per channel: "
              f"{lucent_median / b['per_image']:.1f}x")
    if args.figure:
        print(f"\nfigure: {figure(rows, Path(args.figure))}")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
