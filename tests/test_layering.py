"""Package layering, read from the source with `ast` (imports inside functions included): each lower package imports
none of the packages above it (`RULES`), and no two modules import each other, directly or through others."""
import ast
from pathlib import Path

import pytest

PPKT = Path(__file__).resolve().parents[1] / "ppkt"
TASKS = ("ppkt.train", "ppkt.detection", "ppkt.prepare", "ppkt.synthetic", "ppkt.benchmark", "ppkt.commands",
         "ppkt.predict", "ppkt.cli")
RULES = {"geometry": ("ppkt.data", "ppkt.models", "ppkt.losses", *TASKS),
         "models": ("ppkt.data", *TASKS),  # the pretraining models (teacher + student + loss) call the losses
         "losses": ("ppkt.data", "ppkt.models", *TASKS),
         "data": ("ppkt.models", "ppkt.losses", *TASKS),
         # detection is a task's library (VoteNet, boxes, AP): training, dataset conversion and the world sit above it
         "detection": ("ppkt.train", "ppkt.prepare", "ppkt.synthetic", "ppkt.benchmark", "ppkt.commands", "ppkt.predict",
                       "ppkt.cli")}


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


def module_graph() -> dict:
    """{module: set of ppkt modules it imports} over every module of ppkt (a `from a import b` counts as a.b when that
    is a module, else as a)."""
    files = {".".join(f.relative_to(PPKT.parent).with_suffix("").parts).removesuffix(".__init__"): f
             for f in PPKT.rglob("*.py")}
    graph = {}
    for name, f in files.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        found = {m for _, m in imported_modules(f.read_text(), package) if m.startswith("ppkt")}
        graph[name] = {m for m in found if m in files} | {m.rpartition(".")[0] for m in found
                                                         if m not in files and m.rpartition(".")[0] in files}
        graph[name].discard(name)
        graph[name].discard("ppkt")  # the package's own __init__ (the OpenMP setting), imported by everything
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_through_others():
    assert cycles(module_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
