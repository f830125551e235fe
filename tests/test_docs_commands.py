"""Every command in the README and the docs runs as written: its sub-commands exist, its options are options of that
command, its `key=value` overrides are keys of a config, the whole line parses (blocks of shell commands), and the
`make` targets and scripts it names exist."""
import argparse
import re
import shlex
from pathlib import Path

import pytest

from ppkt import cli
from ppkt.config import PretrainConfig, config_to_dict
from ppkt.train.detect_config import DetectionConfig
from ppkt.train.finetune_config import FinetuneConfig
from ppkt.train.run_dir import flatten

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KEYS = set().union(*(flatten(config_to_dict(schema())) for schema in (PretrainConfig, FinetuneConfig, DetectionConfig)))
OVERRIDE = re.compile(r"^([A-Za-z_][\w]*(?:\.[\w]+)+)=")
PPKT = re.compile(r"^(?:\S*/)?ppkt$")  # ppkt, .venv/bin/ppkt


def shell_lines(text: str):
    """(line, in_block) of the shell commands of a markdown page: the lines of its ```bash blocks (continuations joined,
    comments dropped) and its inline `ppkt ...` code spans."""
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line)
            line = re.sub(r"\s\[--[^\]]*\]", "", line).strip()  # usage notation: [--option VALUE] is optional
            if line:
                yield line, True
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`((?:\.venv/bin/)?ppkt [^`]+)`", prose):
        yield span, False


def ppkt_argv(line: str):
    """The arguments after `ppkt` (or `-m ppkt.cli`) in a shell line, None when it runs no ppkt command."""
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    for i, word in enumerate(words):
        if PPKT.match(word) or (word == "ppkt.cli" and i and words[i - 1] == "-m"):
            return words[i + 1:]
    return None


def subcommand(parser: argparse.ArgumentParser, argv):
    """(the parser of the deepest sub-command named at the start of argv, the rest of argv)."""
    while argv:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or argv[0] not in subs[0].choices:
            break
        parser, argv = subs[0].choices[argv[0]], argv[1:]
    return parser, argv


def commands():
    for page in PAGES:
        for line, in_block in shell_lines(page.read_text()):
            argv = ppkt_argv(line)
            if argv and not argv[0].isupper():  # `ppkt COMMAND --help`: a placeholder
                yield pytest.param(page, line, argv, in_block, id=f"{page.name}: {line[:60]}")


@pytest.mark.parametrize("page, line, argv, in_block", list(commands()))
def test_a_documented_ppkt_command_names_real_commands_options_and_keys(page, line, argv, in_block):
    parser = cli.build_parser()
    sub, rest = subcommand(parser, argv)
    assert sub is not parser or not argv, f"{page.name}: `{line}`: no command {argv[0]!r}"
    options = {s for a in sub._actions for s in a.option_strings}
    for word in rest:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"{page.name}: `{line}`: {word} is not an option of {sub.prog}"
        m = OVERRIDE.match(word)
        if m and m.group(1) not in KEYS:
            pytest.fail(f"{page.name}: `{line}`: {m.group(1)} is not a config key")
    if in_block:
        try:
            cli.parse_args(parser, argv)
        except SystemExit as stop:
            pytest.fail(f"{page.name}: `{line}` does not parse (exit {stop.code})")


def test_documented_make_targets_and_scripts_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    for page in PAGES:
        text = page.read_text()
        for target in re.findall(r"`make ([\w-]+)", text):
            assert target in targets, f"{page.name}: make {target}"
        for script in re.findall(r"(benchmarks/[\w/]+\.py)", text):
            assert (ROOT / script).is_file() or "bcb00db" in text or "history" in page.name, f"{page.name}: {script}"


def test_the_readme_is_short_and_names_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 10_500 and "make demo" in text and "make test" in text
    for link in re.findall(r"`(docs/[\w.]+\.md)`", text):
        assert (ROOT / link).is_file(), link


def test_the_package_carries_its_configs_so_benchmarks_run_from_an_installed_package():
    import fnmatch
    import tomllib

    from ppkt.benchmark.transfer import CONFIGS
    from ppkt.commands.benchmark import PROTOCOLS

    package = ROOT / "ppkt"
    assert CONFIGS.resolve().is_relative_to(package) and PROTOCOLS.resolve().is_relative_to(package)
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ppkt"]
    for f in (package / "configs").rglob("*.yaml"):
        rel = f.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not package data"
    for source in package.rglob("*.py"):  # no module looks above the package for its files
        assert not re.search(r"__file__\)\.resolve\(\)\.parents\[[2-9]\]", source.read_text()), source
