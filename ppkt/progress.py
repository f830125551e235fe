"""Progress of a long loop, readable both on a terminal and in a log file (no torch import here).

On a terminal (the stream is a TTY) a tqdm bar is drawn; in a pipe or a file there is no bar, and each
`report(step, ...)` prints one plain line instead, e.g. ``pretrain 10/200  loss 6.213  lr 0.0998  fps 7.3``.
Everything goes to stderr, so a command's results on stdout stay clean.

    with Progress(200, "pretrain") as progress:
        for step in range(1, 201):
            ...
            progress.update(1)
            if step % 10 == 0:
                progress.report(step, loss=loss, lr=lr)
"""
from __future__ import annotations

import sys
from typing import Any, Optional, TextIO

__all__ = ["Progress", "format_values"]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_values(values: dict, sep: str = "  ", kv: str = " ") -> str:
    """``loss 6.213  lr 0.0998``: floats with 4 significant digits, anything else as str()."""
    return sep.join(f"{k}{kv}{_fmt(v)}" for k, v in values.items())


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """A tqdm bar on a terminal; plain report lines elsewhere. Use it as a context manager (the bar is closed,
    and the cursor is at the start of a line, however the block ends).

    total: the number of steps (None: unknown); desc: the name starting each line; unit: tqdm's unit;
    initial: steps already done (a resumed run); enabled=False: no bar and no report lines (write still prints);
    leave: keep the finished bar on screen; stream: where to draw and print (default: sys.stderr at creation).
    """

    def __init__(self, total: Optional[int], desc: str, unit: str = "it", *, initial: int = 0, enabled: bool = True,
                 leave: bool = True, stream: Optional[TextIO] = None):
        self.total, self.desc, self.n, self.enabled = total, desc, initial, enabled
        self.stream = sys.stderr if stream is None else stream
        self.bar = None
        if enabled and _isatty(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, leave=leave,
                            dynamic_ncols=True)

    def set_total(self, total: Optional[int]) -> None:
        """Change the number of steps (known only once the work is planned)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def update(self, n: int = 1) -> None:
        """Advance by n steps (moves the bar; prints nothing without one)."""
        self.n += n
        if self.bar is not None:
            self.bar.update(n)

    def report(self, step: Optional[int] = None, **values: Any) -> None:
        """Show `values` at `step` (default: the current count): the bar's postfix, or one line without a bar."""
        if step is not None and step != self.n:
            self.update(step - self.n)
        if self.bar is not None:
            self.bar.set_postfix_str(format_values(values, ", ", "="))
        elif self.enabled:
            where = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
            line = f"{self.desc} {where}"
            if values:
                line += "  " + format_values(values)
            self._print(line)

    def write(self, message: str) -> None:
        """Print a message on its own line (above the bar when one is drawn), even when disabled."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            self._print(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
