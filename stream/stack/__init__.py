"""Local Apache Kafka (KRaft) + Redis on loopback: the engine behind `rfm stack up|down|status`.

Why it exists: the scorer needs a broker and a Redis, and Docker is not always available. The
broker runs on our own JVM from Maven-resolved jars (fetched once into a per-user cache), Redis
from the system `redis-server`. Both bind 127.0.0.1 only, keep their data and logs under one
state dir, and outlive the `rfm stack up` that started them so `rfm worker` & co. can use them.
Processes are recognised as ours by pid file + /proc cmdline (which names our config file), so
`up` is idempotent and `down` never signals anything it did not start. No topics are created here.

Optionally the broker also listens for SASL_PLAINTEXT and/or SASL_SSL (a self-signed certificate
made once per state dir, see `ca_file`) with SCRAM-SHA-256/512 for the users given to `up`: a real
SASL broker to point the scorer's SASL and TLS settings at.

Modules: `lifecycle` (up, down, status), `daemons` (the two processes: start, find, stop),
`readiness` (when a started one answers), `broker` and `redis_server` (their config and command
lines), `jars` (the broker's jars via Maven), `security` (SCRAM users, the TLS key), `ports`
(checks before anything starts), `layout` (the state dir), `status` and `errors` (what callers get).
"""

from __future__ import annotations

from stream.stack.errors import StackError
from stream.stack.jars import KAFKA_VERSION, default_libs_dir
from stream.stack.layout import HOST, default_state_dir
from stream.stack.lifecycle import down, status, up
from stream.stack.security import SCRAM_MECHANISMS, ca_file
from stream.stack.status import ComponentStatus, StackStatus

__all__ = [
    "HOST",
    "KAFKA_VERSION",
    "SCRAM_MECHANISMS",
    "ComponentStatus",
    "StackError",
    "StackStatus",
    "ca_file",
    "default_libs_dir",
    "default_state_dir",
    "down",
    "status",
    "up",
]
