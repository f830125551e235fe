"""Resumable output folders: one folder per scan or scene, complete or absent.

A folder is built in ``<name>.partial/``; its marker ``ppkt_done.json`` (what was written, counts) is written
last and atomically, then the folder is renamed to ``<name>/``. A rerun skips folders with a marker and rebuilds
half-written ones, and readers never see a ``.partial`` folder as data (``ppkt.atomic.is_partial``).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Optional

from ppkt.atomic import PARTIAL, write_json

MARKER = "ppkt_done.json"


def done_info(folder: Path) -> Optional[dict]:
    """The marker of a finished folder, or None if the folder is missing or unfinished."""
    marker = Path(folder) / MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # an unreadable marker: rebuild the folder


def build_folder(final: Path, build: Callable[[Path], dict]) -> dict:
    """Build `final` unless it is finished; returns its marker info plus ``"skipped": True/False``.

    build(tmp_folder) writes every file of the folder into tmp_folder and returns the info for the marker.
    """
    final = Path(final)
    info = done_info(final)
    if info is not None:
        return {**info, "skipped": True}
    partial = final.with_name(final.name + PARTIAL)
    if partial.exists():
        shutil.rmtree(partial)  # half-written by an interrupted run: start it again
    partial.mkdir(parents=True)
    info = build(partial)
    write_json(partial / MARKER, info)
    if final.exists():
        shutil.rmtree(final)  # an unfinished folder without a marker
    partial.rename(final)
    return {**info, "skipped": False}
