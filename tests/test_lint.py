"""The repository passes its linter and formatter, and keeps the house rules.

Ruff's settings are in pyproject.toml ([tool.ruff]). The house rules are the
ones docs/DESIGN.md states for the product's code (core/, ui/, pages/, app.py):
small files, small functions, layers that import only downwards, an engine that
knows nothing of how pages draw, and no reaching into Streamlit's private
runtime. Each check reads the source with `ast`, so it needs nothing but Python.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PRODUCT_DIRS = ("core", "ui", "pages")
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 100
UI_LIBRARIES = ("streamlit", "plotly")


def _product_files() -> list[Path]:
    files = [REPO / "app.py"] if (REPO / "app.py").exists() else []
    for folder in PRODUCT_DIRS:
        files += sorted((REPO / folder).rglob("*.py"))
    return files


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported_modules(tree: ast.Module, package: str | None = None) -> set[str]:
    """Every module a file imports, anywhere in it (inside functions too), with
    relative imports resolved against `package`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level and package:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            # `from core import training` imports the module core.training
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _ruff(*args: str) -> subprocess.CompletedProcess:
    pytest.importorskip("ruff", reason="ruff is in the test extra: pip install -e '.[test]'")
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True)


def test_ruff_check_passes():
    result = _ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_every_file_as_it_is():
    result = _ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_product_file_is_too_long():
    long = {
        str(p.relative_to(REPO)): n for p in _product_files() if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert not long, f"files over {MAX_FILE_LINES} lines (split them by concern): {long}"


def test_no_function_is_too_long():
    long = {}
    for path in _product_files():
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _core_import_graph() -> dict[str, set[str]]:
    modules = {f"core.{p.stem}": p for p in (REPO / "core").glob("*.py") if p.stem != "__init__"}
    return {name: _imported_modules(_tree(path), "core") & modules.keys() - {name} for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def test_core_modules_import_in_no_circle():
    """Function-level imports count too: a circle hidden inside a function is
    still a circle a reader has to hold in their head."""
    cycle = _find_cycle(_core_import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_circle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_core_never_imports_the_ui_libraries():
    bad = {}
    for path in sorted((REPO / "core").rglob("*.py")):
        used = {m for m in _imported_modules(_tree(path)) if m.split(".")[0] in UI_LIBRARIES}
        if used:
            bad[str(path.relative_to(REPO))] = sorted(used)
    assert not bad, f"core/ is the engine and must not know how pages draw: {bad}"


def test_layers_import_only_downwards():
    """core/ is the engine under everything; ui/ sits on it; pages/ and app.py on top."""
    above = {"core": ("ui", "pages", "app"), "ui": ("pages", "app")}
    bad = {}
    for layer, forbidden in above.items():
        for path in sorted((REPO / layer).rglob("*.py")):
            used = {m for m in _imported_modules(_tree(path), layer) if m.split(".")[0] in forbidden}
            if used:
                bad[str(path.relative_to(REPO))] = sorted(used)
    assert not bad, f"imports running back up the layers: {bad}"


def test_the_product_uses_no_private_streamlit_modules():
    bad = {}
    for path in _product_files():
        text = path.read_text()
        private = {m for m in _imported_modules(_tree(path)) if m.startswith("streamlit.runtime")}
        if "PagesManager" in text:
            private.add("PagesManager")
        if private:
            bad[str(path.relative_to(REPO))] = sorted(private)
    assert not bad, f"Streamlit's private runtime, which changes without notice: {bad}"


def test_the_quiet_progress_has_every_method_of_the_protocol():
    """core.progress.Quiet stands in for a Job where nobody watches (lr-find):
    a method added to the Progress protocol must be added to it too."""
    from core.progress import Progress, Quiet

    wanted = {n for n in vars(Progress) if not n.startswith("_")}
    assert wanted <= set(dir(Quiet)), wanted - set(dir(Quiet))
