"""Dependencies point down: the selection library (``thtb/`` outside ``thtb/stages/``) never imports a stage or the
training/evaluation packages, ``train/`` (``thtb.train``) never imports ``eval/`` (``thtb.eval``), and the data
layer's modules import each other one way only. Checked on the source (every import, module-level or inside a
function), so a new upward import fails here rather than in a review."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "thtb"


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``import x`` / ``from x import y`` in a file (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            out.append((node.lineno, module))
    return out


def library_files() -> list[Path]:
    return [p for p in LIBRARY.rglob("*.py") if "stages" not in p.relative_to(LIBRARY).parts]


def _under(mod: str, packages: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in packages)


def test_library_code_imports_no_stage():
    files = library_files()
    assert len(files) > 30  # the scan sees the library
    upward = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in files for line, mod in imports(p)
              if _under(mod, ("thtb.stages", "thtb.train", "thtb.eval"))]
    assert not upward, "library code must not import a stage, thtb.train or thtb.eval:\n" + "\n".join(upward)


def test_selection_side_stages_import_no_training_or_evaluation():
    files = list(LIBRARY.rglob("*.py"))
    upward = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in files for line, mod in imports(p)
              if _under(mod, ("thtb.train", "thtb.eval"))]
    assert not upward, "thtb/ (select and score stages included) must not import thtb.train or thtb.eval:\n" + \
        "\n".join(upward)


def test_training_does_not_import_evaluation():
    files = list((ROOT / "train").rglob("*.py"))
    assert len(files) >= 5
    upward = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for p in files for line, mod in imports(p)
              if _under(mod, ("thtb.eval",))]
    assert not upward, "train/ must not import eval/:\n" + "\n".join(upward)


def module_name(path: Path) -> str:
    """The import name of a source file (``train/`` and ``eval/`` are ``thtb.train`` and ``thtb.eval``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in ("train", "eval"):
        parts.insert(0, "thtb")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (module-level or inside a function: both run). ``from pkg import
    sub`` imports the submodule ``pkg.sub``; ``from pkg.mod import name`` the module ``pkg.mod``."""
    files = [p for d in ("thtb", "train", "eval") for p in (ROOT / d).rglob("*.py")]
    names = {module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, module] if module else base)
                subs = {f"{module}.{alias.name}" for alias in node.names} & names.keys()
                targets |= subs or {module}
        graph[name] = {t for t in targets if t in names and t != name}
    return graph


def test_no_import_circle():
    """No module imports one that (directly or through others) imports it back — a function-level import included:
    a circle means two rooms that cannot be understood apart. (A package's ``__init__`` re-exporting its
    submodules is not a circle unless a submodule imports the package back.)"""
    from graphlib import CycleError, TopologicalSorter

    graph = import_graph()
    assert len(graph) > 60 and "thtb.scorers.proxy" in graph
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(reversed(exc.args[1]))} (each imports the next)") from None


EVAL_POLICY = ("deviations", "describe", "eval_deviations", "selection_deviations", "score_deviations",
               "training_provenance")
"""Functions that say how a result was produced for the tables and how it differs from the paper's setup: the
evaluation's (and training's) business, not the selection library's."""


def test_the_library_holds_no_evaluation_prompt_or_provenance():
    """``thtb/`` keeps the selection library and shared plumbing: the pairwise/respond prompts live in
    ``eval/prompts.py``, the deviation and description rules in ``eval/``."""
    found = []
    for path in LIBRARY.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(ROOT)
        found += [f"{where}:{n.lineno} defines {n.name}()" for n in tree.body
                  if isinstance(n, ast.FunctionDef) and n.name in EVAL_POLICY]
        found += [f"{where}:{n.lineno} holds an evaluation prompt" for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and isinstance(n.value, str) and "Output (a)" in n.value]
        found += [f"{where}:{n.lineno} builds template {kw.value.value!r}" for n in ast.walk(tree)
                  if isinstance(n, ast.Call) for kw in n.keywords
                  if kw.arg == "name" and isinstance(kw.value, ast.Constant)
                  and kw.value.value in ("pairwise", "pairwise_forced", "respond")]
    assert not found, "evaluation policy in the selection library:\n" + "\n".join(found)
