"""The package's layers import only downward, and no modules import each other in a circle.

Read from the source (every `import` of `tnt_cli`, at module level, inside functions or under TYPE_CHECKING: a
dependency is a dependency), so the test needs no torch and runs in milliseconds.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tnt_cli"

# Lowest first. A module may import its own top-level package (`tnt_cli.io.x` -> `tnt_cli.io.y`) and anything in a
# lower layer; never a sibling in its own layer, never upward.
# `tnt_cli.methods.registry` (the methods' names and records, torch-free) sits low so io (model cards) and the
# settings can use it; the rest of `tnt_cli.methods` (their implementations, `apply_method`, the evaluation loop,
# timing) sits below everything that runs a method. eval, train, viz, bench and export are one layer: none of
# them imports another (training and benchmarking use methods, never eval).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("tnt_cli._version", "tnt_cli.errors", "tnt_cli.terminal"),
    ("tnt_cli.recipes", "tnt_cli.devices", "tnt_cli.progress", "tnt_cli.parsing", "tnt_cli.stopping",
     "tnt_cli.methods.registry"),
    ("tnt_cli.engine", "tnt_cli.settings"),
    ("tnt_cli.analysis",),
    ("tnt_cli.io",),
    ("tnt_cli.data",),
    ("tnt_cli.methods",),
    ("tnt_cli.eval", "tnt_cli.train", "tnt_cli.viz", "tnt_cli.bench", "tnt_cli.export"),
    ("tnt_cli.api",),
    ("tnt_cli.cli",),
    ("tnt_cli.__main__", "tnt_cli"),  # the package's facade (`tnt_cli.load`) and `python -m tnt_cli`
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The tnt_cli modules `name` imports (a `from pkg import sub` counts as importing the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tnt_cli")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "tnt_cli":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return found


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) - {name} for name, path in modules.items()}


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, the unit it belongs to): the longest declared prefix wins."""
    best: tuple[int, str] | None = None
    for index, units in enumerate(LAYERS):
        for unit in units:
            if (module == unit or module.startswith(unit + ".")) and (best is None or len(unit) > len(best[1])):
                best = (index, unit)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def test_every_module_has_a_layer():
    for module in all_modules():
        layer_of(module)


def test_imports_only_look_down():
    wrong = []
    for module, targets in graph().items():
        here, unit = layer_of(module)
        for target in targets:
            there, other = layer_of(target)
            if other == unit:
                continue
            if there >= here:
                wrong.append(f"{module} -> {target} ({unit} is layer {here}, {other} is layer {there})")
    assert not wrong, "imports that do not look down:\n" + "\n".join(sorted(wrong))


def test_no_import_circles():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, "modules that import each other in a circle: " + "; ".join(" <-> ".join(c) for c in circles)


def test_layer_check_catches_an_upward_import(tmp_path):
    """The checker itself can fail: an engine module importing the CLI is reported."""
    fake = tmp_path / "tnt_cli" / "engine"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from tnt_cli.cli import app\n")
    found = imports_of("tnt_cli.engine.bad", fake / "bad.py", {"tnt_cli.cli.app"})
    assert found == {"tnt_cli.cli.app"}
    assert layer_of("tnt_cli.engine.bad")[0] < layer_of("tnt_cli.cli.app")[0]


def test_methods_sit_below_everything_that_runs_them_and_train_imports_nothing_from_eval():
    """The method hub is its own layer: eval, train, bench and viz call it, and training needs nothing of eval's."""
    methods = layer_of("tnt_cli.methods.apply")[0]
    for user in ("tnt_cli.eval.sweep", "tnt_cli.train.task", "tnt_cli.bench.runner", "tnt_cli.viz.core"):
        assert methods < layer_of(user)[0], user
    edges = graph()
    from_train = sorted(f"{m} -> {t}" for m, targets in edges.items() if m.startswith("tnt_cli.train")
                        for t in targets if t.startswith("tnt_cli.eval"))  # fmt: skip
    assert not from_train, from_train
    assert any(t.startswith("tnt_cli.methods") for t in edges["tnt_cli.train.task"])  # the check reads real imports
