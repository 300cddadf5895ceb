"""Which torch devices the face uses: the default one (the only place it is chosen, for the
``featviz`` commands and for sweeps under ``torchrun``) and the ones this machine has."""

from __future__ import annotations

import torch


def default_device() -> str:
    """The device used when none is given: ``"cuda"`` when CUDA is present, else ``"cpu"``.

    Asked at each call, not at import, so that a process (or a test) that hides CUDA later
    gets the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def available_devices() -> list[str]:
    """The devices of this machine that ``--device`` accepts."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def present(dev: torch.device) -> bool:
    """Whether this machine has a device.

    Args:
        dev: a device that is not the CPU (the CPU is always there).
    """
    backend = torch.backends.mps if dev.type == "mps" else getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if is_available is None or not is_available():
        return False
    count = getattr(backend, "device_count", lambda: 1)()
    return dev.index is None or dev.index < count
