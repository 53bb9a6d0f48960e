"""Ctrl-C and SIGTERM during training: the first one asks the loop to stop at its next safe
point (after a whole step, so the checkpoint it saves is consistent); a second one stops at
once (KeyboardInterrupt, no checkpoint)."""

from __future__ import annotations

import signal
import sys
import threading


class Interrupts:
    """`with Interrupts() as stop:` ... `if stop.requested: save and leave`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        print(f"\n{self.requested}: saving a checkpoint after this step "
              "(press Ctrl-C again to stop now without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()
