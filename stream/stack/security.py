"""The broker's optional SASL listeners: SCRAM users and the TLS key of the SASL_SSL one.

SCRAM credentials are salted here, so no password reaches a command line; the TLS key pair is
self-signed for 127.0.0.1/localhost, made once per state dir with the JDK's keytool.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path

from stream.process import run_logged
from stream.stack.errors import StackError
from stream.stack.layout import HOST, Layout

# What the optional SASL listeners accept; every user gets a credential for each.
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_SCRAM_ITERATIONS = 4096  # Kafka's minimum (and default)
_SCRAM_USER = re.compile(r"[A-Za-z0-9._@-]{1,128}")  # nothing the format tool's parser splits on

KEYSTORE = "broker.p12"
KEYSTORE_PASS = "broker.p12.password"


def ca_file(state_dir: Path | None = None) -> Path:
    """The certificate clients trust for the SASL_SSL listener (`RFM_KAFKA_SSL_CAFILE`).

    Self-signed for 127.0.0.1 and localhost, made on the first `up` with a `sasl_ssl_port`.
    """
    return Layout.at(state_dir).tls / "ca.pem"


def check_sasl(listeners: Mapping[str, int], users: Mapping[str, str] | None) -> dict[str, str]:
    users = dict(users or {})
    if not listeners:
        if users:
            raise StackError("SCRAM users need a SASL listener: give a SASL port as well")
        return users
    if not users:
        raise StackError("a SASL listener needs at least one SCRAM user (name and password)")
    for name, password in users.items():
        if not _SCRAM_USER.fullmatch(name):
            raise StackError(
                f"SCRAM user name {name!r} is not supported: use 1-128 of A-Z a-z 0-9 . _ @ -"
            )
        if not password:
            raise StackError(f"SCRAM user {name!r} has an empty password: give it one")
    return users


def scram_credential(mechanism: str, name: str, password: str) -> str:
    """The format tool's `--add-scram` value, salted here so no password reaches the tool.

    SaltedPassword = PBKDF2-HMAC(password, salt, iterations) (RFC 5802), which the tool turns
    into the stored and server keys the broker keeps.
    """
    digest = mechanism.removeprefix("SCRAM-").replace("-", "").lower()  # sha256 / sha512
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, _SCRAM_ITERATIONS)
    b64 = base64.b64encode
    return (
        f"{mechanism}=[name={name},iterations={_SCRAM_ITERATIONS},"
        f'salt="{b64(salt).decode()}",saltedpassword="{b64(salted).decode()}"]'
    )


def ensure_tls(java: str, layout: Layout, deadline: float) -> None:
    """Once per state dir: a self-signed key pair for 127.0.0.1/localhost, and its certificate
    as the PEM clients trust. Made with the JDK's keytool; the store password goes by file."""
    if (layout.tls / KEYSTORE).is_file() and ca_file(layout.root).is_file():
        return
    keytool = Path(java).resolve().parent / "keytool"
    if not os.access(keytool, os.X_OK):
        found = shutil.which("keytool")
        if found is None:
            raise StackError("keytool not found next to java or on PATH: install a full JDK/JRE")
        keytool = Path(found)
    shutil.rmtree(layout.tls, ignore_errors=True)  # a half-made set from an interrupted `up`
    layout.tls.mkdir(mode=0o700, parents=True)
    password_file = layout.tls / KEYSTORE_PASS
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(16))  # guards the key at rest like the dir's own mode
    store = ["-keystore", KEYSTORE, "-storetype", "PKCS12", "-storepass:file", KEYSTORE_PASS]
    key = [
        "-keyalg",
        "EC",
        "-groupname",
        "secp256r1",
        "-validity",
        "3650",
        "-dname",
        "CN=rfm-stack",
    ]
    steps = [
        ["-genkeypair", "-alias", "broker", *key, "-ext", f"SAN=ip:{HOST},dns:localhost", *store],
        ["-exportcert", "-rfc", "-alias", "broker", "-file", ca_file(layout.root).name, *store],
    ]
    log = layout.log("kafka")
    for step in steps:
        code = run_logged([str(keytool), *step], log, cwd=layout.tls, deadline=deadline)
        if code != 0:
            shutil.rmtree(layout.tls, ignore_errors=True)
            failed = "timed out" if code is None else f"failed (exit {code})"
            raise StackError(f"keytool {failed} making the broker's TLS key: see {log}")
