"""The one policy for subject names, wherever a name comes in (the API, the admin UI, zip
folder names, CSV and JSON-lines lists, the command line): NFC-normalised, at most
MAX_LENGTH characters, and no control or format characters. The bidi overrides and isolates
(U+202A-U+202E, U+2066-U+2069) are format characters: a name holding one displays as another
name (the Trojan-source trick), so it is refused, never silently cleaned."""

from __future__ import annotations

import unicodedata

MAX_LENGTH = 255  # the subjects.name column
# Cc: controls (NUL, newlines, ESC); Cf: format (bidi controls, zero-width spaces, soft
# hyphens); Cs: lone surrogates; Co/Cn: private-use and unassigned code points; Zl/Zp:
# line and paragraph separators. None of them belongs in a name a person reads.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# The zero-width non-joiner and joiner are format characters that spell real names: Persian
# writes "Mohammad-Reza" style compounds with U+200C, and Indic scripts choose conjunct forms
# with both. They change how letters join, never the order text displays in.
_JOINERS = frozenset({"\u200c", "\u200d"})


class SubjectNameError(ValueError):
    """A name the policy refuses; the message says which character, where, and why."""


def problem(name: str) -> str | None:
    """Why ``name`` (already NFC) breaks the policy, or None when it keeps it."""
    if not name.strip():
        return "a subject name must not be empty"
    if len(name) > MAX_LENGTH:
        return f"a subject name has at most {MAX_LENGTH} characters, not {len(name)}"
    for position, character in enumerate(name, start=1):
        if _refused(character):
            return (
                f"the subject name holds {describe(character)} at position {position}; "
                "control, format and bidi characters are not allowed"
            )
    return None


def subject_name(raw: str) -> str:
    """``raw`` as a stored subject name: stripped and NFC-normalised; SubjectNameError when it
    breaks the policy."""
    if not isinstance(raw, str):
        raise SubjectNameError("a subject name is a string")
    name = unicodedata.normalize("NFC", raw.strip())
    reason = problem(name)
    if reason is not None:
        raise SubjectNameError(reason)
    return name


def describe(character: str) -> str:
    """U+202E (RIGHT-TO-LEFT OVERRIDE)."""
    label = unicodedata.name(character, "") or unicodedata.category(character)
    return f"U+{ord(character):04X} ({label})"


def printable(name: str, limit: int = MAX_LENGTH) -> str:
    """``name`` safe to show: every refused character written as <U+XXXX>, cut to ``limit``
    characters (a refused name is kept as data in this form)."""
    shown = "".join(f"<U+{ord(c):04X}>" if _refused(c) else c for c in name)
    return shown if len(shown) <= limit else shown[: limit - 1] + "\u2026"


def _refused(character: str) -> bool:
    return character not in _JOINERS and unicodedata.category(character) in _REFUSED_CATEGORIES
