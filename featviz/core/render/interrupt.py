"""Ctrl-C during a render. Where a person watches (a notebook, IPython, the Python prompt, the
command line), the first Ctrl-C ends the render after the step in flight and returns what was
made; a second Ctrl-C interrupts at once. Elsewhere (scripts, test suites) Ctrl-C is an
ordinary KeyboardInterrupt that stops the program, so nothing swallows it."""

from __future__ import annotations

import signal
import sys
import threading

POLICIES = ("auto", "return", "raise")


def interactive() -> bool:
    """Whether a person is at a prompt: the Python REPL, IPython or a Jupyter kernel."""
    if hasattr(sys, "ps1"):
        return True
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    return get is not None and get() is not None


class Interrupt:
    """Context manager that turns the first Ctrl-C into a request to stop (``requested``) when
    the policy keeps partial results: ``"return"``, or ``"auto"`` in an interactive session.
    The previous SIGINT handler comes back at the first Ctrl-C (so the second one interrupts)
    and on exit."""

    def __init__(self, policy: str):
        if policy not in POLICIES:
            raise ValueError(f"interrupt must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.keep = policy == "return" or (policy == "auto" and interactive())
        self.requested = False
        self._previous = None
        self._installed = False

    def __enter__(self) -> Interrupt:
        # signal handlers can only be set from the main thread; elsewhere Ctrl-C is not ours
        if self.keep and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._first)
            self._installed = True
        return self

    def _first(self, signum: int, frame: object) -> None:
        self.requested = True
        self._restore()

    def _restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def __exit__(self, *exc: object) -> None:
        self._restore()
