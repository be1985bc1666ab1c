"""The one error `rfm stack` raises."""

from __future__ import annotations


class StackError(Exception):
    """A one-line message saying what is wrong and how to fix it; the CLI prints it as is."""
