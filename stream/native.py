"""Run the pure core as mypyc-compiled extension modules when a build matching the sources
exists; otherwise run the same modules as plain Python.

Why: the per-customer work (decode, fold, re-score, build the commit document) is pure
Python and was most of the worker's and the refresh's CPU; compiled, the same source runs
about twice as fast (``rfm bench`` reports both, ``bench.core``). The build
(``scripts/build-native``) goes to ``stream/.native/`` beside the sources, never over them,
with a manifest of the hash of every ``stream`` source it was built from. At import the
manifest is checked against the sources: one edited file anywhere in the package and the
compiled modules are ignored (with a warning), so a stale build can never shadow an edit.

``RFM_NATIVE=0`` runs plain Python; ``RFM_NATIVE=1`` makes a missing or stale build an
error instead of a fallback (CI uses it to be sure what it tested).
"""

from __future__ import annotations

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
# measurable there, and redis_store's async generators do not compile.
MODULES = (
    "stream.changes",
    "stream.customer",
    "stream.events",
    "stream.money",
    "stream.partitioning",
    "stream.rescore",
    "stream.scoring",
    "stream.segments",
    "stream.store.buckets",
    "stream.store.codec",
    "stream.store.commits",
    "stream.store.keys",
    "stream.transitions",
)
PACKAGE = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE / ".native"
MANIFEST = "manifest.json"
ENV = "RFM_NATIVE"


class NativeError(RuntimeError):
    """RFM_NATIVE=1 and the compiled core is missing or stale."""


def source_digest(package: Path = PACKAGE) -> str:
    """One hash over every source file of the package, in a stable order."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if any(part.startswith(".") for part in path.relative_to(package).parts):
            continue  # the build and its staging directories
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
        raise NativeError(f"{ENV} must be 0, 1 or unset; got {wanted!r}")
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
