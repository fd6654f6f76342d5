"""The word map: built from training captions only, with the four special tokens first."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from capt.errors import CaptError
from capt.files import write_json

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)


class Vocabulary:
    """A bijection word <-> id. ``<pad>`` is 0 so zero-filled tensors are padding."""

    def __init__(self, words: Iterable[str]):
        words = list(words)
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise CaptError(f"a word map must start with {', '.join(SPECIALS)}; got {words[:4]}")
        self.words: list[str] = words
        self.word_map: dict[str, int] = {w: i for i, w in enumerate(words)}
        if len(self.word_map) != len(words):
            raise CaptError("a word map has a repeated word")
        self.pad, self.start, self.end, self.unk = (self.word_map[s] for s in SPECIALS)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: list[str], max_len: int) -> list[int]:
        """``<start> w1 .. wn <end> <pad>..`` of length ``max_len + 2``; tokens beyond max_len are cut."""
        ids = [self.word_map.get(t, self.unk) for t in tokens[:max_len]]
        ids = [self.start, *ids, self.end]
        return ids + [self.pad] * (max_len + 2 - len(ids))

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first ``<end>``, specials (start, pad) dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.end:
                break
            if i in (self.start, self.pad):
                continue
            out.append(self.words[i])
        return out

    def save(self, path: Path) -> None:
        write_json(Path(path), self.word_map, sort_keys=False)

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            word_map = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CaptError(f"{path}: cannot read word map ({e})") from None
        if not isinstance(word_map, dict):
            raise CaptError(f"{path}: a word map is a JSON object of word -> id, not a {type(word_map).__name__}")
        for word, i in word_map.items():
            if not isinstance(i, int) or isinstance(i, bool):
                raise CaptError(f"{path}: the id of {word!r} is {i!r}, not an integer")
        words = sorted(word_map, key=word_map.__getitem__)
        if [word_map[w] for w in words] != list(range(len(words))):
            raise CaptError(f"{path}: word map ids are not 0..{len(words) - 1}")
        try:
            return cls(words)
        except CaptError as e:
            raise CaptError(f"{path}: {e}") from None


def check_model_words(model: Vocabulary, model_path: Path, word_map: Vocabulary, word_map_path: Path) -> None:
    """A model's own words (saved with it) must be those of the word map its data was encoded with:
    an id means one word in both, and a word the model emits beyond the map would have none."""
    if len(word_map) != len(model):
        raise CaptError(f"{word_map_path}: the word map has {len(word_map)} words but the model {model_path} predicts "
                        f"{len(model)}; they come from different prepare runs: rerun the model's training stage")
    if word_map.words != model.words:
        k = next(i for i, (a, b) in enumerate(zip(word_map.words, model.words)) if a != b)
        raise CaptError(f"{word_map_path}: word {k} is {word_map.words[k]!r} but {model_path} has {model.words[k]!r} "
                        "there; they come from different prepare runs: rerun the model's training stage")


def build_vocabulary(token_lists: Iterable[list[str]], min_word_freq: int) -> tuple[Vocabulary, Counter]:
    """Words seen at least ``min_word_freq`` times, most frequent first (ties alphabetical)."""
    counts: Counter = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    kept = sorted((w for w, c in counts.items() if c >= min_word_freq and w not in SPECIALS),
                  key=lambda w: (-counts[w], w))
    return Vocabulary([*SPECIALS, *kept]), counts
