"""Dead letters as text: a few lines each for a person, or one JSON line each for tools.

The human form escapes control characters (and text-direction overrides): a payload is
whatever a producer sent, and must not be able to drive the terminal that shows it."""

from __future__ import annotations

import base64

import orjson

from stream.core.changes import iso_ms
from stream.deadletters.letter import Letter

SHOWN_PAYLOAD = 2000  # characters of payload in the human form; --format jsonl shows all
_BIDI = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A))


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x20 or 0x7F <= code < 0xA0 or code in _BIDI:
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return ch


def printable(text: str) -> str:
    """``text`` with control characters written as escapes."""
    return "".join(map(_escape, text))


def payload_text(letter: Letter) -> tuple[str, str]:
    """The payload as text and how: itself when UTF-8, else its base64."""
    try:
        return letter.payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(letter.payload).decode("ascii"), "base64"


def _key(letter: Letter) -> str | None:
    return None if letter.key is None else letter.key.decode("utf-8", "replace")


def human(letter: Letter) -> str:
    """Three lines: where it is and where it came from, why, and the payload."""
    origin = (
        f"from {printable(letter.topic)} partition {letter.source_partition} "
        f"offset {letter.source_offset}"
        if letter.topic is not None
        else "from no known topic"
    )
    key = _key(letter)
    head = f"dead letter {letter.id}  at {iso_ms(letter.timestamp)}  {origin}"
    head += "  (no key)" if key is None else f"  key {printable(key)}"
    text, encoding = payload_text(letter)
    label = "payload" if encoding == "utf-8" else "payload (base64)"
    shown = printable(text[:SHOWN_PAYLOAD])
    if len(text) > SHOWN_PAYLOAD:
        shown += f" ... ({len(text) - SHOWN_PAYLOAD} more characters: --format jsonl shows all)"
    return f"{head}\n  reason:  {printable(letter.reason)}\n  {label}: {shown}"


def jsonl(letter: Letter) -> bytes:
    """The record as the worker wrote it, plus its id, place and time in the dead-letter
    topic and its key; one line."""
    text, encoding = payload_text(letter)
    return (
        orjson.dumps(
            {
                "id": letter.id,
                "dlq_partition": letter.partition,
                "dlq_offset": letter.offset,
                "time": iso_ms(letter.timestamp),
                "key": _key(letter),
                "topic": letter.topic,
                "partition": letter.source_partition,
                "offset": letter.source_offset,
                "error": letter.reason,
                "payload": text,
                "payload_encoding": encoding,
            }
        )
        + b"\n"
    )
