"""Atomic writes: a reader sees the old file or the new one, never a half-written one; and the ``.partial``
convention for folders built in place (no torch import)."""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def unwritable(path: str | Path) -> str:
    """Why nothing can be written at `path` ("" when it can): the nearest existing folder at or above it is a file, or
    is not writable by this process."""
    path = Path(path)
    parent = next((p for p in [path, *path.absolute().parents] if p.exists()), Path("/"))
    if not parent.is_dir():
        return f"{parent} is a file"
    return "" if os.access(parent, os.W_OK | os.X_OK) else f"{parent} is not writable"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields an unused temp path beside `path` for the caller to write; renamed over `path` when the block
    succeeds, removed when it fails: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> Path:
    """JSON (indented) through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
    return Path(path)


PARTIAL = ".partial"


def is_partial(path: str | Path) -> bool:
    """True for a folder still being written as ``<name>.partial/`` (or left half-written by an interrupted run)."""
    return Path(path).name.endswith(PARTIAL)
