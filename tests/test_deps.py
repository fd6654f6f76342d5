"""dvc.yaml's stage deps name every in-repo module a stage's command imports.

A module a stage imports but does not list is code that can change without DVC noticing: the
stage's outputs go stale while `dvc status` says clean. The imports are found statically, by
walking each module's AST from the stage's entry module, so the check needs neither dvc nor torch.
Every import counts, a lazy one in a branch the stage never takes too: statically there is no
telling, and a dep too many costs a rerun where one too few costs a stale result.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
IN_REPO_PACKAGES = ("capt", "stages")
LAUNCHER = "stages.launch"


def entry_modules(cmd: str) -> list[str]:
    """The modules a stage's command runs: `python -m stages.X ...`, or the launcher and its target
    in `python -m stages.launch N stages.X ...`."""
    words = cmd.split()
    if words[:2] != ["python", "-m"] or len(words) < 3:
        raise ValueError(f"not a `python -m MODULE` command: {cmd!r}")
    module = words[2]
    if module != LAUNCHER:
        return [module]
    if len(words) < 5:
        raise ValueError(f"{LAUNCHER} without a process count and a module: {cmd!r}")
    return [LAUNCHER, words[4]]


def module_file(module: str) -> Path | None:
    """The file under REPO that defines an in-repo module or package, None for anything else."""
    if module.split(".")[0] not in IN_REPO_PACKAGES:
        return None
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def with_parent_packages(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py before a/b/c.py."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@functools.cache
def imported_modules(module: str) -> frozenset[str]:
    """The modules one module's source imports, anywhere in it: a lazy import inside a function runs
    too, so it counts as much as one at the top."""
    file = module_file(module)
    tree = ast.parse(file.read_text(), filename=str(file))
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:         # relative: each level above 1 climbs one package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module
            found.add(base)
            for alias in node.names:   # `from capt.eval import metrics` imports a submodule
                if module_file(f"{base}.{alias.name}") is not None:
                    found.add(f"{base}.{alias.name}")
    return frozenset(found)


def import_closure(entries: list[str]) -> set[str]:
    """Every in-repo module that running the entry modules can import, transitively."""
    seen: set[str] = set()
    pending = [m for entry in entries for m in with_parent_packages(entry)]
    while pending:
        module = pending.pop()
        if module in seen or module_file(module) is None:
            continue
        seen.add(module)
        for imported in imported_modules(module):
            pending.extend(with_parent_packages(imported))
    return seen


def is_trivial_init(file: Path) -> bool:
    """An __init__.py holding nothing but a docstring (comments do not reach the AST) or
    `__version__`-style dunder literals: changing it cannot change what a stage computes, and
    listing capt/__init__.py in every stage would rerun the whole DAG for a docstring edit."""
    if file.name != "__init__.py":
        return False
    for statement in ast.parse(file.read_text()).body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue
        if (isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
                and all(isinstance(t, ast.Name) and t.id.startswith("__") for t in statement.targets)):
            continue
        return False
    return True


def code_files(cmd: str) -> list[str]:
    """The repo-relative code files a stage's command runs, trivial __init__.py files left out."""
    files = {module_file(m) for m in import_closure(entry_modules(cmd))}
    return sorted(f.relative_to(REPO).as_posix() for f in files if not is_trivial_init(f))


def is_covered(file: str, deps: list[str]) -> bool:
    """A dep covers a file it names or a folder above it. Templated deps (`data/raw/${key}`) are
    data paths: whatever they resolve to, they never hold code."""
    for dep in deps:
        if "${" in dep:
            continue
        dep = dep.rstrip("/")
        if file == dep or file.startswith(dep + "/"):
            return True
    return False


def stage_deps(stage: dict) -> list[str]:
    """A stage's deps as paths; an entry may be a path or a {path: options} mapping."""
    return [next(iter(dep)) if isinstance(dep, dict) else dep for dep in stage.get("deps", [])]


def missing_deps(dvc_yaml: dict) -> dict[str, list[str]]:
    """Per stage, the code files its command imports that its deps do not cover."""
    missing = {}
    for name, stage in dvc_yaml["stages"].items():
        stage = stage.get("do", stage)         # foreach stages keep their definition under `do`
        uncovered = [f for f in code_files(stage["cmd"]) if not is_covered(f, stage_deps(stage))]
        if uncovered:
            missing[name] = uncovered
    return missing


def load_dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def test_every_stage_lists_the_code_it_imports():
    missing = missing_deps(load_dvc_yaml())
    report = "\n".join(f"  {stage}: {', '.join(files)}" for stage, files in missing.items())
    assert not missing, f"dvc.yaml's deps miss code the stages import (changing it leaves them stale):\n{report}"


@pytest.mark.parametrize(("stage_name", "dropped"), [
    ("prepare", "capt/text.py"),            # `python -m stages.X`
    ("distill", "stages/launch.py"),        # `python -m stages.launch N stages.X`: the launcher runs too
])
def test_checker_reports_a_dropped_dep(stage_name, dropped):
    """The real stage less one dep: that file, and only it, is reported (the stage is otherwise
    complete, as the test above checks)."""
    stage = load_dvc_yaml()["stages"][stage_name]
    definition = stage.get("do", stage)
    definition["deps"].remove(dropped)
    assert missing_deps({"stages": {stage_name: stage}}) == {stage_name: [dropped]}


def test_a_folder_covers_its_files_and_a_templated_dep_covers_nothing():
    assert is_covered("capt/models/saved.py", ["capt/models"])
    assert not is_covered("capt/models_old.py", ["capt/models"])
    assert not is_covered("capt/text.py", ["${code}/capt", "data/raw/${key}"])
