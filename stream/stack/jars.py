"""The broker's jars: fetched once with Maven into a per-user cache, shared by every stack."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from stream.process import run_logged
from stream.stack.errors import StackError
from stream.stack.layout import Layout, default_state_dir, write_atomic

KAFKA_VERSION = "3.9.1"
KAFKA_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"  # present only once a jar download completed


def default_libs_dir(state_dir: Path | None = None) -> Path:
    """`$RFM_KAFKA_LIBS`, else `<state dir>/kafka-<version>/libs`: stacks share one download."""
    explicit = os.environ.get("RFM_KAFKA_LIBS")
    if explicit:
        return Path(explicit).expanduser()
    return (state_dir or default_state_dir()) / f"kafka-{KAFKA_VERSION}" / "libs"


def classpath(libs: Path) -> str:
    return f"{libs}/*"  # the JVM expands the wildcard itself


def log4j_args(layout: Layout) -> list[str]:
    target = layout.conf / "log4j.properties"
    template = resources.files(__package__ or __name__).joinpath("log4j.properties")
    write_atomic(target, template.read_text(encoding="utf-8"))
    return [f"-Dlog4j.configuration=file:{target}"]


def ensure_libs(libs: Path, layout: Layout, deadline: float, echo: Callable[[str], None]) -> None:
    """Fetch the broker jars with Maven once; later starts (any state dir) reuse them."""
    if (libs / KAFKA_JAR).is_file():
        return
    if libs.is_dir() and any(libs.iterdir()):
        raise StackError(
            f"{libs} holds no {KAFKA_JAR}: delete that directory so the jars can be fetched again"
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            f"mvn not found on PATH: install Maven (apt-get install maven) to fetch the Kafka "
            f"{KAFKA_VERSION} jars once, or set RFM_KAFKA_LIBS to a directory holding them"
        )
    echo(f"kafka: fetching Kafka {KAFKA_VERSION} jars with Maven into {libs} (first use only)")
    kafka_home = layout.root / f"kafka-{KAFKA_VERSION}"
    kafka_home.mkdir(parents=True, exist_ok=True)
    pom = kafka_home / "pom.xml"  # a copy, so Maven never writes into the installed package
    write_atomic(pom, resources.files(__package__ or __name__).joinpath("pom.xml").read_text())
    libs.parent.mkdir(parents=True, exist_ok=True)
    partial = libs.with_name(f"{libs.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    log = layout.log("maven")
    cmd = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    ]
    code = run_logged(cmd, log, deadline=deadline)
    if code is None:
        shutil.rmtree(partial, ignore_errors=True)
        raise StackError(
            f"Maven did not finish fetching the Kafka jars in time: see {log}, "
            f"then retry with a longer timeout"
        )
    if code != 0 or not (partial / KAFKA_JAR).is_file():
        shutil.rmtree(partial, ignore_errors=True)
        raise StackError(
            f"Maven could not fetch the Kafka {KAFKA_VERSION} jars (exit {code}): see {log}"
        )
    if libs.is_dir():
        with contextlib.suppress(OSError):
            libs.rmdir()  # an empty placeholder; a complete one from a racing `up` stays
    try:
        os.rename(partial, libs)  # atomic: a libs dir with the broker jar is always complete
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (libs / KAFKA_JAR).is_file():
            raise
