"""The embedded spoken digits (djepa/speech/data/, made by make_spoken_digits.py): 300 espeak-ng utterances of a
digit ("seven") or two ("three seven") in 78 voices, nothing to download and no system package needed.

Loaded as float waveforms at 22,050 Hz with their texts and their digits as a pair of class ids (first, second),
second = NONE for a single digit: what the domain recogniser (recogniser.py) predicts. The 80/20 split is the image
classifiers' fixed permutation (djepa/eval/classifier.split_indices), so all domain models split alike.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from djepa.eval.classifier import split_indices
from djepa.speech.mel import SAMPLE_RATE

DATA = Path(__file__).resolve().parent / "data"
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NONE = 10  # the second digit of a one-digit utterance
_DIGIT = {w: d for d, w in enumerate(WORDS)}


@dataclass
class SpokenDigits:
    """N utterances: ids, texts ('3 7'), normalised texts ('three seven'), waves (float32 (T_i,) each), voices
    ('en-gb+f2'), digits (N, 2) int64 (first, second or NONE)."""

    ids: list[str]
    texts: list[str]
    normalised: list[str]
    waves: list[np.ndarray]
    voices: list[str]
    digits: np.ndarray

    def subset(self, index) -> "SpokenDigits":
        index = [int(i) for i in index]
        return SpokenDigits([self.ids[i] for i in index], [self.texts[i] for i in index],
                            [self.normalised[i] for i in index], [self.waves[i] for i in index],
                            [self.voices[i] for i in index], self.digits[index])


def digits_of(text: str) -> tuple[int, int]:
    """'three seven' -> (3, 7); 'seven' -> (7, NONE); ValueError for anything else."""
    words = text.strip().lower().split()
    if not 1 <= len(words) <= 2 or any(w not in _DIGIT for w in words):
        raise ValueError(f"{text!r} is not one or two digit words ({', '.join(WORDS)})")
    return _DIGIT[words[0]], _DIGIT[words[1]] if len(words) == 2 else NONE


def text_of(first: int, second: int) -> str:
    """(3, 7) -> 'three seven'; (7, NONE) -> 'seven'."""
    return WORDS[first] if second == NONE else f"{WORDS[first]} {WORDS[second]}"


def _rows(name: str) -> list[list[str]]:
    return [line.split("|") for line in (DATA / name).read_text().splitlines() if line]


@functools.lru_cache(maxsize=1)
def _load() -> SpokenDigits:
    import soundfile as sf

    audio, rate = sf.read(str(DATA / "audio.flac"), dtype="int16")
    if rate != SAMPLE_RATE:
        raise RuntimeError(f"{DATA / 'audio.flac'} is {rate} Hz, not {SAMPLE_RATE}")
    meta = _rows("metadata.csv")
    utt = _rows("utterances.csv")[1:]  # header: id|voice|speed|pitch|start|samples
    if [m[0] for m in meta] != [u[0] for u in utt]:
        raise RuntimeError(f"{DATA}: metadata.csv and utterances.csv list different ids")
    waves = [(audio[int(u[4]):int(u[4]) + int(u[5])] / 32768.0).astype(np.float32) for u in utt]
    digits = np.array([digits_of(m[2]) for m in meta], np.int64)
    return SpokenDigits([m[0] for m in meta], [m[1] for m in meta], [m[2] for m in meta], waves,
                        [u[1] for u in utt], digits)


def spoken_digits() -> SpokenDigits:
    """All 300 utterances (read once per process, ~0.2 s); callers get their own lists."""
    d = _load()
    return d.subset(range(len(d.ids)))


def real_split() -> tuple[SpokenDigits, SpokenDigits]:
    """(train, held out): 240 / 60 utterances by the domain classifiers' fixed permutation."""
    d = spoken_digits()
    train, held = split_indices(len(d.ids))
    return d.subset(train), d.subset(held)


def info() -> dict:
    """info.json: how the data were made, and the normalisation statistics stored with them ("mel_stats")."""
    return json.loads((DATA / "info.json").read_text())


def write_ljspeech(root: str | Path, data: SpokenDigits | None = None) -> Path:
    """The utterances as an LJSpeech folder (metadata.csv, wavs/<id>.wav, 16-bit PCM), e.g. for corpus.py."""
    from djepa.speech.audio import write_wav

    d = data or spoken_digits()
    root = Path(root)
    for i, wave in zip(d.ids, d.waves):
        write_wav(root / "wavs" / f"{i}.wav", wave)
    (root / "metadata.csv").write_text("".join(f"{i}|{t}|{n}\n" for i, t, n in zip(d.ids, d.texts, d.normalised)))
    return root
