"""Text from users and files, made safe to print on a terminal.

A prompt, a token, generated text or a file name may hold control characters: ESC starts
sequences that clear the screen, set the window title or write hyperlinks; a carriage return
overwrites what was printed; bidirectional overrides reorder what the reader sees. `plain`
shows each of them escaped (`\\x1b`, `\\x0d`, `\\u202e`) instead of emitting it; newline and tab
pass. Rich markup is never interpreted in such text: the terminal renderer wraps it in
rich `Text` objects, which print their characters as they are.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional embeddings,
# overrides and isolates (U+202A-U+202E, U+2066-U+2069).
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape_char(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(text: str) -> str:
    """`text` with every control character but newline and tab shown escaped, never emitted."""
    return UNSAFE.sub(escape_char, text)
