"""The `rfm` command line (SPEC section 8). Thin: parse options, call the modules.

One module per group of commands; importing them registers each on ``main``."""

from stream.cli import bench, data, dlq, operations, services, stack
from stream.cli.group import main

__all__ = ["bench", "data", "dlq", "main", "operations", "services", "stack"]
