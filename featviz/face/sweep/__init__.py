"""Whole-model sweeps: render every chosen channel of chosen layers, on one process or on many
ranks started by ``torchrun``, resumable after any interruption.

The job list is layer x channel. Job ``n`` of the list belongs to rank ``n % world_size``
(round-robin, so every rank gets a fair share of every layer); a rank renders its pending jobs
of one layer together, ``batch_size`` channels per batch. Job (layer, channel) starts from seed
``seed + channel`` whatever rank, batch or run renders it, the same seed ``featviz render
--objective channel:LAYER:0-N --seed SEED`` gives channel ``c``, so a sweep image is the same
(up to float rounding) on 1 rank or 64, and after a resume.

Output folder::

    sweep.json                 the settings (a resume with other settings is refused) and the
                               layers with their channels
    manifest.rank{R}.jsonl     one JSON line per finished job, appended by rank R only
    {layer}/c{channel:04d}.png the visualization (written atomically, then its manifest line)
    {layer}/c{channel:04d}_top{k}.png   dataset patches and projections, with --images

A job is done when its manifest line (of any rank file) is present and its files exist; a
restarted sweep, with any number of ranks, skips done jobs. A corrupt or cut-off manifest
line is ignored with a warning and its job is rendered again.

The package, one module a job: :mod:`.jobs` (the job list, paths, shares and batches),
:mod:`.ranks` (the ``torchrun`` process group), :mod:`.manifest` (each job's files and manifest
line, and which jobs are done), :mod:`.settings` (``sweep.json`` and the resume check),
:mod:`.run` (:func:`sweep` itself), :mod:`.report` (gathering the ranks' results, the
summary) and :mod:`.view` (reading a folder back: its finished jobs, its notebook view).
Every public name is importable from the package itself.
"""

from ...core.files import image_file
from .jobs import (
    Job,
    batches,
    channel_counts,
    folder_name,
    is_kind,
    job_list,
    job_objective,
    parse_channel_spec,
    shard,
    topk_file,
    unit_layer,
)
from .manifest import (
    IMAGE_SETTINGS,
    MANIFEST_GLOB,
    Manifest,
    done_jobs,
    manifest_files,
    read_manifests,
)
from .ranks import distributed, distributed_env
from .report import gather_results, summary
from .run import SweepResult, sweep
from .settings import SETTINGS_FILE, read_settings
from .view import SweepFolder, collect

__all__ = ["Job", "SweepResult", "sweep", "job_list", "shard", "batches", "channel_counts",
           "parse_channel_spec", "read_manifests", "done_jobs", "Manifest", "distributed",
           "distributed_env", "summary", "gather_results", "read_settings", "image_file",
           "topk_file", "folder_name", "SETTINGS_FILE", "IMAGE_SETTINGS", "manifest_files",
           "MANIFEST_GLOB", "SweepFolder", "collect", "is_kind", "job_objective", "unit_layer"]
