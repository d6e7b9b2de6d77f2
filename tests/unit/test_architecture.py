"""The layering, read from the source: which package may import which, no import cycles (counting the imports inside
functions), modules small enough to hold one concept, and `make lint` and pre-commit running the same checks.

The lint rules (the nested ruff.toml of api/, sandbox/ and shared/) refuse a banned import as it is written; this
test also catches what a lint configuration could lose: a cycle, or a folder whose ruff.toml went missing.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "worker", "shared", "sandbox", "cli")
# Who may not import whom, at any depth of a module (imports inside functions included).
FORBIDDEN = {
    "api": {"worker", "cli"},
    "shared": {"api", "worker", "cli", "sandbox"},
    "sandbox": {"api", "worker", "cli"},
}
# "About 400 lines": a module past this holds more than one concept.
MAX_MODULE_LINES = 420


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    return {_module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules that module `name` (at `path`) imports anywhere in it: `from a import b` counts `a.b`
    when b is a module."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported_modules(path, name, modules) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, as the modules along it, or None."""
    done: set[str] = set()
    on_path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in on_path:
            return [*on_path[on_path.index(name) :], name]
        if name in done:
            return None
        on_path.append(name)
        for imported in sorted(graph[name]):
            if cycle := visit(imported):
                return cycle
        on_path.pop()
        done.add(name)
        return None

    for name in sorted(graph):
        if cycle := visit(name):
            return cycle
    return None


def test_no_import_cycle_among_the_projects_modules_counting_imports_inside_functions() -> None:
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()) or [])


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    # The check above must be able to fail: the shape this project had (runner -> child -> runner, the child's
    # import inside a function).
    runner, child = tmp_path / "runner.py", tmp_path / "child.py"
    runner.write_text("from worker import child\n")
    child.write_text("def main():\n    from worker.runner import train\n")
    modules = {"worker.runner": runner, "worker.child": child}
    graph = {name: imported_modules(path, name, modules) - {name} for name, path in modules.items()}
    assert find_cycle(graph) == ["worker.child", "worker.runner", "worker.child"]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_each_layer_imports_none_of_the_packages_above_it(layer: str) -> None:
    crossings = [
        f"{name} imports {imported}"
        for name, imports in import_graph().items()
        if name.split(".")[0] == layer
        for imported in sorted(imports)
        if imported.split(".")[0] in FORBIDDEN[layer]
    ]
    assert crossings == []


def ruff_on(path_in_repo: str, source: str) -> str:
    """What ruff says of `source` as if it were the file at `path_in_repo` (with that folder's configuration)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--output-format=concise",
            f"--stdin-filename={path_in_repo}",
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return result.stdout + result.stderr


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_the_lint_rules_refuse_each_banned_import_in_each_layer(layer: str) -> None:
    for banned in sorted(FORBIDDEN[layer]):
        said = ruff_on(f"{layer}/probe.py", f'"""A probe."""\n\nimport {banned}.app\n\nprint({banned})\n')
        assert f"TID251 `{banned}` is banned" in said or f"TID251 `{banned}.app` is banned" in said, said


@pytest.mark.parametrize("layer", ["api", "sandbox"])
def test_the_api_and_the_sandbox_may_not_import_the_training_stack_even_inside_a_function(layer: str) -> None:
    said = ruff_on(f"{layer}/probe.py", '"""A probe."""\n\n\ndef load() -> None:\n    import torch  # noqa: F401\n')
    assert "TID251" in said, said


def test_shared_may_not_import_the_training_stack_at_module_level() -> None:
    said = ruff_on("shared/probe.py", '"""A probe."""\n\nimport trl\n\nprint(trl)\n')
    assert "TID253" in said, said


def test_no_module_is_over_about_400_lines() -> None:
    long = {
        name: n
        for name, path in project_modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_pre_commit_runs_the_checks_of_make_lint() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lint_recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert lint_recipe is not None
    make_commands = [line.strip().replace("$(BIN)/", ".venv/bin/") for line in lint_recipe.group(1).splitlines()]
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    hook_commands = [hook["entry"] for hook in hooks]
    # ruff takes the files pre-commit passes where make passes `.`; mypy reads its packages from pyproject.toml.
    assert [command.removesuffix(" .") for command in make_commands] == hook_commands
    assert "strict = true" in (ROOT / "pyproject.toml").read_text()
