"""Text from elsewhere made safe to print on an operator's terminal.

A task name, an error message or a file name read from the database, a file
or an argument may carry escape sequences (``ESC [ 2 J`` clears the screen,
others retitle the window or rewrite what was printed before). The commands
print every string they did not write themselves through :func:`visible`, so
that such characters appear as escapes, never act. A newline of such text is
made visible too: lines are the commands' own layout.
"""

from __future__ import annotations

import unicodedata

#: How the most common control characters are shown; the others as ``\xNN`` or ``\uNNNN``.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

#: Bidirectional controls: they reorder what the terminal shows ("Trojan Source").
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def visible(text: object) -> str:
    """``text`` as a string with its control characters written as escapes (ESC as ``\\x1b``)."""
    return "".join(_shown(char) for char in str(text))


def _shown(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    if unicodedata.category(char) == "Cc" or char in _BIDI:
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char
