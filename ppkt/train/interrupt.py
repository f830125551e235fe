"""Ctrl-C (SIGINT) and SIGTERM during training: finish the current iteration, save it, then stop.

The handlers are installed for the whole run (setup, iterations, final evaluation). The first signal sets a flag
that the training loop reads after each iteration (under several processes, all of them agree through an
all-reduce, so they stop at the same iteration); the loop then writes its checkpoint and raises
`ppkt.errors.Interrupted`. A second signal stops at once, saying which checkpoint can be resumed (every checkpoint
is written atomically, so the last one written stays valid). A signal after the last iteration lets the run finish.
"""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Callable, Optional

import torch
import torch.distributed as dist

from ppkt.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Context manager installing the handlers (main thread only; elsewhere it does nothing)."""

    def __init__(self) -> None:
        self.signum = 0
        self.iteration = 0  # the iteration under way (1-based; set by the training loop), for the first signal's message
        self.already_saved = "nothing (no checkpoint yet)"  # what a second signal leaves, set by the training loop
        self._old: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old.clear()

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signum:  # the second signal: stop now
            raise Interrupted(f"stopped at once by a second {signal.Signals(signum).name}; "
                              f"what can be resumed: {self.already_saved}", signum)
        self.signum = signum
        when = f"after iteration {self.iteration}" if self.iteration else "after the first iteration"
        sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping {when}, which is saved first (send it again to "
                         "stop at once)\n")
        sys.stderr.flush()

    def requested(self, device: torch.device) -> int:
        """The signal number if any process was signalled (all processes get the same answer), else 0."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def after_iteration(self, done: int, stop: int, total: int, saved: bool, save: Callable[[int], None],
                        checkpoint: Path, resume: str, device: torch.device,
                        before_stop: Callable[[], None] = lambda: None) -> None:
        """Called by every process after iteration `done` (of `total`; this call runs to `stop`), once the periodic
        `checkpoint` is written if `saved`. On a stop request: save(done) unless saved, run `before_stop` (close the
        logs), raise Interrupted naming the file and the `resume` command."""
        if saved:
            self.already_saved = f"the checkpoint of iteration {done} ({checkpoint})"
        signum = self.requested(device)
        if signum and done < stop:
            if not saved:
                save(done)
            before_stop()
            raise Interrupted(f"{signal.Signals(signum).name}: stopped after iteration {done} of {total}, saved in "
                              f"{checkpoint}; continue with `{resume}`", signum)

