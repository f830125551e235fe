"""Checked option types of the `ppkt` commands (argparse `type=`): a count or size out of its range, an output file
that is a folder (or the reverse), an output whose nearest existing parent is not a writable folder, an input that
does not exist -- each is `ppkt: error: <option>: <problem>` with exit status 2 before any work, nothing written.
Numbers are checked while parsing; paths (`PathCheck`) after parsing, by `ppkt.cli.main`, so that parsing a command
line does not depend on the files (`check_paths`).

    p.add_argument("--workers", type=count(1), ...)          # an integer >= 1
    p.add_argument("--tile", type=number(above=0), ...)      # a finite number > 0
    p.add_argument("--min-score", type=fraction, ...)        # a number in [0, 1]
    p.add_argument("--out", type=output_dir, ...)            # a folder to make or fill
    p.add_argument("--json", type=output_file, ...)          # a file to write
    p.add_argument("--checkpoint", type=input_file, ...)     # a file that exists
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Callable, Optional

Problem = argparse.ArgumentTypeError


def count(minimum: int = 1, maximum: Optional[int] = None) -> Callable[[str], int]:
    """An integer in [minimum, maximum]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise Problem(f"must be a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise Problem(f"must be {_range(minimum, maximum)}, got {value}")
        return value

    parse.__name__ = "count"
    return parse


def number(minimum: Optional[float] = None, maximum: Optional[float] = None,
           above: Optional[float] = None) -> Callable[[str], float]:
    """A finite number >= minimum (or > above) and <= maximum."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise Problem(f"must be a number, got {text!r}") from None
        bad = (not math.isfinite(value) or (minimum is not None and value < minimum)
               or (above is not None and value <= above) or (maximum is not None and value > maximum))
        if bad:
            need = [f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None else "",
                    f"<= {maximum:g}" if maximum is not None else ""]
            raise Problem(f"must be a finite number {' and '.join(n for n in need if n)}".rstrip() + f", got {text}")
        return value

    parse.__name__ = "number"
    return parse


fraction = number(0.0, 1.0)


def _range(minimum: int, maximum: Optional[int]) -> str:
    return f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"


def _writable_parent(path: Path) -> None:
    """Problem unless the nearest existing folder above `path` is a folder this process can write in."""
    from ppkt.atomic import unwritable

    why = unwritable(path.parent if path.exists() else path)
    if why:
        raise Problem(f"{path}: {why}")


def _output_file(text: str) -> str:
    """A file to write: not an existing folder, its folder writable (made if missing)."""
    path = Path(text)
    if path.is_dir():
        raise Problem(f"{path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise Problem(f"{path} is not writable")
    _writable_parent(path)
    return text


def _output_dir(text: str) -> str:
    """A folder to make or write into: not an existing file, writable."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise Problem(f"{path} is a file; give a folder")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise Problem(f"{path} is not writable")
    if not path.exists():
        _writable_parent(path)
    return text


def _input_file(text: str) -> str:
    """A file that exists."""
    path = Path(text)
    if path.is_dir():
        raise Problem(f"{path} is a folder; give a file")
    if not path.is_file():
        raise Problem(f"{path}: no such file")
    return text


def _input_dir(text: str) -> str:
    """A folder that exists."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise Problem(f"{path} is a file; give a folder")
    if not path.is_dir():
        raise Problem(f"{path}: no such folder")
    return text


def _input_path(text: str) -> str:
    """A file or folder that exists."""
    if not Path(text).exists():
        raise Problem(f"{text}: no such file or folder")
    return text


class PathCheck:
    """An option type that keeps the text as it is while parsing; `check(text)` raises Problem (after parsing)."""

    def __init__(self, check: Callable[[str], str]):
        self.check = check
        self.__name__ = check.__name__.lstrip("_")

    def __call__(self, text: str) -> str:
        return text


output_file, output_dir = PathCheck(_output_file), PathCheck(_output_dir)
input_file, input_dir, input_path = PathCheck(_input_file), PathCheck(_input_dir), PathCheck(_input_path)


def register_path_checks(parser: argparse.ArgumentParser) -> None:
    """Give every (sub-)parser the list of its path options as the default `path_checks` (dest, name, PathCheck)."""
    checks = [(a.dest, max(a.option_strings, key=len) if a.option_strings else (a.metavar or a.dest.upper()), a.type)
              for a in parser._actions if isinstance(a.type, PathCheck)]
    parser.set_defaults(path_checks=checks)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                register_path_checks(sub)


def check_paths(args: argparse.Namespace) -> Optional[str]:
    """`<option>: <problem>` of the first path option of the parsed command that fails its check, else None."""
    for dest, name, check in getattr(args, "path_checks", []):
        value = getattr(args, dest, None)
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                try:
                    check.check(str(item))
                except Problem as err:
                    return f"{name}: {err}"
    return None
