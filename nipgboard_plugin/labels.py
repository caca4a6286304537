"""What a label may be: one rule for the command line, the labels CSV, class folders and the web panel.

A label is a non-empty string of at most :data:`MAX_LABEL_LENGTH` characters (after stripping
surrounding white space) without control characters (C0, DEL and C1: they would move the cursor,
colour a terminal or hide text when a label is printed) and without lone surrogates (they cannot be
stored as UTF-8). :func:`clean_label` returns the cleaned label or raises
:class:`~.errors.InvalidParameter`; its message names the parameter, never repeats the refused value.

:func:`printable` shows any text (a label, a path) safely in a message: control characters escaped,
cut to a given length.
"""
from .errors import InvalidParameter

MAX_LABEL_LENGTH = 100


def _is_control(ch: str) -> bool:
    o = ord(ch)
    return o < 32 or 127 <= o <= 159


def clean_label(value, name="label"):
    """``value`` stripped, or None for None (no label); InvalidParameter when it is not a valid label."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be a string or null, got {type(value).__name__}")
    label = value.strip()
    if not label:
        raise InvalidParameter(f"{name} is empty (use null to remove a label)")
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidParameter(f"{name} is too long ({len(label)} characters, limit {MAX_LABEL_LENGTH})")
    if any(_is_control(c) for c in label):
        raise InvalidParameter(f"{name} contains control characters")
    try:
        label.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParameter(f"{name} is not valid Unicode text (it contains a lone surrogate)") from None
    return label


def printable(text, limit=40) -> str:
    """``text`` for a message: control characters and lone surrogates as escapes, at most ``limit``
    characters (then an ellipsis)."""
    text = str(text)
    cut = len(text) > limit
    out = []
    for ch in text[:limit]:
        o = ord(ch)
        out.append(f"\\x{o:02x}" if _is_control(ch) else f"\\u{o:04x}" if 0xD800 <= o <= 0xDFFF else ch)
    return "".join(out) + ("…" if cut else "")
