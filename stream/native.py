"""Run the pure core as mypyc-compiled extension modules when a build matching the sources
exists; otherwise run the same modules as plain Python.

Why: the per-customer work (decode, fold, re-score, build the commit document) is pure
Python and was most of the worker's and the refresh's CPU; compiled, the same source runs
about twice as fast (``rfm bench`` reports both, ``bench.core``). The build
(``scripts/build-native``) goes to ``stream/.native/`` beside the sources, never over them,
with a manifest of the hash of the sources it was built from: the compiled modules and the
``stream`` modules they import. At import the manifest is checked against those sources: one
of them edited and the compiled modules are ignored (with a warning), so a stale build can
never shadow an edit; editing anything else (CLI, shell, adapters) keeps the build.

``RFM_NATIVE=0`` runs plain Python; ``RFM_NATIVE=1`` makes a missing or stale build an
error instead of a fallback (CI uses it to be sure what it tested).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

log = logging.getLogger("rfm.native")

# The compiled set: the pure core, everything a customer's step runs between its load and its
# commit. Not the async shell (processor, store adapter): compiled coroutines gained nothing
# measurable there, and the store's async generators do not compile.
MODULES = (
    "stream.core.changes",
    "stream.core.customer",
    "stream.core.events",
    "stream.core.money",
    "stream.core.partitioning",
    "stream.core.rescore",
    "stream.core.scoring",
    "stream.core.scheme",
    "stream.store.buckets",
    "stream.store.codec",
    "stream.store.commits",
    "stream.store.keys",
    "stream.core.step",
)
PACKAGE = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE / ".native"
MANIFEST = "manifest.json"
ENV = "RFM_NATIVE"


class NativeError(RuntimeError):
    """RFM_NATIVE has a value it cannot take, or is 1 and the compiled core is missing or
    stale: a configuration error (``import stream`` stops naming the setting)."""


def _imported(path: Path) -> set[str]:
    """The ``stream`` modules a source file imports (absolute imports only, as ours are)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("stream."))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and (node.module == "stream" or node.module.startswith("stream."))
        ):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _source_of(module: str, package: Path) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for candidate in (package / rel.with_suffix(".py"), package / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def compiled_sources(package: Path = PACKAGE, modules: Sequence[str] = MODULES) -> list[Path]:
    """The sources a build depends on: the compiled modules and every ``stream`` module they
    import, transitively (mypyc reads their types and may inline their constants). Editing
    anything else (the CLI, the shell, an adapter) leaves the build current."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = _source_of(module, package)
        if path is None:
            continue  # a name imported from a module, not a module
        seen[module] = path
        todo.extend(_imported(path) - set(seen))
    return sorted(set(seen.values()))


def source_digest(package: Path = PACKAGE, modules: Sequence[str] = MODULES) -> str:
    """One hash over the sources a build depends on (``compiled_sources``), in a stable order."""
    h = hashlib.sha256()
    for path in compiled_sources(package, modules):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def build_tag() -> str:
    """What an extension module is tied to besides the sources: interpreter and ABI."""
    return f"{sys.implementation.cache_tag}-{importlib.machinery.EXTENSION_SUFFIXES[0]}"


class _Finder(importlib.abc.MetaPathFinder):
    """Serves exactly the compiled modules from the build; every other import is untouched."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


_finder: _Finder | None = None


def unusable(
    manifest: dict[str, object] | None, build_dir: Path = BUILD_DIR, package: Path = PACKAGE
) -> str | None:
    """Why the build a manifest describes cannot be used here, or None if it can."""
    if manifest is None:
        return f"no build in {build_dir} (scripts/build-native makes one)"
    if manifest.get("tag") != build_tag():
        return f"the build is for {manifest.get('tag')}, this interpreter is {build_tag()}"
    if manifest.get("sources") != source_digest(package):
        return "the sources changed since the build (scripts/build-native rebuilds it)"
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) < set(MODULES):
        return "the build lacks modules (scripts/build-native rebuilds it)"
    if not all((build_dir / str(f)).is_file() for f in files.values()):
        return "the build is incomplete (scripts/build-native rebuilds it)"
    return None


def activate() -> bool:
    """Install the finder if a current build exists; called once, from ``stream/__init__``."""
    global _finder
    wanted = os.environ.get(ENV, "")
    if wanted not in ("", "0", "1"):
        raise NativeError(
            f"{ENV}: must be 0, 1 or unset, got {wanted[:40]!r} (0: plain Python; 1: the "
            "compiled core or stop; unset: the compiled core when its build is current)"
        )
    if wanted == "0" or _finder is not None:
        return _finder is not None
    try:
        manifest = json.loads((BUILD_DIR / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    reason = unusable(manifest)
    if reason is not None:
        if wanted == "1":
            raise NativeError(f"{ENV}=1 but the compiled core cannot be used: {reason}")
        if manifest is not None:  # a build exists but is unusable: worth saying
            log.warning("running the core as plain Python: %s", reason)
        return False
    assert manifest is not None
    files = {name: BUILD_DIR / f for name, f in manifest["files"].items()}
    _finder = _Finder(files)
    sys.meta_path.insert(0, _finder)
    return True


def active() -> bool:
    """True when the compiled modules are the ones imported."""
    return _finder is not None
