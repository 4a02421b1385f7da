"""The shape of the code base, read from the source with ``ast`` (nothing is imported or run).

Rules (docs/ARCHITECTURE.md, "The import rule"):

1. **No import circle** between dnx modules, nor between dnx's packages (``dnx.<top>``; a
   module directly under ``dnx/`` is a package of its own). Every ``import`` / ``from ...
   import`` of a dnx module is an edge, at module level or inside a function alike; imports
   under ``if TYPE_CHECKING:`` are not (they never run). ``from dnx.a import b`` is an edge to
   the module ``dnx.a.b`` when that is a module, else to ``dnx.a``. The package ``__init__``
   that Python runs before a submodule is not an edge of its own: a package may import its
   submodules, and they may import each other.
2. **No cross-module ``_private`` name**: no module (tests and scripts included) imports a
   name starting with ``_`` from a dnx module, or reads ``module._name`` off a dnx module it
   imported. Private modules (``dnx._lazy``) may be imported; their public names are public.
3. **No in-function import of a light dnx module outside ``dnx/commands/``.** A dnx module is
   *heavy* when it imports a heavy third-party package (:data:`HEAVY`) at module level, else
   *light*. Heavy third-party packages stay lazy through ``dnx._lazy`` so importing any dnx
   module costs little; an in-function import of a light one only hides a circle. The Click
   commands in ``dnx/commands/`` import their library inside the command so ``dnx --help``
   loads none of it. :data:`STANDALONE` modules run where dnx is not installed and import dnx
   only when present.

"""

from __future__ import annotations

import ast
import functools
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "torchvision", "onnx", "onnxruntime", "openvino", "tensorrt", "polygraphy", "tritonclient",
         "onnxconverter_common", "matplotlib", "skimage", "boto3", "botocore", "triton_python_backend_utils"}
# Copied into a Triton model repository beside the preprocessing model (no dnx there).
STANDALONE = {"dnx.preprocess"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources(*tops: str) -> dict[str, Path]:
    return {module_name(p): p for top in tops for p in sorted((ROOT / top).rglob("*.py"))}


DNX = _sources("dnx")
ALL = {**DNX, **_sources("tests", "scripts", "benchmarks")}


class _Imports(ast.NodeVisitor):
    """Every import of one module: ``(node, in_function)``, leaving out ``if TYPE_CHECKING:`` blocks."""

    def __init__(self):
        self.found: list[tuple[ast.stmt, bool]] = []
        self.depth = 0

    def _function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function  # noqa: N815 - ast.NodeVisitor's names

    def visit_If(self, node):
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for stmt in node.orelse:
                self.visit(stmt)
            return
        self.generic_visit(node)

    def visit_Import(self, node):
        self.found.append((node, self.depth > 0))

    visit_ImportFrom = visit_Import  # noqa: N815 - ast.NodeVisitor's name


@functools.lru_cache(maxsize=None)
def _tree(name: str) -> ast.Module:
    return ast.parse(ALL[name].read_text(encoding="utf-8"), str(ALL[name]))


@functools.lru_cache(maxsize=None)
def _found(name: str) -> tuple[tuple[ast.stmt, bool], ...]:
    """Every import statement of ``name`` with whether it sits in a function (one walk per module)."""
    visitor = _Imports()
    visitor.visit(_tree(name))
    return tuple(visitor.found)


def _targets(name: str, node: ast.stmt) -> list[tuple[str, str | None]]:
    """``(imported module, imported name or None)`` pairs of one import statement."""
    if isinstance(node, ast.Import):
        return [(a.name, None) for a in node.names]
    base = node.module or ""
    if node.level:  # relative: resolve against the importing package
        package = name.split(".") if ALL[name].name == "__init__.py" else name.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    return [(base, a.name) for a in node.names]


def _dnx_module(module: str, attr: str | None) -> str | None:
    """The dnx module an import loads: ``module.attr`` when that is a module, else the closest module."""
    if attr and f"{module}.{attr}" in DNX:
        return f"{module}.{attr}"
    while module and module not in DNX:
        module = module.rpartition(".")[0]
    return module or None


@functools.lru_cache(maxsize=None)
def _imports(name: str) -> list[tuple[str, str | None, bool, int]]:
    """dnx imports of ``name``: ``(target module, name imported from it, in a function, line)``."""
    out = []
    for node, in_function in _found(name):
        for module, attr in _targets(name, node):
            if module.split(".")[0] == "dnx":
                target = _dnx_module(module, attr)
                if target and target != name:
                    out.append((target, None if target == f"{module}.{attr}" else attr, in_function, node.lineno))
    return out


def _heavy(name: str) -> bool:
    return any(module.split(".")[0] in HEAVY for node, fn in _found(name) if not fn
               for module, _ in _targets(name, node))


def _package(name: str) -> str:
    return ".".join(name.split(".")[:2])


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _edge_lines(edges_at: dict[tuple[str, str], str], component: list[str]) -> str:
    inside = set(component)
    return "; ".join(f"{a} -> {b} ({where})" for (a, b), where in sorted(edges_at.items())
                     if a in inside and b in inside)


def _report(violations: list[str], what: str) -> None:
    """Fail listing every violation."""
    assert not violations, f"{what}:\n  " + "\n  ".join(violations)


def import_circles() -> list[str]:
    """Every circle among dnx modules and among dnx packages."""
    modules: dict[str, set[str]] = {}
    packages: dict[str, set[str]] = {}
    module_at: dict[tuple[str, str], str] = {}
    package_at: dict[tuple[str, str], str] = {}
    for name in DNX:
        for target, _, _, line in _imports(name):
            modules.setdefault(name, set()).add(target)
            module_at.setdefault((name, target), f"{ALL[name].relative_to(ROOT)}:{line}")
            a, b = _package(name), _package(target)
            if a != b:
                packages.setdefault(a, set()).add(b)
                package_at.setdefault((a, b), f"{name} -> {target}, {ALL[name].relative_to(ROOT)}:{line}")
    out = []
    for kind, edges, at in (("modules", modules, module_at), ("packages", packages, package_at)):
        for component in _cycles(edges):
            out.append(f"{kind} {' <-> '.join(component)}: {_edge_lines(at, component)}")
    return out


def private_imports() -> list[str]:
    """Imports of ``_private`` names from another dnx module, and ``module._name`` reads off one."""
    out = {}
    for name, path in ALL.items():
        tree = _tree(name)
        bound: dict[str, str] = {}  # local name -> dnx module it is bound to
        for node, _ in _found(name):
            for module, attr in _targets(name, node):
                if module.split(".")[0] != "dnx":
                    continue
                target = _dnx_module(module, attr)
                local = next((a.asname or a.name for a in node.names if a.name == (attr or module)), None)
                if attr and attr.startswith("_") and not attr.startswith("__") and target != f"{module}.{attr}":
                    out[f"{path.relative_to(ROOT)}:{node.lineno} imports {attr} from {module}"] = True
                if target and local and (attr is None or target == f"{module}.{attr}"):
                    bound[local.split(".")[0] if attr is None else local] = target if attr else module
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                out[f"{path.relative_to(ROOT)}:{node.lineno} reads {node.value.id}.{node.attr}"] = True
    return list(out)


def function_imports() -> list[str]:
    """In-function imports of light dnx modules outside ``dnx/commands/`` and :data:`STANDALONE`."""
    heavy = {n for n in DNX if _heavy(n)}
    out = []
    for name in DNX:
        if name.startswith("dnx.commands") or name in STANDALONE:
            continue
        for target, _, in_function, line in _imports(name):
            if in_function and target not in heavy:
                out.append(f"{ALL[name].relative_to(ROOT)}:{line} imports {target} inside a function; "
                            "import it at module level (a circle? move the shared part down)")
    return out


def test_no_import_circle():
    _report(import_circles(), "import circles")


def test_no_private_name_crosses_a_module():
    _report(private_imports(), "private names used across modules")


def test_no_in_function_import_of_a_light_dnx_module():
    _report(function_imports(), "in-function imports of light dnx modules")


def test_the_checks_see_what_they_check():
    """The scan found the code base (an empty scan would pass every rule)."""
    assert {"dnx.pipeline.run", "dnx.manifest", "dnx.serving.servable", "dnx.cli"} <= set(DNX)
    assert ("dnx.pipeline.engine", "run_stage", False) in {t[:3] for t in _imports("dnx.pipeline.run")}
    assert ("dnx.pipeline.stages", None, False) in {t[:3] for t in _imports("dnx.pipeline.run")}
    assert not _heavy("dnx.pipeline.run") and _heavy("dnx.serving.backends.openvino.model")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]

