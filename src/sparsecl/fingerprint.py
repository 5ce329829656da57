"""Code fingerprints: the hash of exactly the package code a stage runs, so a change reruns what it touches.

A stage's code is the closure of its entry modules under the imports written in them (at any
depth, lazy imports inside functions included), within the package. Registries import every
method, backbone and dataset module at run time, but a run uses one of each: the workflow adds
the module that registers the run's method, backbone and dataset by name, found by reading the
sources, and leaves the others out, so editing one method does not retrain another. Each module
is hashed as its parsed code with docstrings removed: comments, docstrings and formatting do not
count. Torch-free, for DAG-build time.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "sparsecl"
ROOT = Path(__file__).resolve().parent
# The command-line plumbing (argument parsing) is not part of any stage's computation.
PLUMBING = frozenset({"sparsecl.cli", "sparsecl.data.cli"})
# How each registry's modules register a name: a decorator with the name, or (datasets, often
# registered through a helper) a module that calls `DATASETS.register` and spells the name.
REGISTRATIONS = {
    "method": ("@register_method(", re.compile(r"@register_method\(\s*['\"]([^'\"]+)['\"]")),
    "backbone": ("@register_backbone(", re.compile(r"@register_backbone\(\s*['\"]([^'\"]+)['\"]")),
    "dataset": ("DATASETS.register(", re.compile(r"['\"]([a-z0-9_]+)['\"]")),
}
REGISTRY_PACKAGES = {"method": "methods", "backbone": "models", "dataset": "data"}


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of module `name` (a package's __init__.py), or None outside the package."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    parts = name.split(".")[1:]
    base = root.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


@cache
def _parsed(path: Path, root: Path, mtime_ns: int) -> tuple[frozenset[str], str]:  # noqa: ARG001
    """The modules `path` imports and the hash of its code, from one parse; `mtime_ns` is only
    part of the cache key, so that an edited file is parsed again."""
    tree = ast.parse(path.read_text(), str(path))
    imports = frozenset(_imports(tree, module_name(path, root), path.name == "__init__.py"))
    return imports, hashlib.sha256(_code(tree).encode()).hexdigest()


def _analysis(path: Path, root: Path) -> tuple[frozenset[str], str]:
    return _parsed(path, root, path.stat().st_mtime_ns)


def _imports(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """Modules (and candidate submodules) named by the import statements of module `name`."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}  # `from . import x`: x may be a module
    return found


def closure(entries: Iterable[str], root: Path = ROOT) -> set[Path]:
    """Every package source file that importing `entries` reads (parents' __init__ included)."""
    todo, seen = list(entries), set()
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen or name in PLUMBING:
            continue
        seen.add(name)
        path = module_file(name, root)
        if path is None:
            continue
        files.add(path)
        parent = name.rpartition(".")[0]
        if parent:
            todo.append(parent)
        todo.extend(_analysis(path, root)[0])
    return files


def _code(tree: ast.Module) -> str:
    """The module's parsed code without docstrings, so edits of comments and docs hash the same
    (strips them from `tree` in place)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def parse_all(root: Path = ROOT) -> None:
    """Parse every module of the package once: a warm process's forked jobs then fingerprint the
    code they run (their resume files carry it) without parsing it again."""
    for path in sorted(root.rglob("*.py")):
        _analysis(path, root)


def fingerprint(entries: Iterable[str], root: Path = ROOT) -> str:
    digest = hashlib.sha256()
    for path in sorted(closure(entries, root)):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(_analysis(path, root)[1].encode())
    return digest.hexdigest()[:16]


@cache
def registered_module(kind: str, name: str, root: Path = ROOT) -> str:
    """The module that registers `name` in the `kind` registry (method, backbone, dataset)."""
    marker, pattern = REGISTRATIONS[kind]
    for path in sorted((root / REGISTRY_PACKAGES[kind]).glob("*.py")):
        text = path.read_text()
        if marker in text and name in pattern.findall(text):
            return module_name(path, root)
    raise KeyError(f"no module registers the {kind} {name!r}")


def stage_modules(method: str, backbone: str, dataset: str) -> tuple[str, ...]:
    """What training and evaluation run: the stage code and the run's method, backbone and dataset."""
    return (
        "sparsecl.stages",
        registered_module("method", method),
        registered_module("backbone", backbone),
        registered_module("dataset", dataset),
    )


def inherited(entries: tuple[str, ...], reuse: bool) -> str:
    """`fingerprint(entries)`, also left in the environment of the processes this one starts.

    Cluster jobs re-plan their part of the DAG when they start: with `reuse` they take the
    submitting process's fingerprint from the environment they inherit, so that editing src/
    during a run cannot make a job redo earlier tasks of its run inside its allocation.
    """
    key = f"SPARSECL_CODE_{hashlib.sha256(repr(entries).encode()).hexdigest()[:12]}"
    if not (reuse and key in os.environ):
        os.environ[key] = fingerprint(entries)
    return os.environ[key]
