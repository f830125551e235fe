"""The kinds of failure the `ppkt` command reports without a traceback (no torch import here).

`UserError`: input or settings the user can fix (a config key, a frame, a scene, a checkpoint, teacher weights);
the message names the file or key and the problem, and the command prints ``ppkt: error: <message>`` and exits 2.
`RunFailed`: the work itself failed (exit 1). `Interrupted`: a run stopped by SIGINT / SIGTERM; its message says what
was saved and how to resume (exit 128 + the signal number). Anything else is a bug: `ppkt` says so, how to see its
traceback (PPKT_DEBUG=1) and where to report it (exit 1).
"""
from __future__ import annotations

import signal


class UserError(ValueError):
    """Bad input or settings; the message names the file or key and the problem."""


class ConfigError(UserError):
    """A config file, override or setting is invalid; the message names the file or key."""


class RunFailed(Exception):
    """The work itself failed (a loss that diverged, a check a benchmark must pass first); the message says what
    happened and what to try. The command prints ``ppkt: error: <message>`` and exits 1."""


class Diverged(RunFailed, FloatingPointError):
    """The training loss became NaN or infinite."""


class Interrupted(Exception):
    """A run stopped by a signal after saving what could be saved; exit status 128 + signal number."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
