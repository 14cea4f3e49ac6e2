"""Architecture rules of docs/architecture.md ("Layers"), checked on the source with `ast`.

Fast: every engine/**/*.py is parsed, nothing is imported (except in the last test, which starts one
subprocess importing engine.tasks). Each failure lists file:line, the rule broken and how to fix it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENGINE = REPO / "engine"

# Lowest first: a module may import from its own layer or below. Top-level modules (engine/cli.py, ...) are "app".
LAYERS = ("types", "config", "stats", "data", "tasks", "models", "sandbox", "scoring", "harness", "training", "record",
          "runner", "external", "compare", "app")
RANK = {name: i for i, name in enumerate(LAYERS)}
ORDER = " < ".join(LAYERS)

# Heavy optional libraries that may be imported inside a function (so that importing engine stays cheap).
LAZY_ALLOWED = frozenset({
    "torch", "transformers", "litellm", "mlflow", "datasets", "docker", "playwright", "agents", "openai", "gguf",
    "accelerate", "safetensors", "uvicorn", "aiohttp",
    "huggingface_hub",  # comes with datasets/transformers and is as costly to import
    "httpx",  # only the web-search backends use it
    "sqlalchemy", "alembic",  # come with mlflow, used only to repair a SQLite store
    "engine.models.inference.hf_loglikelihood",  # imports torch at its top: a cached run never loads it
    "engine.models.inference.generation",  # the same: the prefix generation engine imports torch at its top
})
# engine/types/ holds the types that cross packages: the standard library and pydantic only.
API_ALLOWED = frozenset({"__future__", "pydantic"}) | frozenset(sys.stdlib_module_names)


@dataclass(frozen=True)
class Import:
    path: str  # repo-relative file
    line: int
    importer: str  # module doing the import, e.g. "engine.runner.task_run"
    target: str  # absolute module imported, e.g. "engine.tasks.task" or "torch.nn"
    in_function: bool
    type_checking: bool  # under `if TYPE_CHECKING:` (no runtime edge)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def top(self) -> str:
        return self.target.split(".")[0]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _files() -> dict[str, Path]:
    """Module name -> file, for every engine/**/*.py."""
    return {_module_name(p): p for p in sorted(ENGINE.rglob("*.py")) if "__pycache__" not in p.parts}


def _layer(module: str) -> str | None:
    """The layer of an engine module; None for a package missing from LAYERS."""
    parts = module.split(".")
    if module in ("engine", "engine.environment"):  # importable from anywhere: see test_package_init_is_lazy
        return "types"
    sub = parts[1]
    if sub in RANK and sub != "app" and (ENGINE / sub).is_dir():
        return sub
    if len(parts) == 2 and (ENGINE / f"{sub}.py").is_file():
        return "app"
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve_from(node: ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    modules = _files()
    # `from engine.x import y` imports the module engine.x.y when there is one, else a name from engine.x.
    out = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules]
    if len(out) < len(node.names):
        out.append(mod)
    return out


def _walk(node: ast.AST, in_function: bool = False, type_checking: bool = False) -> Iterator[tuple[ast.AST, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        yield child, in_function, type_checking
        fn = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, fn, True
                yield from _walk(stmt, fn, True)
            for stmt in child.orelse:
                yield stmt, fn, type_checking
                yield from _walk(stmt, fn, type_checking)
        else:
            yield from _walk(child, fn, type_checking)


@cache
def _imports() -> tuple[Import, ...]:
    out: list[Import] = []
    for module, path in _files().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = str(path.relative_to(REPO))
        for node, in_function, type_checking in _walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve_from(node, module, path.name == "__init__.py")
            else:
                continue
            out += [Import(rel, node.lineno, module, t, in_function, type_checking) for t in targets]
    return tuple(out)


def _engine(imp: Import) -> bool:
    return imp.top == "engine"


def _by_place(problem: str) -> tuple[str, int, str]:
    path, _, rest = problem.partition(":")
    line, _, _ = rest.partition(":")
    return (path, int(line), problem) if line.isdigit() else (path, 0, problem)


def _report(rule: str, fix: str, problems: list[str]) -> None:
    """One failure listing every violation (sorted, so grouped by file), the rule once and how to fix it."""
    if problems:
        lines = sorted(set(problems), key=_by_place)
        pytest.fail(f"{rule}: {len(lines)} violation(s)\n  " + "\n  ".join(lines) + f"\nFix: {fix}", pytrace=False)


def test_every_engine_module_is_in_a_layer() -> None:
    problems = [f"{path.relative_to(REPO)}: package engine.{module.split('.')[1]} has no layer"
                for module, path in _files().items() if _layer(module) is None]
    _report("[unlayered] every engine package has a place in the layering " + ORDER,
            "add the package at its place in LAYERS (tests/test_architecture.py) and in docs/architecture.md, or move "
            "the module into an existing package.", problems)


def test_every_engine_import_names_an_existing_module() -> None:
    modules = _files()
    problems = [f"{imp.where}: {imp.importer} imports {imp.target}, which is no module of engine/"
                for imp in _imports() if _engine(imp) and imp.target not in modules]
    _report("[missing] imports of engine modules that do not exist",
            "import the name from where it lives now (types crossing packages are in engine.types).", problems)


def test_package_layering() -> None:
    problems = []
    for imp in _imports():
        if not _engine(imp):
            continue
        src, dst = _layer(imp.importer), _layer(imp.target)
        if imp.importer == "engine" and imp.type_checking:
            continue  # the public API's names, for type checkers only (test_package_init_is_lazy)
        if src is None or dst is None or RANK[dst] <= RANK[src]:
            continue
        problems.append(f"{imp.where}: {imp.importer} (layer {src}) imports {imp.target} (layer {dst})")
    _report(f"[layering] a module may import only from its own layer or below ({ORDER})",
            "move what both sides need down (types that cross packages go in engine/types/), or have the higher "
            "layer pass it in (a parameter, a callable, a Protocol defined in the lower layer).", problems)


def test_package_init_is_lazy() -> None:
    """engine/__init__.py runs before every engine module (the public API's names load on first use,
    docs/architecture.md "The public API"): at run time it imports only engine.environment, which
    imports only the standard library; everything else under TYPE_CHECKING."""
    problems = [f"{imp.where}: {imp.importer} imports {imp.target} at run time" for imp in _imports()
                if (imp.importer == "engine" and not imp.type_checking and imp.top == "engine"
                    and imp.target != "engine.environment")
                or (imp.importer == "engine.environment" and imp.top not in sys.stdlib_module_names)]
    _report("[init] `import engine` must stay cheap: every engine module pays for it",
            "load the name lazily (engine/__init__.py `_EXPORTS`), importing it only under TYPE_CHECKING.", problems)


def test_types_depend_on_stdlib_and_pydantic_only() -> None:
    problems = []
    for imp in _imports():
        inside = imp.importer == "engine.types" or imp.importer.startswith("engine.types.")
        own = imp.target == "engine.types" or imp.target.startswith("engine.types.")
        if inside and ((_engine(imp) and not own) or (not _engine(imp) and imp.top not in API_ALLOWED)):
            problems.append(f"{imp.where}: engine.types imports {imp.target}")
    _report("[types] engine/types/ is the bottom layer: it imports nothing else from engine, only the standard "
            "library and pydantic", "define the needed type in engine/types/ itself, or keep the code that needs "
            "the library in "
            "the package that uses it.", problems)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    # Module-level and function-level imports both count; `if TYPE_CHECKING:` imports never run, so they do not.
    modules = _files()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    edges: dict[tuple[str, str], list[str]] = {}
    for imp in _imports():
        if _engine(imp) and not imp.type_checking and imp.target in modules and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
            edges.setdefault((imp.importer, imp.target), []).append(imp.where)
    problems = []
    for comp in _strongly_connected(graph):
        inside = sorted(f"{where}: {a} -> {b}" for (a, b), ws in edges.items() if a in comp and b in comp for where in ws)
        problems.append(f"{' <-> '.join(comp)}:\n    " + "\n    ".join(inside))
    _report("[cycle] engine modules must not import each other in a cycle (function-level imports included)",
            "move what the modules share into a lower module (or engine/types/), or pass it in; a function-level "
            "import does not break a cycle, it hides it.", problems)


def test_function_level_imports_only_for_heavy_optional_libraries() -> None:
    problems = []
    for imp in _imports():
        if not imp.in_function:
            continue
        if imp.target in LAZY_ALLOWED:  # an engine module that imports torch at its top
            continue
        if _engine(imp):
            problems.append(f"{imp.where}: {imp.importer} imports {imp.target} inside a function (an engine module)")
        elif imp.top not in LAZY_ALLOWED:
            problems.append(f"{imp.where}: {imp.importer} imports {imp.target} inside a function")
    _report("[lazy-import] imports inside functions are only for heavy optional libraries ("
            + ", ".join(sorted(LAZY_ALLOWED)) + "), never for engine modules",
            "move the import to the top of the file (if that makes a cycle or breaks the layering, move the shared "
            "code down instead); a heavy optional library missing from the list goes in LAZY_ALLOWED "
            "(tests/test_architecture.py) and docs/architecture.md.", problems)


def _loaded_by_import(module: str, heavy: list[str]) -> list[str]:
    """Which of `heavy` a fresh interpreter has loaded after `import module`."""
    code = f"import json, sys; import {module}; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"`import {module}` failed:\n{proc.stderr}"
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_import_engine_tasks_stays_light() -> None:
    # Building and scoring tasks must not pay for the statistics stack, torch, MLflow or litellm.
    loaded = _loaded_by_import("engine.tasks", ["scipy", "torch", "mlflow", "litellm"])
    assert not loaded, (
        f"`import engine.tasks` loads {', '.join(loaded)}. Fix: import these only where they are needed (engine.stats "
        "from the runner/compare layers; torch/mlflow/litellm inside the function using them), not from a module "
        "that engine.tasks imports at module level. Find the chain with "
        "`python -X importtime -c 'import engine.tasks' 2>&1 | grep -B5 <name>`."
    )


def test_no_file_keeps_merge_conflict_markers() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    bad = []
    for name in tracked:
        path = REPO / name
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".js", ".html", ".css", ""}:
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        bad += [f"{name}:{i + 1}" for i, line in enumerate(lines) if line.startswith(("<<<<<<< ", ">>>>>>> "))]
    assert not bad, f"unresolved merge conflicts: {bad}"


def test_import_engine_cli_loads_no_model_or_network_stack() -> None:
    # Every `python -m engine` pays for what engine.cli imports, a cached re-run most of all
    # (docs/architecture.md, "Start-up and exit"): these load where a run needs them.
    loaded = _loaded_by_import("engine.cli", ["aiohttp", "torch", "transformers", "litellm", "mlflow", "datasets",
                                              "docker", "scipy"])
    assert not loaded, (
        f"`import engine.cli` loads {', '.join(loaded)}. Fix: import it inside the function that needs it (it is in "
        "LAZY_ALLOWED); find the chain with `python -X importtime -c 'import engine.cli' 2>&1 | grep -B5 <name>`."
    )


# The test suite's tools are the `test` extra of pyproject.toml, not runtime dependencies: an installed
# evalbench lacks them. playwright may serve a runtime feature only lazily (inside the function, with a
# clear message when it is absent).
TEST_ONLY = frozenset({"pytest", "_pytest", "pytest_timeout", "xdist", "statsmodels"})


def test_runtime_code_never_imports_the_test_tools() -> None:
    problems = [f"{imp.where}: {imp.importer} imports {imp.target}" for imp in _imports()
                if imp.top in TEST_ONLY or (imp.top == "playwright" and not imp.in_function and not imp.type_checking)]
    _report("[test-only] engine/ never imports the test suite's tools (pytest, statsmodels, ...) and imports "
            "playwright only inside a function", "keep test helpers under tests/; import playwright where the "
            "feature uses it and say what to install when it is missing.", problems)
