"""The `ppkt` sub-commands, one module per group: each has `add_commands(subparsers)` and handlers that import
the library (and so torch) only when they run, so that building the parser and `--help` stay fast.

`ppkt.cli` builds the parser from these modules and runs the chosen handler.
"""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that appends "(default: ...)" to each option's help, except where that says nothing:
    required options, on/off flags and options without a default (their help says what happens then)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default is None or isinstance(action.default, bool):
            return action.help or ""
        return super()._get_help_string(action)


def add_command(subparsers, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A sub-command parser whose --help starts with `help` and shows every option's default."""
    return subparsers.add_parser(name, help=help, description=help, formatter_class=HelpFormatter, **kwargs)


def add_subcommands(parser: argparse.ArgumentParser, dest: str):
    """The sub-command slot of a command group (`ppkt teacher train`, ...); one of them must be given."""
    return parser.add_subparsers(dest=dest, metavar="COMMAND", required=True)


def add_overrides(parser: argparse.ArgumentParser, example: str) -> None:
    """The `key=value` config overrides; `ppkt.cli` also takes them between and after the options."""
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"config overrides, anywhere among the options, e.g. {example}")
