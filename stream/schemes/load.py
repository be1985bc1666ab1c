"""Where schemes come from: a preset shipped beside this module, or a file by path."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from stream.core.scheme import Scheme
from stream.schemes.error import SchemeError
from stream.schemes.parse import parse_scheme

__all__ = ["PRESETS", "load_scheme"]

PRESETS: tuple[str, ...] = ("rfm-classic", "rfim", "simple")


def load_scheme(name_or_path: str, buckets: int) -> Scheme:
    """Load a preset (``rfm-classic``, ``rfim``, ``simple``) or a scheme file by path."""
    if name_or_path in PRESETS:
        blob = (resources.files("stream.schemes") / f"{name_or_path}.toml").read_bytes()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise SchemeError(
                f"scheme {name_or_path!r}: not a preset ({', '.join(PRESETS)}) nor a file",
                scheme=name_or_path,
                field="scoring.scheme",
            )
        blob = path.read_bytes()
    try:
        data = tomllib.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SchemeError(
            f"scheme {name_or_path!r}: not valid UTF-8 TOML: {exc}", scheme=name_or_path
        ) from None
    return parse_scheme(data, buckets, source=name_or_path)
