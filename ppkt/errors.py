"""The two kinds of failure the `ppkt` command reports without a traceback (no torch import here).

`UserError`: input or settings the user can fix (a config key, a frame, a scene, a checkpoint, teacher weights);
the message names the file or key and the problem, and the command prints ``ppkt: error: <message>`` and exits 2.
`Interrupted`: a run stopped by SIGINT / SIGTERM; its message says what was saved and how to resume.
"""
from __future__ import annotations

import signal


class UserError(ValueError):
    """Bad input or settings; the message names the file or key and the problem."""


class ConfigError(UserError):
    """A config file, override or setting is invalid; the message names the file or key."""


class Interrupted(Exception):
    """A run stopped by a signal after saving what could be saved; exit status 128 + signal number."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
