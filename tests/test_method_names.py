"""A method's name is written in one module only, `tnt_cli/methods/registry.py`; everything else asks its record.

The rule, read from the source (no torch, milliseconds):
- A string literal equal to a method's name or alias (`random`, `evit`, `evit-fuse`, `tome`, `cls-attn`) appears
  in the registry and nowhere else in the package (docstrings are prose and do not count).
- Two names are also ordinary words: `tnt` is the program, the package and config.json's key; `dense` is a
  schedule (or benchmark variant) that prunes nothing. As literals they may appear elsewhere, but never where a
  method is meant: compared with something named `method`, as the default or value of a `method` parameter,
  field, keyword or key, or passed to a function about methods (`apply_method(model, "dense")`). Code says
  `REFERENCE` / `DENSE` (or asks `lookup(name)`) there.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tnt_cli.methods.registry import ALIASES, DENSE, METHODS, REFERENCE

PACKAGE = Path(__file__).resolve().parent.parent / "tnt_cli"
REGISTRY = PACKAGE / "methods" / "registry.py"
ORDINARY_WORDS = {REFERENCE, DENSE}  # a method's name and an everyday word of the program
ONLY_METHOD_NAMES = (set(METHODS) | set(ALIASES)) - ORDINARY_WORDS
# The same spelling with a meaning that is no method's: (module, word) -> what it is.
OTHER_MEANINGS = {("data/transforms.py", "random"): "timm's random interpolation (`--interpolation random`)"}


def docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def literals(node: ast.AST, words: set[str]) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in words]


def about_methods(node: ast.AST) -> bool:
    return "method" in ast.unparse(node).lower()


def method_positions(tree: ast.AST, words: set[str]) -> list[tuple[int, str]]:
    """(line, source) of every place `words` stand for a method (see the module docstring)."""
    hits: list[tuple[int, ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for i, side in enumerate(sides):
                if literals(side, words) and any(about_methods(o) for j, o in enumerate(sides) if j != i):
                    hits.append((node.lineno, node))
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any(about_methods(t) for t in targets) and literals(node.value, words):
                hits.append((node.lineno, node))
        elif isinstance(node, ast.arguments):
            args = [*node.posonlyargs, *node.args]
            pairs = list(zip(args[len(args) - len(node.defaults) :], node.defaults))
            pairs += [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults) if d is not None]
            hits += [(d.lineno, d) for a, d in pairs if "method" in a.arg.lower() and literals(d, words)]
        elif isinstance(node, ast.Call):
            hits += [(k.value.lineno, node) for k in node.keywords
                     if k.arg and "method" in k.arg.lower() and literals(k.value, words)]  # fmt: skip
            if about_methods(node.func) and any(isinstance(a, ast.Constant) and a.value in words for a in node.args):
                hits.append((node.lineno, node))
            if (isinstance(node.func, ast.Attribute) and node.func.attr == "get" and len(node.args) == 2
                    and about_methods(node.args[0]) and literals(node.args[1], words)):  # fmt: skip
                hits.append((node.lineno, node))
        elif isinstance(node, ast.Dict):
            hits += [(v.lineno, node) for k, v in zip(node.keys, node.values)
                     if isinstance(k, ast.Constant) and k.value == "method" and literals(v, words)]  # fmt: skip
    return sorted({(line, ast.unparse(n)[:100]) for line, n in hits})


def violations(path: Path, relative: str) -> list[str]:
    tree = ast.parse(path.read_text())
    skip = docstrings(tree)
    out = []
    for node in ast.walk(tree):
        name = node.value if isinstance(node, ast.Constant) and id(node) not in skip else None
        if name in ONLY_METHOD_NAMES and (relative, name) not in OTHER_MEANINGS:
            out.append(f"{relative}:{node.lineno}: {name!r}")
    out += [f"{relative}:{line}: {source}" for line, source in method_positions(tree, ORDINARY_WORDS)]
    return out


def test_method_names_are_written_in_the_registry_only():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != REGISTRY:
            found += violations(path, path.relative_to(PACKAGE).as_posix())
    assert not found, "method names outside tnt_cli/methods/registry.py (ask its record instead):\n" + "\n".join(found)


def test_the_registry_does_write_them():
    """The check reads what it means to: every name and alias is a literal in the registry."""
    written = set(literals(ast.parse(REGISTRY.read_text()), set(METHODS) | set(ALIASES)))
    assert written == set(METHODS) | set(ALIASES)


def test_the_check_catches_a_name_chain_and_a_method_default(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(
        "def f(model, method='tnt'):\n"
        "    if method == 'tome':\n"
        "        return 1\n"
        "    schedule_text = 'dense'  # an ordinary word: fine\n"
        "    return apply_method(model, 'dense') if method != \"tnt\" else {'method': 'dense'}\n"
    )
    found = violations(planted, "planted.py")
    assert [f.split(":")[1] for f in found] == ["2", "1", "5", "5", "5"], found
