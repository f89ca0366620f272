"""The house plan, enforced: imports point down only, no cycles, small files and functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "retrieval"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
DATA_TABLES: set[str] = set()  # "module.function" of tables allowed to run long (none today)

# module prefix -> imports it must not make
FORBIDDEN = {
    "retrieval.models": (
        "pytorch_lightning",
        "lightning",
        "hydra",
        "omegaconf",
        "retrieval.data",
        "retrieval.eval",
        "retrieval.extraction",
        "retrieval.local",
        "retrieval.lightning",
        "retrieval.pipelines",
        "retrieval.search",
    ),
    "retrieval.data": (
        "retrieval.models",
        "retrieval.checkpoint",
        "retrieval.extraction",
        "retrieval.eval",
        "retrieval.local",
        "retrieval.lightning",
        "retrieval.pipelines",
        "retrieval.search",
    ),
    "retrieval.types": ("retrieval", "torch"),
}
# third-party frameworks -> the only layers that may import them
ONLY_IN = {
    "pytorch_lightning": ("retrieval.lightning", "retrieval.pipelines"),
    "lightning": ("retrieval.lightning", "retrieval.pipelines"),
    "hydra": ("retrieval.pipelines",),
    "omegaconf": ("retrieval.pipelines",),
}


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Every module `path` imports, at any depth of the file (relative imports resolved)."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {name: imports_of(path, name) for name, path in MODULES.items()}


def test_imports_point_down_only():
    wrong = [
        f"{module} imports {imported}"
        for module, imported_names in IMPORTS.items()
        for imported in sorted(imported_names)
        for layer, banned in FORBIDDEN.items()
        if under(module, layer) and any(under(imported, b) for b in banned)
    ]
    wrong += [
        f"{module} imports {imported} (only {', '.join(allowed)} may)"
        for module, imported_names in IMPORTS.items()
        for imported in sorted(imported_names)
        for framework, allowed in ONLY_IN.items()
        if under(imported, framework) and not any(under(module, a) for a in allowed)
    ]
    assert not wrong, "\n".join(wrong)


def internal_graph() -> dict[str, set[str]]:
    """module -> package modules it imports (a package's own submodules do not count)."""
    return {
        module: {
            target
            for target in MODULES
            if target != module
            and not under(module, target)
            and any(under(i, target) for i in imported)
        }
        for module, imported in IMPORTS.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt, [*stack, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(internal_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_files_and_functions_stay_small(module):
    source = MODULES[module].read_text(encoding="utf-8")
    assert source.count("\n") <= MAX_FILE_LINES, f"{module}: over {MAX_FILE_LINES} lines"
    long = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES and f"{module}.{node.name}" not in DATA_TABLES:
                long.append(f"{node.name} ({lines} lines)")
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"
