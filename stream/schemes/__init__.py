"""Segment scheme files: the presets shipped here (``*.toml``), reading and validating a file
into the compiled ``stream.core.scheme.Scheme`` the worker classifies with, and their docs.

``load`` finds a preset or a path, ``parse`` reads the file format, ``validate`` proves the
scheme sound (every rule reachable), ``docs`` renders the preset tables of docs/schemes.md.
"""

from __future__ import annotations

from stream.schemes.error import SchemeError
from stream.schemes.load import PRESETS, load_scheme
from stream.schemes.parse import parse_scheme

__all__ = ["PRESETS", "SchemeError", "load_scheme", "parse_scheme"]
