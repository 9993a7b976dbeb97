"""Chat text as it is stored and shown: `normalize_text` (docs/chat.md, "Text
normalisation") takes out what renders as nothing or reorders the screen and caps combining
marks; `text_fingerprint` is what two messages must differ in to count as two (the duplicate
guard's key). Pure."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

MAX_MARKS_PER_CHAR: Final = 4  # combining marks (and one variation selector) on one character

_WHITESPACE_CONTROLS = {"\t", "\n", "\r", "\x0b", "\x0c", "\u2028", "\u2029", "\x85"}
# Bidirectional embeddings/overrides/isolates: they reorder what follows them on screen.
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SPACES = re.compile(r"\s+")
ZWNJ: Final = "\u200c"
ZWJ: Final = "\u200d"
_JOINERS = frozenset((ZWNJ, ZWJ))
# Invisible characters that are not in category Cf (format, removed whole): Unicode's
# Default_Ignorable_Code_Point set (combining grapheme joiner, Hangul fillers, Khmer inherent
# vowels, the unassigned U+FFF0-FFF8 and U+E0000-E0FFF), plus U+2800 (braille blank, a
# letter-sized nothing). Variation selectors are kept apart: one per character (below).
_INVISIBLE_RANGES: Final = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE00FF),  # tag characters (Cf) and the unassigned rest of the block
    (0xE01F0, 0xE0FFF),
)
_SELECTOR_RANGES: Final = ((0x180B, 0x180D), (0x180F, 0x180F), (0xFE00, 0xFE0F), (0xE0100, 0xE01EF))
# a joiner is kept only inside a sequence it can shape: after a character of these categories
# (emoji, modifiers, letters of scripts without case) and before one of the second set
_JOIN_AFTER: Final = frozenset(("So", "Sk", "Lo", "Lm"))
_JOIN_BEFORE: Final = frozenset(("So", "Lo", "Lm"))


def _in(ranges: tuple[tuple[int, int], ...], char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in ranges)


def normalize_text(raw: str, max_marks: int = MAX_MARKS_PER_CHAR) -> str:
    """The text as it is stored and shown (docs/chat.md, "Normalisation"):

    1. line breaks and tabs become spaces; control characters (C0, C1), lone surrogates,
       format characters (Cf: zero-width space, soft hyphen, word joiner, BOM, bidi marks and
       overrides, tag characters, ...) and other invisible ones (Hangul fillers, braille blank,
       combining grapheme joiner) are removed; ZWJ/ZWNJ wait for step 3;
    2. NFD (so "é" counts as e + one mark), trimmed;
    3. each character keeps at most `max_marks` combining marks, of which at most one
       variation selector; marks on nothing or on a space go; ZWJ/ZWNJ stay only between two
       characters they can join (emoji sequences, letters of scripts without case);
    4. NFC, trimmed. The result may be empty: the caller refuses it.

    Idempotent: normalising the result changes nothing."""
    kept = []
    for char in raw:
        if char in _WHITESPACE_CONTROLS:
            kept.append(" ")
        elif char in _JOINERS or not _invisible(char):
            kept.append(char)
    text = unicodedata.normalize("NFD", "".join(kept)).strip()
    text = _shape(text, max_marks)
    return unicodedata.normalize("NFC", text).strip()


def _invisible(char: str) -> bool:
    return (
        char in _BIDI
        or unicodedata.category(char) in ("Cc", "Cs", "Cf")
        or _in(_INVISIBLE_RANGES, char)
    )


def _shape(text: str, max_marks: int) -> str:
    """Step 3 of `normalize_text`: marks capped per base character, joiners in context."""
    out: list[str] = []
    base = ""  # the character the marks that follow sit on ("" = none)
    marks = selectors = 0
    for i, char in enumerate(text):
        if char in _JOINERS:
            after = text[i + 1] if i + 1 < len(text) else ""
            if (
                base
                and after
                and unicodedata.category(base) in _JOIN_AFTER
                and unicodedata.category(after) in _JOIN_BEFORE
            ):
                out.append(char)
            continue
        if unicodedata.category(char).startswith("M"):
            selector = _in(_SELECTOR_RANGES, char)
            if not base or base.isspace() or marks >= max_marks or (selector and selectors):
                continue
            marks += 1
            selectors += selector
            out.append(char)
            continue
        base, marks, selectors = char, 0, 0
        out.append(char)
    return "".join(out)


def text_fingerprint(text: str) -> str:
    """What a copy must differ in to count as another message: not case, spacing,
    compatibility forms (fullwidth, mathematical letters), joiners or selectors."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    visible = "".join(c for c in folded if c not in _JOINERS and not _in(_SELECTOR_RANGES, c))
    return _SPACES.sub(" ", visible).strip()
