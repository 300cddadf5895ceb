"""The end of a sweep: the ranks meet to collect every rank's result, and rank 0 sums them up
in one paragraph."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from .manifest import done_jobs
from .ranks import _gather
from .run import SweepResult


def gather_results(result: SweepResult) -> list[SweepResult]:
    """Every rank's result on every rank (the ranks meet here); just ``[result]`` without a
    process group. Do not call it on an interrupted rank: the others may never arrive.

    Args:
        result: this rank's result.
    """
    # the records and keys stay home: the summary reads the manifests, and they can be large
    return _gather(dataclasses.replace(result, records=[], keys=[]))


def summary(results: Sequence[SweepResult], out: str | os.PathLike,
            keys: Sequence[tuple[str, int]] | None = None) -> str:
    """One paragraph about a finished (or interrupted) run of all ranks: jobs of the job list
    (``keys``, default: the first result's) done in ``out``, rendered and skipped this run,
    channels per minute of rendering.

    Args:
        results: every rank's result.
        out: the sweep folder.
        keys: the (layer, channel) jobs of the job list; None for the first result's.
    """
    keys = keys or results[0].keys
    total = results[0].total
    done = len(set(done_jobs(out, warn=False)) & {tuple(k) for k in keys})
    rendered = sum(r.rendered for r in results)
    skipped = sum(r.skipped for r in results)
    wall = max(r.seconds for r in results)
    rate = 60 * rendered / wall if wall > 0 and rendered else 0.0
    state = "interrupted; " if any(r.interrupted for r in results) else ""
    return (f"sweep {out}: {state}{done} of {total} jobs done; this run rendered "
            f"{rendered} on {len(results)} rank(s) and skipped {skipped} already done, "
            f"{rate:.1f} channels/min ({wall:.1f} s)")
