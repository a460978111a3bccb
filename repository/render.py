"""Showing untrusted strings to a key holder: escaped, flagged and bounded.

Everything a review prints comes from metadata someone else wrote. A terminal interprets control
characters (a backspace moves the cursor back over a path, `ESC[2J` clears the screen, OSC sets
the title), bidi controls reorder what is read, zero-width characters hide, and a Cyrillic a
(U+0430) looks like a Latin one. So every character outside printable ASCII is shown as an
escape and the value is flagged; a long value is cut, saying how much and with a hash of the
whole, so two values that differ only past the cut still look different.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

MAX_SHOWN = 160


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    if 0x20 <= code < 0x7F:
        return ch
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def text(value: str, limit: int = MAX_SHOWN) -> str:
    """`value` quoted, with every non-printable-ASCII character escaped and flagged, cut at
    `limit` characters with what was cut said."""
    escaped = "".join(_escape_char(ch) for ch in value)
    flags = []
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or 0x80 <= ord(ch) < 0xA0 for ch in value):
        flags.append("control characters")
    if any(ord(ch) >= 0xA0 for ch in value):
        flags.append("non-ASCII")
    if len(escaped) > limit:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        cut = len(escaped) - limit
        escaped = escaped[:limit]
        flags.append(f"{len(value)} chars, {cut} chars cut, sha256 {digest}")
    shown = f'"{escaped}"'
    return f"{shown} [{'; '.join(flags)}]" if flags else shown


def value(obj: Any, limit: int = MAX_SHOWN) -> str:
    """Any JSON value, rendered safely: strings through `text`, containers element by element."""
    if isinstance(obj, str):
        return text(obj, limit)
    if obj is None or isinstance(obj, bool | int | float):
        return json.dumps(obj)
    if isinstance(obj, dict):
        items = ", ".join(f"{text(str(k), limit)}: {value(v, limit)}" for k, v in obj.items())
        return "{" + items + "}"
    if isinstance(obj, list | tuple):
        return "[" + ", ".join(value(v, limit) for v in obj) + "]"
    return text(repr(obj), limit)


def plain(value: str, limit: int = MAX_SHOWN) -> str:
    """A string that is normally plain (a role name, a keyid): itself if it is short printable
    ASCII, else the escaped and flagged form."""
    if len(value) <= limit and all(0x20 < ord(ch) < 0x7F for ch in value):
        return value
    return text(value, limit)


def has_control(value: str) -> bool:
    """Whether `value` holds a control, format (bidi, zero-width) or other invisible character."""
    return any(
        unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for ch in value
    )
