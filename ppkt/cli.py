"""The `ppkt` command: the parser of every sub-command (ppkt.commands.*) and the error handling around them.

Config overrides (`key=value`) may come anywhere among a command's options. Errors the user can fix
(ppkt.errors.UserError) print as one ``ppkt: error: <message>`` line on stderr and exit 2, without a traceback.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import List, Optional

from ppkt.commands import (HelpFormatter, benchmark, cache, figures, finetune, info, overlaps, pointcept, predict,
                           prepare, pretrain, synth, teacher)
from ppkt.commands.options import check_paths, register_path_checks
from ppkt.errors import Interrupted, RunFailed, UserError

#: a config override: a dotted key, "=", a value (`train.iterations=100`, `data.roots=[a,b]`)
OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")


class Parser(argparse.ArgumentParser):
    """argparse's parser (of `ppkt` and, inherited, of every sub-command) whose errors are one line in the form of
    every other user error: ``ppkt: error: <option>: <problem>``, exit status 2. Options are never abbreviated
    (`--scene` is not `--scenes`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        def name(m: re.Match) -> str:
            return max(m.group(1).split("/"), key=len) + ": "  # "-o/--out" -> "--out"

        message = re.sub(r"^argument ([^:]+): ", name, message)
        self.exit(2, f"ppkt: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ppkt", formatter_class=HelpFormatter,
        description="Contrastive pixel-to-point knowledge transfer: pretrain 3D networks from 2D ones.",
        epilog="`ppkt COMMAND --help` lists a command's options with their defaults.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (pretrain, cache, synth, teacher, finetune, predict, info, pointcept, prepare, overlaps, benchmark,
                  figures):
        group.add_commands(sub)
    register_path_checks(parser)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None) -> argparse.Namespace:
    """parser.parse_args, but a command's `key=value` overrides may also follow or sit between its options.

    (argparse fills the `overrides` positional with the first run of them only, and subcommands rule out
    parse_intermixed_args.) Any other leftover argument is the usual "unrecognized arguments" error, exit 2.
    """
    args, extras = parser.parse_known_args(argv)
    takes_overrides = hasattr(args, "overrides")
    unknown = [a for a in extras if not (takes_overrides and OVERRIDE.match(a))]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if takes_overrides:
        args.overrides = list(args.overrides or []) + extras
    return args


def user_message(err: BaseException) -> str:
    """The message of an error, without the wrapper torch adds to one raised in a DataLoader worker process.

    torch re-raises it in the main process as the same type with the message "Caught <Type> in DataLoader worker
    process N.\\nOriginal Traceback (most recent call last):\\n ...\\n<module>.<Type>: <message>"; this returns
    <message>.
    """
    text = str(err)
    while text.startswith("Caught ") and "\nOriginal Traceback (most recent call last):" in text:
        cls = type(err)
        name = cls.__qualname__ if cls.__module__ in ("builtins", "__main__") else f"{cls.__module__}.{cls.__qualname__}"
        start = text.rfind(f"\n{name}: ")
        if start < 0:
            break
        text = text[start + len(name) + 3:].rstrip("\n")
    return text


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if args.command is None:
        parser.print_help()
        return 0
    problem = check_paths(args)  # inputs exist, outputs can be written: before any work
    if problem:
        print(f"ppkt: error: {problem}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (UserError, argparse.ArgumentTypeError) as err:
        print(f"ppkt: error: {user_message(err)}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"ppkt: error: {user_message(err)}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"ppkt: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:  # not a training run: those take over Ctrl-C and raise Interrupted, saying what they saved
        print("ppkt: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a bug: one line, and how to see and report it
        if os.environ.get("PPKT_DEBUG"):
            raise
        print(f"ppkt: internal error: {type(err).__name__}: {err}\nThis is a bug in ppkt. Run the command again with "
              "PPKT_DEBUG=1 for the traceback, and report it with that traceback on the project's issue tracker.",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
