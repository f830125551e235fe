"""What made a file: the ppkt version and the commit of its source (`git describe`; "unknown" outside a checkout)."""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from ppkt import __version__


@functools.lru_cache(maxsize=1)
def commit() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def stamp() -> dict:
    """{"ppkt_version", "commit"} for the metadata of a file ppkt writes."""
    return {"ppkt_version": __version__, "commit": commit()}
