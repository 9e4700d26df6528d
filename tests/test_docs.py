"""The docs cannot drift from the code.

* README's config table lists every config folder under ``conf/`` and, in each row, exactly its choices (the
  ``*.yaml`` files); its experiment list is exactly ``conf/experiment/*.yaml``, each with the ``stages`` the file
  sets.
* Every path README's layout tree names exists, and the tree names every top-level entry git tracks, every
  folder of ``thtb/``, ``train/`` and ``eval/`` and every module of the two stage packages.
* Every reference to a section of ``docs/METHOD.md`` — in code, configs, tests and docs — names a heading that
  exists there. A reference names its section in quotes right after the file name (``docs/METHOD.md "Training"``),
  as ``METHOD.md stage N`` (a heading that starts with "Stage N"), or as a link anchor (``docs/METHOD.md#training``).
* METHOD.md's "Published numbers" agree with ``results/paper/*.csv``.

Pure text checks: no model, no network, well under a second.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import fenced_block, section

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
METHOD = ROOT / "docs" / "METHOD.md"
CONF = ROOT / "conf"
PAPER = ROOT / "results" / "paper"

NOT_HYDRA_CHOICES = {"experiment"}
"""Config folders whose choices README lists elsewhere (the experiment list) instead of in the config table."""


# ----------------------------------------------------------------------------------------------- markdown
def headings(text: str) -> list[tuple[int, str]]:
    """``(level, title)`` of every ATX heading outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = re.match(r"^(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if m and not fenced:
            out.append((len(m.group(1)), m.group(2)))
    return out


def slug(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces → hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def tables(text: str) -> list[list[list[str]]]:
    """Every pipe table in ``text``: rows of cells (header first, the ``|---|`` line dropped; ``\\|`` kept)."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.strip().startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def table_with_header(text: str, first: str) -> list[list[str]]:
    for table in tables(text):
        if table[0][0] == first:
            return table
    raise AssertionError(f"no table whose first column is {first!r}")


def backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# --------------------------------------------------------------------------------------------------- conf
def conf_groups() -> dict[str, set[str]]:
    """``{folder relative to conf/: {choice, …}}`` for every folder holding ``*.yaml`` files."""
    groups = {}
    for folder in sorted(p for p in CONF.rglob("*") if p.is_dir()):
        choices = {f.stem for f in folder.glob("*.yaml")}
        if choices:
            groups[folder.relative_to(CONF).as_posix()] = choices
    return groups


def readme_config_table() -> dict[str, list[str]]:
    """``{group: [cells…]}`` from README's config table (group without the trailing ``/``)."""
    rows = table_with_header(section(README.read_text(encoding="utf-8"), "Configs (`conf/`)"), "group")[1:]
    out: dict[str, list[str]] = {}
    for row in rows:
        names = backticked(row[0])
        assert len(names) == 1 and names[0].endswith("/"), f"README config table: bad group cell {row[0]!r}"
        group = names[0].rstrip("/")
        assert group not in out, f"README config table lists `{group}/` twice"
        out[group] = row[1:]
    return out


def test_config_table_lists_every_config_folder():
    listed, actual = set(readme_config_table()), set(conf_groups())
    assert listed == actual, (
        f"README's config table and conf/ disagree: folders missing from the table {sorted(actual - listed)}, "
        f"rows with no folder {sorted(listed - actual)}"
    )


@pytest.mark.parametrize("group", sorted(set(conf_groups()) - NOT_HYDRA_CHOICES))
def test_config_table_lists_exactly_the_choices(group):
    row = readme_config_table().get(group)
    assert row is not None, f"README's config table has no row `{group}/`"
    listed, actual = set(backticked(row[0])), conf_groups()[group]
    assert listed == actual, (
        f"README config table row `{group}/`: choices missing {sorted(actual - listed)}, "
        f"listed but no conf/{group}/<choice>.yaml {sorted(listed - actual)}"
    )


def readme_experiments() -> dict[str, list[str]]:
    """``{experiment: stages}`` from README's experiment list."""
    rows = table_with_header(section(README.read_text(encoding="utf-8"), "Experiments"), "experiment")
    assert rows[0][:2] == ["experiment", "stages"], rows[0]
    out: dict[str, list[str]] = {}
    for row in rows[1:]:
        names = backticked(row[0])
        assert len(names) == 1, f"README experiment list: bad name cell {row[0]!r}"
        assert names[0] not in out, f"README experiment list names `{names[0]}` twice"
        out[names[0]] = [s.strip() for s in row[1].split(",") if s.strip()]
    return out


def test_experiment_list_is_conf_experiment():
    listed, actual = set(readme_experiments()), conf_groups()["experiment"]
    assert listed == actual, (
        f"README's experiment list and conf/experiment/ disagree: missing {sorted(actual - listed)}, "
        f"listed but no file {sorted(listed - actual)}"
    )


def test_experiment_list_gives_each_experiments_stages():
    wrong = {}
    for name, stages in readme_experiments().items():
        path = CONF / "experiment" / f"{name}.yaml"
        if path.is_file():
            actual = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages")
            if stages != actual:
                wrong[name] = {"README": stages, "conf": actual}
    assert not wrong, f"README's experiment list gives other stages than the experiment files: {wrong}"


# ------------------------------------------------------------------------------------------------- layout
def layout_entries() -> list[str]:
    """The paths README's layout tree names (relative to the repository; a folder ends with ``/``): the first
    word of each line, nested by two-space indentation under the folder above it."""
    lines = fenced_block(section(README.read_text(encoding="utf-8"), "Layout"))
    parents: list[str] = []
    paths = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0 and indent // 2 <= len(parents), f"README layout line {n}: bad indentation {line!r}"
        depth = indent // 2
        del parents[depth:]
        name = line.split()[0]
        path = "".join(parents) + name
        paths.append(path)
        parents.append(name if name.endswith("/") else name + "/")  # a "child" of a file cannot exist
    return paths


def test_layout_tree_names_only_existing_paths():
    missing = []
    for path in layout_entries():
        target = ROOT / path
        if path.endswith("/") and not target.is_dir() or not path.endswith("/") and not target.is_file():
            missing.append(path)
    assert not missing, f"README's layout names paths that do not exist: {missing}"


def repo_files() -> list[str] | None:
    """The files git tracks (that still exist), or None outside a git checkout. Untracked files are left out: a
    stray output (``server.json`` of the README's serve command) is not part of the layout."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [line for line in out.splitlines() if line and (ROOT / line).exists()]


def test_layout_tree_covers_the_repository():
    files = repo_files()
    if files is None:
        pytest.skip("not a git checkout")
    entries = set(layout_entries())
    top = {f.split("/")[0] + ("/" if "/" in f else "") for f in files}
    top = {t for t in top if not t.startswith(".") and t != "README.md"}
    package_dirs = {"/".join(f.split("/")[:2]) + "/" for f in files
                    if f.split("/")[0] in ("thtb", "train", "eval") and f.count("/") >= 2}
    stage_modules = {f for f in files if f.split("/")[0] in ("train", "eval") and f.count("/") == 1
                     and f.endswith(".py") and not f.endswith("__init__.py")}
    text = "\n".join(fenced_block(section(README.read_text(encoding="utf-8"), "Layout")))
    missing = sorted((top | package_dirs) - entries) + sorted(
        f for f in stage_modules if f not in entries and Path(f).name not in text)  # or named on another's line
    assert not missing, f"README's layout does not name {missing}"


# ----------------------------------------------------------------------------------- METHOD.md references
QUOTED = re.compile(r"METHOD\.md`?(?:'s)?[,:]?[ \t]*(?:§[ \t]*)?[\"“]([^\"”\n]+)[\"”]")
STAGE = re.compile(r"METHOD\.md[,:]?\s+stage\s+(\d)", re.IGNORECASE)
ANCHOR = re.compile(r"METHOD\.md#([\w\-]+)")
SCANNED = {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".jinja"}
SKIPPED_DIRS = {"outputs", "multirun", "wandb", "__pycache__", "node_modules", "build", "dist"}


def method_titles() -> list[str]:
    return [title for _, title in headings(METHOD.read_text(encoding="utf-8"))]


def scanned_files():
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS and not d.endswith(".egg-info")]
        for name in names:
            path = Path(folder) / name
            if (path.suffix in SCANNED or name == "Makefile") and path not in (METHOD, Path(__file__).resolve()):
                yield path


def method_references() -> list[tuple[str, int, str, str]]:
    """``(file, line, kind, target)`` of every section reference to docs/METHOD.md."""
    refs = []
    for path in scanned_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if "METHOD.md" not in text:
            continue
        rel = path.relative_to(ROOT).as_posix()
        for kind, pattern in (("section", QUOTED), ("stage", STAGE), ("anchor", ANCHOR)):
            for m in pattern.finditer(text):
                refs.append((rel, text.count("\n", 0, m.start()) + 1, kind, m.group(1)))
    return refs


def unresolved(refs, titles: list[str]) -> list[str]:
    slugs = {slug(t) for t in titles}
    bad = []
    for rel, line, kind, target in refs:
        ok = (target in titles if kind == "section"
              else any(t.lower().startswith(f"stage {target}") for t in titles) if kind == "stage"
              else target in slugs)
        if not ok:
            bad.append(f"{rel}:{line}: {kind} {target!r}")
    return bad


def test_method_md_exists_with_the_sections_the_code_cites():
    assert METHOD.is_file(), "docs/METHOD.md is missing"
    refs = method_references()
    assert len(refs) >= 10, f"found only {len(refs)} references to docs/METHOD.md sections: is the scan broken?"
    bad = unresolved(refs, method_titles())
    assert not bad, "references to docs/METHOD.md sections that do not exist:\n" + "\n".join(bad)


def test_reference_check_can_fail():
    """The resolver rejects what is not there (so the test above is not vacuous)."""
    titles = ["Stage 1 — quality", "Training"]
    refs = [("a.py", 1, "section", "Training"), ("a.py", 2, "section", "Trainning"), ("b.py", 3, "stage", "1"),
            ("b.py", 4, "stage", "3"), ("c.md", 5, "anchor", "stage-1--quality"), ("c.md", 6, "anchor", "stage-1")]
    assert unresolved(refs, titles) == ["a.py:2: section 'Trainning'", "b.py:4: stage '3'", "c.md:6: anchor 'stage-1'"]
    text = ('x (docs/METHOD.md "Input text") y METHOD.md, stage 3 z [m](docs/METHOD.md#training) METHOD.md: "Training"'
            ' `docs/METHOD.md` "Evaluation"')
    assert [m.group(1) for p in (QUOTED, STAGE, ANCHOR) for m in p.finditer(text)] == [
        "Input text", "Training", "Evaluation", "3", "training"]


@pytest.mark.parametrize("doc", [METHOD, README], ids=["METHOD.md", "README.md"])
def test_internal_links_resolve(doc):
    text = doc.read_text(encoding="utf-8")
    slugs = {slug(t) for _, t in headings(text)}
    bad = [a for a in re.findall(r"\]\(#([^)]+)\)", text) if a not in slugs]
    assert not bad, f"{doc.name} links to anchors with no heading: {bad}"


# ------------------------------------------------------------------------------------- published numbers
METHODS = {"Full": "full", "Random": "random", "AlpaGasus": "alpagasus", "THTB": "thtb"}
TABLES = {"MMLU-Pro": "table1_mmlu_pro", "AlpacaEval vs Full": "table2_alpacaeval"}


def paper_values(table: str) -> dict[tuple[str, str, str], str]:
    with open(PAPER / f"{table}.csv", encoding="utf-8", newline="") as f:
        return {(r["method"], r["model_size"].upper(), r["column"]): r["value"] for r in csv.DictReader(f)}


def test_method_published_numbers_match_results_paper():
    body = section(METHOD.read_text(encoding="utf-8"), "Published numbers")
    rows = table_with_header(body, "table")
    header = rows[0]
    assert header[:2] == ["table", "size"] and set(header[2:]) == set(METHODS), header
    wrong, seen = [], set()
    for row in rows[1:]:
        table, size = TABLES[row[0]], row[1].upper()
        published = paper_values(table)
        for name, cell in zip(header[2:], row[2:], strict=True):
            key = (METHODS[name], size, "overall")
            seen.add((table, *key))
            expected = published.get(key)
            if cell == "—":
                if expected not in (None, ""):
                    wrong.append(f"{row[0]} {size} {name}: '—' but the paper has {expected}")
            elif expected in (None, "") or float(cell) != float(expected):
                wrong.append(f"{row[0]} {size} {name}: {cell} but results/paper has {expected}")
    for table in TABLES.values():
        for (method, size, column), value in paper_values(table).items():
            if column == "overall" and value and (table, method, size, column) not in seen:
                wrong.append(f"{table} {method} {size}: {value} is not in METHOD.md")
    for (method, _, column), value in paper_values("table3_tcm").items():
        if value and value not in body:
            wrong.append(f"table3_tcm {method} {column}: {value} is not in METHOD.md")
    assert not wrong, "docs/METHOD.md \"Published numbers\" disagrees with results/paper:\n" + "\n".join(wrong)
