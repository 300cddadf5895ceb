"""Training a TopK sparse autoencoder on a layer's stored activation vectors, streamed from an
:class:`~featviz.methods.atlas_store.ActivationStore` one shard at a time, resumable.

The recipe is Gao et al. 2024, "Scaling and evaluating sparse autoencoders" (arXiv 2406.04093):

* the vectors are divided by one number, ``scale``, so that their mean norm is 1 (estimated from
  a fixed sample of the training vectors, stored in the SAE), so one learning rate serves
  layers of any magnitude;
* ``b_dec`` starts at the geometric median of that sample, the decoder's rows as random unit
  vectors and the encoder as the decoder's transpose;
* Adam (the paper's epsilon, 6.25e-10), the decoder's rows kept at unit norm after every step,
  the part of their gradient parallel to each row removed before it;
* an auxiliary loss (AuxK) that makes the ``aux_k`` most active *dead* features (not fired for
  ``dead_after`` training vectors) reconstruct what the live ones leave, weighted ``aux_coef``.

The held-out images (:func:`held_out_images`: a fixed, evenly spaced ``held_out`` fraction of
the store's images) are never trained on; :func:`featviz.methods.dictionary.measure` measures
on them. A checkpoint is written to the folder after every shard; :func:`train` called again on
the same folder goes on from it and ends with the same SAE as a run that was never stopped.
Every random choice is drawn from a generator seeded by ``(seed, epoch, shard)``, so the
position in the run is its whole random state.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...core.files import write_atomic
from ...errors import FeatvizError
from ..atlas_store import ActivationStore
from .sae import SparseAutoencoder

CHECKPOINT = "checkpoint.pt"
SAE_FILE = "sae.pt"
#: how many training vectors ``scale`` and the initial ``b_dec`` are estimated from
INIT_SAMPLE = 16384
#: Adam's epsilon in Gao et al. 2024 (their vectors have unit mean norm, as ours do)
ADAM_EPS = 6.25e-10
#: the training settings a resumed run must share with the run it continues
SETTINGS = ("layer", "channels", "vectors", "n_features", "k", "lr", "epochs", "batch_size",
            "aux_k", "aux_coef", "dead_after", "held_out", "seed")


@dataclass
class TrainResult:
    """What :func:`train` gives back.

    ``sae`` is the dictionary; ``history`` has one entry per shard trained on: ``epoch``,
    ``shard``, ``mse`` (mean squared error per vector, in units where the vectors' mean norm
    is 1), ``aux`` (the AuxK loss, 0 while no feature is dead) and ``dead`` (the fraction of
    features not fired for ``dead_after`` vectors). ``seconds`` is the training time over every
    call (checkpoint writes left out); ``path`` the file the final SAE was saved to (None for a
    run stopped early); ``held_out`` the store's image indices it never saw; ``settings`` what
    it was trained with.
    """

    sae: SparseAutoencoder
    history: list[dict]
    seconds: float
    path: Path | None
    held_out: np.ndarray
    settings: dict

    @property
    def finished(self) -> bool:
        """Whether every epoch is done (else :func:`train` on the folder continues it)."""
        return self.path is not None

    def __str__(self) -> str:
        state = f"saved to {self.path}" if self.finished else "stopped early (resumable)"
        last = self.history[-1] if self.history else None
        loss = (f"; last shard: mse {last['mse']:.4g}, {last['dead']:.1%} dead" if last
                else "")
        return f"{self.sae} after {len(self.history)} shards, {self.seconds:.1f} s{loss}; {state}"


def held_out_images(n_images: int, fraction: float) -> np.ndarray:
    """The image indices of a store held out from training: ``round(fraction * n_images)``
    of them (at least one when ``fraction > 0``), evenly spaced through the store, so that a
    store collected class by class keeps some of every class. The same on every call.

    Args:
        n_images: how many images the store holds.
        fraction: the share of them to hold out, in [0, 1).
    """
    if not 0 <= fraction < 1:
        raise FeatvizError(f"held_out={fraction!r} must be a fraction in [0, 1)")
    if fraction == 0 or n_images == 0:
        return np.zeros(0, dtype=np.int64)
    m = min(n_images, max(1, round(fraction * n_images)))
    return np.unique(((np.arange(m) + 0.5) * n_images / m).astype(np.int64))


def default_lr(n_features: int) -> float:
    """Adam's learning rate for a dictionary of ``n_features``: 2e-4 at 2^14 features, scaled
    as 1/sqrt(n) (Gao et al. 2024 find the best rate falls as 1/sqrt(n), their Fig. 3; the
    same rule as EleutherAI's ``sparsify``).

    Args:
        n_features: the dictionary's size.
    """
    return 2e-4 / math.sqrt(n_features / 2 ** 14)


def open_store(store: ActivationStore | str | os.PathLike) -> ActivationStore:
    """``store`` itself, or the store in that folder; an error naming the folder when it holds
    none, or no vectors.

    Args:
        store: an activation store or the folder of one.
    """
    if not isinstance(store, ActivationStore):
        store = ActivationStore.open(store)
    if len(store) == 0 or not store.channels:
        raise FeatvizError(f"the activation store in {store.folder} holds no vectors yet; "
                           "collect some with featviz.atlas_store.collect")
    return store


def train(store: ActivationStore | str | os.PathLike, folder: str | os.PathLike, *,
          n_features: int | None = None, k: int = 32, lr: float | None = None,
          epochs: int = 4, batch_size: int = 4096, aux_k: int | None = None,
          aux_coef: float = 1 / 32, dead_after: int | None = None, held_out: float = 0.1,
          seed: int = 0, device: str | torch.device = "cpu", progress: bool = True,
          stop_after: int | None = None) -> TrainResult:
    """Train a TopK sparse autoencoder on the vectors of ``store`` (all but the held-out
    images), writing a checkpoint to ``folder`` after every shard and the final SAE to
    ``folder/sae.pt``. Called again on the same folder it continues the run (a finished one
    is returned as it is); other settings on that folder are an error naming them.

    Args:
        store: the activation store (or its folder) to train on.
        folder: where the checkpoint and the final ``sae.pt`` are written.
        n_features: the dictionary's size; default 8 x the layer's channels.
        k: features active per vector (TopK); at most ``n_features``.
        lr: Adam's learning rate; default :func:`default_lr` (2e-4 x sqrt(2^14 / n)).
        epochs: passes over the training vectors (default 4).
        batch_size: vectors per step (default 4096; the last batch of a shard may be smaller).
        aux_k: dead features the AuxK loss uses; default the power of two nearest half the
            channels (the paper's choice), at most ``n_features``; 0 turns AuxK off.
        aux_coef: the AuxK loss's weight (default 1/32, the paper's).
        dead_after: training vectors after which a feature that has not fired counts as dead;
            default a quarter of the training vectors, at most 10 million (the paper's).
        held_out: the share of the store's images never trained on (:func:`held_out_images`).
        seed: seeds the initial decoder, the order of the shards and of the vectors in each.
        device: where the SAE trains (``"cuda"`` for a GPU); the shards are read on the CPU.
            Not a setting: a run may go on elsewhere (bit for bit alike on one device only).
        progress: show a progress bar.
        stop_after: stop after this many shards (to test resuming); None runs to the end.
    """
    store, folder = open_store(store), Path(folder)
    held = held_out_images(len(store.images), held_out)
    settings = _settings(store, held, n_features=n_features, k=k, lr=lr, epochs=epochs,
                         batch_size=batch_size, aux_k=aux_k, aux_coef=aux_coef,
                         dead_after=dead_after, held_out=held_out, seed=seed)
    saved = _load_checkpoint(folder, settings)
    if saved is not None and saved["done"]:
        return _result(SparseAutoencoder.load(folder / SAE_FILE), saved, folder / SAE_FILE, held)
    run = _Run(store, held, settings, saved, torch.device(device))
    return run.go(folder, progress, stop_after)


def _settings(store: ActivationStore, held: np.ndarray, **given) -> dict:
    """Every setting with its default filled in and checked; an error names a bad one."""
    c = int(store.channels)
    n = given["n_features"] if given["n_features"] is not None else 8 * c
    if n < 1:
        raise FeatvizError(f"n_features={n} must be at least 1")
    k = given["k"]
    if not 1 <= k <= n:
        raise FeatvizError(f"k={k} must be between 1 and the dictionary size n_features={n}")
    aux_k = given["aux_k"]
    aux_k = min(n, 2 ** round(math.log2(max(1.0, c / 2)))) if aux_k is None else aux_k
    if not 0 <= aux_k <= n:
        raise FeatvizError(f"aux_k={aux_k} must be between 0 and n_features={n}")
    for name in ("epochs", "batch_size"):
        if given[name] < 1:
            raise FeatvizError(f"{name}={given[name]} must be at least 1")
    if given["aux_coef"] < 0:
        raise FeatvizError(f"aux_coef={given['aux_coef']} must be 0 or more")
    train_vectors = _count_training(store, held)
    dead_after = given["dead_after"]
    if dead_after is None:
        dead_after = max(given["batch_size"], min(10_000_000, train_vectors // 4))
    if dead_after < 1:
        raise FeatvizError(f"dead_after={dead_after} must be at least 1 vector")
    lr = given["lr"] if given["lr"] is not None else default_lr(n)
    if not lr > 0:
        raise FeatvizError(f"lr={lr} must be above 0")
    return {"layer": store.layer, "channels": c, "vectors": len(store), "n_features": n,
            "k": k, "lr": float(lr), "epochs": given["epochs"],
            "batch_size": given["batch_size"], "aux_k": aux_k,
            "aux_coef": float(given["aux_coef"]), "dead_after": int(dead_after),
            "held_out": float(given["held_out"]), "seed": given["seed"]}


def _count_training(store: ActivationStore, held: np.ndarray) -> int:
    """How many vectors of ``store`` are trained on; an error when none are."""
    images = store.column("image")
    count = int((~np.isin(images, held)).sum())
    if count == 0:
        raise FeatvizError(f"the store in {store.folder} has no vectors left to train on "
                           f"after holding out {len(held)} of its {len(store.images)} images; "
                           "lower held_out or collect more images")
    return count


def _load_checkpoint(folder: Path, settings: dict) -> dict | None:
    """The folder's checkpoint when its settings are ``settings``; None when it has none."""
    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    differ = [key for key in SETTINGS if saved["settings"].get(key) != settings[key]]
    if differ:
        said = ", ".join(f"{key}={saved['settings'].get(key)!r} there, {settings[key]!r} here"
                         for key in differ)
        raise FeatvizError(f"{folder} holds a training run with other settings ({said}); "
                           "give the same settings to continue it, or a new folder")
    return saved


def _result(sae: SparseAutoencoder, saved: dict, path: Path | None,
            held: np.ndarray) -> TrainResult:
    return TrainResult(sae, list(saved["history"]), float(saved["seconds"]), path, held,
                       dict(saved["settings"]))


def initial_sae(store: ActivationStore, held: np.ndarray, settings: dict) -> SparseAutoencoder:
    """The SAE training starts from (see the module): ``scale`` the mean norm and ``b_dec`` the
    geometric median of the first :data:`INIT_SAMPLE` training vectors in the store's order,
    decoder rows random unit vectors drawn with ``seed``, the encoder their transpose.

    Args:
        store: the activation store.
        held: the held-out image indices (:func:`held_out_images`).
        settings: the run's settings (``n_features``, ``k``, ``seed``).
    """
    sample = _sample(store, held, INIT_SAMPLE)
    scale = float(np.linalg.norm(sample, axis=1).mean())
    if not scale > 0:
        raise FeatvizError(f"every training vector in {store.folder} is zero: there is "
                           "nothing to learn a dictionary of")
    n, c = settings["n_features"], store.channels
    sae = SparseAutoencoder(c, n, settings["k"], scale, store.layer)
    gen = torch.Generator().manual_seed(settings["seed"])
    rows = torch.randn(n, c, generator=gen, dtype=torch.float64)
    rows = (rows / rows.norm(dim=1, keepdim=True)).float()
    with torch.no_grad():
        sae.W_dec.copy_(rows)
        sae.W_enc.copy_(rows.T)
        sae.b_dec.copy_(torch.from_numpy(geometric_median(sample / scale)).float())
    return sae


def _sample(store: ActivationStore, held: np.ndarray, limit: int) -> np.ndarray:
    """The first ``limit`` training vectors in the store's order, float64 [m, C]."""
    parts, count = [], 0
    for shard in store.shards():
        rows = shard["vectors"][~np.isin(shard["image"], held)][:limit - count]
        parts.append(rows.astype(np.float64))
        count += len(rows)
        if count >= limit:
            break
    return np.concatenate(parts)


def geometric_median(x: np.ndarray, iterations: int = 64, tol: float = 1e-7) -> np.ndarray:
    """The point with the least summed distance to the rows of ``x`` [m, d] (Weiszfeld's
    iterations from the mean): a centre that outlying vectors pull less than they pull the mean.

    Args:
        x: the points, one per row.
        iterations: at most this many refinements.
        tol: stop once a step moves the estimate less than this (relative to its norm).
    """
    y = x.mean(axis=0)
    for _ in range(iterations):
        w = 1.0 / np.maximum(np.linalg.norm(x - y, axis=1), 1e-12)
        nxt = (w[:, None] * x).sum(axis=0) / w.sum()
        moved = np.linalg.norm(nxt - y)
        y = nxt
        if moved <= tol * max(1.0, np.linalg.norm(y)):
            break
    return y


class _Run:
    """One training run's state: the SAE, Adam, each feature's vectors since it last fired,
    where in the run it is, the history; made new or from a checkpoint."""

    def __init__(self, store: ActivationStore, held: np.ndarray, settings: dict,
                 saved: dict | None, device: torch.device):
        self.store, self.held, self.s = store, held, settings
        self.files = [shard["file"] for shard in store.manifest["shards"]]
        if saved is None:
            self.sae = initial_sae(store, held, settings)
        else:
            cfg = saved["config"]
            self.sae = SparseAutoencoder(cfg["d_in"], cfg["n_features"], cfg["k"],
                                         cfg["scale"], cfg["layer"])
            self.sae.load_state_dict(saved["sae"])
        self.device = device
        self.sae.to(device)
        self.opt = torch.optim.Adam(self.sae.parameters(), lr=settings["lr"], eps=ADAM_EPS)
        self.since_fired = torch.zeros(settings["n_features"], dtype=torch.int64, device=device)
        self.epoch, self.position, self.history, self.seconds = 0, 0, [], 0.0
        if saved is not None:
            self.opt.load_state_dict(saved["optimizer"])
            self.since_fired = saved["since_fired"].to(device, copy=True)
            self.epoch, self.position = saved["epoch"], saved["position"]
            self.history, self.seconds = list(saved["history"]), float(saved["seconds"])

    def order(self, epoch: int) -> np.ndarray:
        """The shards' order in ``epoch``."""
        return np.random.default_rng([self.s["seed"], epoch]).permutation(len(self.files))

    def go(self, folder: Path, progress: bool, stop_after: int | None) -> TrainResult:
        """Train from where the run is to its end, or for ``stop_after`` shards."""
        from tqdm.auto import tqdm

        total = self.s["epochs"] * len(self.files)
        bar = tqdm(total=total, initial=self.epoch * len(self.files) + self.position,
                   disable=not progress, unit="shard", desc="train SAE")
        done = 0
        while self.epoch < self.s["epochs"] and (stop_after is None or done < stop_after):
            start = time.perf_counter()
            self.shard(int(self.order(self.epoch)[self.position]))
            self.position += 1
            if self.position == len(self.files):
                self.epoch, self.position = self.epoch + 1, 0
            self.seconds += time.perf_counter() - start
            finished = self.epoch == self.s["epochs"]
            if finished:
                self.sae.save(folder / SAE_FILE)
            self.checkpoint(folder, finished)
            done += 1
            bar.update(1)
            if self.history:
                bar.set_postfix(mse=f"{self.history[-1]['mse']:.4g}")
        bar.close()
        path = folder / SAE_FILE if self.epoch == self.s["epochs"] else None
        return TrainResult(self.sae, list(self.history), self.seconds, path, self.held,
                           dict(self.s))

    def shard(self, index: int) -> None:
        """Train on the training vectors of shard ``index``, in a seeded shuffled order."""
        with np.load(self.store.folder / self.files[index]) as z:
            keep = ~np.isin(z["image"], self.held)
            vectors = z["vectors"][keep]
        if len(vectors) == 0:  # a shard of held-out images only
            return
        rng = np.random.default_rng([self.s["seed"], self.epoch, index])
        x = torch.from_numpy(vectors[rng.permutation(len(vectors))].astype(np.float32))
        x = x.to(self.device)
        x = x / self.sae.scale
        sums = np.zeros(2)
        for batch in x.split(self.s["batch_size"]):
            mse, aux = self.step(batch)
            sums += (mse * len(batch), aux * len(batch))
        dead = (self.since_fired >= self.s["dead_after"]).float().mean().item()
        self.history.append({"epoch": self.epoch, "shard": index,
                             "mse": float(sums[0] / len(x)), "aux": float(sums[1] / len(x)),
                             "dead": dead})

    def step(self, x: torch.Tensor) -> tuple[float, float]:
        """One Adam step on a batch ``x`` [b, C] already divided by ``scale``; returns the
        batch's (mse, aux) losses."""
        sae, s = self.sae, self.s
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        z = _top(torch.relu(pre), s["k"])
        err = x - (z @ sae.W_dec + sae.b_dec)
        mse = err.pow(2).sum(-1).mean()
        aux = self.aux_loss(pre, err.detach())
        self.opt.zero_grad(set_to_none=True)
        (mse + s["aux_coef"] * aux).backward()
        with torch.no_grad():
            w, g = sae.W_dec, sae.W_dec.grad
            g -= (g * w).sum(dim=1, keepdim=True) * w  # no change along each row: its norm
        self.opt.step()
        with torch.no_grad():  # the rows back to unit norm (the encoder as it is, as the
            w /= w.norm(dim=1, keepdim=True).clamp_min(1e-8)  # paper's code does)
            fired = (z > 0).any(dim=0)
            self.since_fired += len(x)
            self.since_fired[fired] = 0
        return mse.item(), aux.item()

    def aux_loss(self, pre: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
        """AuxK: how well the ``aux_k`` most active dead features reconstruct ``err``, the
        error the live ones leave; 0 while none is dead (or AuxK is off)."""
        dead = self.since_fired >= self.s["dead_after"]
        n_dead = int(dead.sum())
        if n_dead == 0 or self.s["aux_k"] == 0 or self.s["aux_coef"] == 0:
            return pre.new_zeros(())
        masked = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
        top = masked.topk(min(self.s["aux_k"], n_dead), dim=-1)
        z = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        return (err - z @ self.sae.W_dec).pow(2).sum(-1).mean()

    def checkpoint(self, folder: Path, done: bool) -> None:
        """Write the whole state of the run to ``folder`` (atomically)."""
        blob = {"settings": self.s, "config": self.sae.config(),
                "sae": {k: v.detach().cpu().clone() for k, v in self.sae.state_dict().items()},
                "optimizer": self.opt.state_dict(), "since_fired": self.since_fired.cpu(),
                "epoch": self.epoch, "position": self.position, "history": self.history,
                "seconds": self.seconds, "done": done}
        write_atomic(folder / CHECKPOINT, lambda tmp: torch.save(blob, tmp))


def _top(z: torch.Tensor, k: int) -> torch.Tensor:
    """``z`` with all but its ``k`` largest values per row set to 0 (as the SAE encodes)."""
    if k >= z.shape[-1]:
        return z
    top = z.topk(k, dim=-1)
    return torch.zeros_like(z).scatter(-1, top.indices, top.values)
