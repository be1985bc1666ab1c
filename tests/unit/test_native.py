"""The compiled core (stream.native): used only when it matches the sources, and then it
computes exactly what the plain Python does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream import native

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, flag: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RFM_")}
    env[native.ENV] = flag
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )


def _current_build() -> dict[str, object] | None:
    try:
        manifest = json.loads((native.BUILD_DIR / native.MANIFEST).read_text())
    except OSError:
        return None
    return None if native.unusable(manifest) else manifest


def _package(tmp_path: Path) -> Path:
    pkg = tmp_path / "stream"
    (pkg / "store").mkdir(parents=True)
    (pkg / "store" / "codec.py").write_text("from stream.store.names import Y\n")
    (pkg / "store" / "names.py").write_text("Y = 2\n")
    (pkg / "cli.py").write_text("from stream.store.codec import Y\n")
    return pkg


def test_an_edited_compiled_source_or_its_import_makes_the_build_stale(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    digest = native.source_digest(pkg)
    (pkg / "store" / "codec.py").write_text("from stream.store.names import Y\nZ = 1\n")
    assert native.source_digest(pkg) != digest
    (pkg / "store" / "codec.py").write_text("from stream.store.names import Y\n")
    assert native.source_digest(pkg) == digest
    (pkg / "store" / "names.py").write_text("Y = 3\n")  # imported by a compiled module
    assert native.source_digest(pkg) != digest


def test_editing_the_rest_of_the_package_keeps_the_build(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    digest = native.source_digest(pkg)
    (pkg / "cli.py").write_text("from stream.store.codec import Y\nprint(Y)\n")
    (pkg / "new.py").write_text("")
    assert native.source_digest(pkg) == digest


def test_the_real_build_covers_the_core_and_not_the_cli() -> None:
    sources = {p.relative_to(native.PACKAGE).as_posix() for p in native.compiled_sources()}
    assert {"core/events.py", "core/step.py", "store/codec.py", "config/__init__.py"} <= sources
    assert not sources & {
        "cli/group.py",
        "cli/data.py",
        "shell/processor.py",
        "worker/app.py",
        "kafka/admin.py",
    }


def test_the_build_directory_itself_is_not_a_source(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    digest = native.source_digest(pkg)
    (pkg / ".native").mkdir()
    (pkg / ".native" / "anything.py").write_text("Z = 1\n")
    assert native.source_digest(pkg) == digest


def test_a_build_is_refused_unless_it_matches_sources_interpreter_and_files(
    tmp_path: Path,
) -> None:
    pkg = _package(tmp_path)
    build = tmp_path / "build"
    build.mkdir()
    files = {name: f"{name}.so" for name in native.MODULES}
    for f in files.values():
        (build / f).write_bytes(b"")
    good = {"sources": native.source_digest(pkg), "tag": native.build_tag(), "files": files}
    assert native.unusable(good, build, pkg) is None

    assert "no build" in str(native.unusable(None, build, pkg))
    assert "interpreter" in str(native.unusable({**good, "tag": "cpython-39"}, build, pkg))
    (pkg / "store" / "names.py").write_text("Y = 3\n")
    assert "sources changed" in str(native.unusable(good, build, pkg))
    good["sources"] = native.source_digest(pkg)
    fewer = dict(list(files.items())[1:])
    assert "lacks modules" in str(native.unusable({**good, "files": fewer}, build, pkg))
    (build / files[native.MODULES[0]]).unlink()
    assert "incomplete" in str(native.unusable(good, build, pkg))


@pytest.mark.parametrize("code", ["import stream", "from stream.cli import main; main(['export'])"])
def test_a_bad_rfm_native_value_stops_start_up_naming_it(code: str) -> None:
    done = _python(code, "yes")
    assert done.returncode == 1
    # one line, as every configuration error: the setting, its values, what was given
    assert done.stderr.splitlines() == [
        "Error: configuration error: RFM_NATIVE: must be 0, 1 or unset, got 'yes' (0: plain "
        "Python; 1: the compiled core or stop; unset: the compiled core when its build is "
        "current)"
    ]


def test_rfm_native_0_runs_plain_python() -> None:
    done = _python(
        "import stream.shell.processor as p, stream.native as n; print(p.__file__, n.active())", "0"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(ROOT / "stream" / "shell" / "processor.py"), "False"]


@pytest.fixture
def compiled() -> None:
    if _current_build() is None:
        pytest.skip(
            "no current compiled core: needs gcc and python3-dev, then scripts/build-native"
            " (scripts/bootstrap installs both and builds it)"
        )


@pytest.mark.usefixtures("compiled")
def test_rfm_native_1_serves_every_listed_module_compiled() -> None:
    code = (
        "import importlib, stream.native as n\n"
        "for m in n.MODULES: print(m, importlib.import_module(m).__file__)\n"
    )
    done = _python(code, "1")
    assert done.returncode == 0, done.stderr
    served = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert set(served) == set(native.MODULES)
    for module, file in served.items():
        assert Path(file).is_relative_to(native.BUILD_DIR), (module, file)
        assert file.endswith(".so"), (module, file)


@pytest.mark.usefixtures("compiled")
def test_compiled_and_plain_core_send_redis_the_same_documents() -> None:
    """Both paths of 2,000 customers (a first order each, then a refresh from their standings
    that moves edges):
    every commit document byte for byte, so compiling changes speed and nothing else."""
    code = (
        "import hashlib\n"
        "from bench.core import documents\n"
        "from stream.store.commits import commit_record\n"
        "from stream.config import load_settings\n"
        "docs = documents(load_settings({}), 2000, 1_764_000_000_000)\n"
        "print(len(docs), sum('seg' in d for d in docs),"
        " hashlib.sha256(repr([commit_record(d) for d in docs]).encode()).hexdigest())\n"
    )
    plain, compiled = _python(code, "0"), _python(code, "1")
    assert plain.returncode == 0, plain.stderr
    assert compiled.returncode == 0, compiled.stderr
    count, moves, _ = plain.stdout.split()
    # every first assignment, then a commit for each customer the refresh re-scores (those
    # whose M score moved), some with a segment move
    assert 3000 < int(count) < 4000 and 2000 < int(moves) < int(count)
    assert compiled.stdout == plain.stdout
