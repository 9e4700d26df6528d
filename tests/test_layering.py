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


def test_the_data_layer_has_no_import_cycle():
    """readers (files) ← formats (record shapes) ← loaders (both): never the other way."""
    order = ["errors", "readers", "records", "formats", "loaders", "writers"]
    rank = {f"thtb.data.{name}": i for i, name in enumerate(order)}
    wrong = []
    for name in order:
        path = LIBRARY / "data" / f"{name}.py"
        for line, mod in imports(path):
            if mod in rank and rank[mod] >= rank[f"thtb.data.{name}"]:
                wrong.append(f"thtb/data/{name}.py:{line} imports {mod}")
    assert not wrong, "\n".join(wrong)
