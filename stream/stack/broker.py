"""The Kafka broker (KRaft, one node): finding the JVM, its config file, formatting its storage,
and the command line that runs it."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from stream.process import run_logged
from stream.stack.errors import StackError
from stream.stack.jars import classpath, log4j_args
from stream.stack.layout import HOST, Layout, write_atomic
from stream.stack.security import KEYSTORE, KEYSTORE_PASS, SCRAM_MECHANISMS, scram_credential

# Heap capped so the broker fits next to workers on a small box. SerialGC measurably shortens
# start-up on 2 cores (see module tests/report); C2 stays on because benchmarks run on this broker.
_KAFKA_JVM = ("-Xms256m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")
# The one-shot storage formatter never runs long enough for C2 to pay off.
_TOOL_JVM = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise StackError(
            "java not found on PATH: install a Java 17 runtime "
            "(apt-get install openjdk-17-jre-headless)"
        )
    return found


def command(java: str, libs: Path, layout: Layout) -> list[str]:
    """The broker's command line; it names our config file, which marks the process as ours."""
    cmd = [java, *_KAFKA_JVM, *log4j_args(layout), "-cp", classpath(libs)]
    return [*cmd, "kafka.Kafka", str(layout.config("kafka"))]


def _java_props(props: dict[str, str]) -> str:
    """java.util.Properties text (Kafka reads it as ISO-8859-1, so escape the rest)."""

    def esc(value: str) -> str:
        value = value.replace("\\", "\\\\")
        return "".join(c if ord(c) < 128 else f"\\u{ord(c):04x}" for c in value)

    lines = ["# written by `rfm stack up` on every start; edits are overwritten"]
    lines += [f"{key}={esc(value)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def write_config(
    layout: Layout, port: int, controller_port: int, sasl_listeners: Mapping[str, int]
) -> None:
    listeners = f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}"
    advertised = f"PLAINTEXT://{HOST}:{port}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    sasl: dict[str, str] = {}
    # Clients only: brokers and the controller keep talking over the plain listeners.
    for protocol, sasl_port in sasl_listeners.items():  # listener name = protocol name
        listeners += f",{protocol}://{HOST}:{sasl_port}"
        advertised += f",{protocol}://{HOST}:{sasl_port}"
        protocols += f",{protocol}:{protocol}"
        sasl["sasl.enabled.mechanisms"] = ",".join(SCRAM_MECHANISMS)
        prefix = f"listener.name.{protocol.lower()}"
        for mechanism in SCRAM_MECHANISMS:  # the broker side needs no secret, only the module
            key = f"{prefix}.{mechanism.lower()}.sasl.jaas.config"
            sasl[key] = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        if protocol == "SASL_SSL":
            sasl[f"{prefix}.ssl.keystore.type"] = "PKCS12"
            sasl[f"{prefix}.ssl.keystore.location"] = str(layout.tls / KEYSTORE)
            sasl[f"{prefix}.ssl.keystore.password"] = (layout.tls / KEYSTORE_PASS).read_text()
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": listeners,
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": protocols,
        **sasl,
        "log.dirs": str(layout.kafka_data),
        # a single node: every internal topic has exactly one replica
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    write_atomic(layout.config("kafka"), _java_props(props))


def _cluster_id(layout: Layout) -> str:
    with contextlib.suppress(OSError):
        remembered = layout.cluster_id_file.read_text().strip()
        if remembered:
            return remembered
    while True:  # Kafka's own generator also avoids ids that look like a CLI flag
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            break
    write_atomic(layout.cluster_id_file, cluster_id + "\n")
    return cluster_id


def format_storage(
    java: str,
    libs: Path,
    layout: Layout,
    deadline: float,
    echo: Callable[[str], None],
    users: Mapping[str, str],
) -> None:
    """KRaft refuses to start on an unformatted log dir; format it once per state dir.

    SCRAM users go into the metadata log here. Their credentials travel in a private argument
    file (the java launcher expands `@file`), never on a command line other users can read.
    """
    if (layout.kafka_data / "meta.properties").is_file():
        return
    echo(f"kafka: formatting storage in {layout.kafka_data} (first start of this state dir)")
    args = ["kafka.tools.StorageTool", "format", "--ignore-formatted", "-t", _cluster_id(layout)]
    args += ["-c", layout.config("kafka").name]  # relative to cwd: no path to quote below
    for name, password in users.items():
        for mechanism in SCRAM_MECHANISMS:
            args += ["--add-scram", scram_credential(mechanism, name, password)]
    # Every argument is from a quote-free alphabet (checked names, base64, our file names).
    argfile = layout.conf / f".format-{os.getpid()}.args"
    fd = os.open(argfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write("".join(f"'{arg}'\n" for arg in args))
    cmd = [java, *_TOOL_JVM, *log4j_args(layout), "-cp", classpath(libs), f"@{argfile}"]
    log = layout.log("kafka")
    try:
        code = run_logged(cmd, log, cwd=layout.conf, deadline=deadline)
    finally:
        argfile.unlink(missing_ok=True)
    if code is None:
        raise StackError(f"formatting Kafka storage timed out: see {log}")
    if code != 0:
        raise StackError(f"formatting Kafka storage failed (exit {code}): see {log}")
