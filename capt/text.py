"""The one caption normaliser, shared by the vocabulary, the references and (later) the metrics.

Tokenisation dominates BLEU, so every caption in the project (training targets, references,
hypotheses) goes through ``normalize_caption`` and nothing else.
"""

from __future__ import annotations

import re

# Penn Treebank tokens, as coco-caption's PTBTokenizer writes them (the tokenizer of published COCO
# scores): a clitic is a token of its own ("man's" -> "man 's", "don't" -> "do n't"), so the models'
# vocabulary, their captions and the references all hold the same "'s" whichever tokenizer scores
# them (evaluate.tokenizer). Curly and back quotes count as apostrophes.
_APOSTROPHES = re.compile(r"[\u2019\u2018`]")
_CLITIC = re.compile(r"(?<=[^\W_])(n't|'s|'m|'d|'ll|'re|'ve)(?![^\W_])")
# A clitic, or a run of letters and digits that may hold, as PTB keeps them, an apostrophe or a
# hyphen inside ("o'clock", "t-shirt") or a decimal point ("3.5"); everything else (punctuation,
# quotes, an apostrophe or hyphen at a word's edge) separates words.
_TOKEN = re.compile(r"(?<![^\W_])(?:n't|'s|'m|'d|'ll|'re|'ve)(?![^\W_])|[^\W_]+(?:['-][^\W_]+|(?<=\d)[.,]\d+)*")


def normalize_caption(text: str) -> list[str]:
    """Lowercase, split clitics, drop punctuation: ``"A man's red, circle."`` -> ``["a", "man", "'s",
    "red", "circle"]``."""
    text = _CLITIC.sub(r" \1", _APOSTROPHES.sub("'", text.lower()))
    return _TOKEN.findall(text)
