"""The one caption normaliser, shared by the vocabulary, the references and (later) the metrics.

Tokenisation dominates BLEU, so every caption in the project (training targets, references,
hypotheses) goes through ``normalize_caption`` and nothing else.
"""

from __future__ import annotations

import re

# Apostrophes join ("man's" -> "mans", "don't" -> "dont") rather than split, so a word never
# becomes two tokens of which one is a fragment.
_APOSTROPHES = re.compile(r"['\u2019`]")
# Everything that is not a letter or a digit separates words.
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_caption(text: str) -> list[str]:
    """Lowercase, drop punctuation, split on whitespace: ``"A Red, circle."`` -> ``["a", "red", "circle"]``."""
    text = _APOSTROPHES.sub("", text.lower())
    return _NON_WORD.sub(" ", text).split()
