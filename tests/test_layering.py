"""Package layering, read from the source with `ast` (imports inside functions included):
ppkt.models imports neither ppkt.train nor ppkt.data; ppkt.data imports neither ppkt.models nor ppkt.prepare."""
import ast
from pathlib import Path

import pytest

PPKT = Path(__file__).resolve().parents[1] / "ppkt"
RULES = {"models": ("ppkt.train", "ppkt.data"), "data": ("ppkt.models", "ppkt.prepare")}


def imported_modules(source: str, package: str) -> list:
    """(line, module) of every import in `source`, a module of `package` (for relative imports);
    `from a import b` gives both a and a.b (b may be a module)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: level 1 = this package, 2 = its parent, ...
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def package_of(path: Path) -> str:
    parts = path.relative_to(PPKT.parent).with_suffix("").parts
    return ".".join(parts[:-1])  # a module's package; for __init__.py, the package itself


def forbidden(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports(layer):
    files = sorted((PPKT / layer).rglob("*.py"))
    assert len(files) > 3, f"too few modules under ppkt/{layer}"
    bad = [f"{f.relative_to(PPKT.parent)}:{line}: imports {mod}"
           for f in files for line, mod in imported_modules(f.read_text(), package_of(f))
           if forbidden(mod, RULES[layer])]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_imports_in_functions_and_relative_ones():
    src = ("import torch\n"
           "def f():\n    from ppkt.train import metrics\n    import ppkt.data.scenes as s\n"
           "from ..train.logging import x\nfrom . import heads\nfrom .. import data\n")
    found = [m for _, m in imported_modules(src, "ppkt.models")]
    for mod in ("ppkt.train.metrics", "ppkt.data.scenes", "ppkt.train.logging", "ppkt.models.heads", "ppkt.data"):
        assert mod in found, mod
    assert [forbidden(m, RULES["models"]) for m in ("torch", "ppkt.models.heads", "ppkt.checkpoint", "ppkt.data",
                                                     "ppkt.database", "ppkt.train.x")] == [False, False, False, True,
                                                                                           False, True]
