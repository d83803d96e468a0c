"""Speech data sets on disk -> utterances (id, texts, phoneme ids, a mono float waveform at the configured rate)
and a manifest that counts everything that was not taken as it came.

Two layouts:
- LJSpeech: `root/metadata.csv`, lines `id|text|normalised text` (UTF-8, no quoting: LJSpeech's text holds
  quotes), and `root/wavs/<id>.wav`. The G2P reads the normalised column (numbers and abbreviations spelt out),
  or the text column where the normalised one is empty.
- A folder of pairs: every `*.wav` under root (recursively) with a `.txt` of the same name beside it holding its
  transcript; the id is the path under root without the extension.

Reading is two passes, so that a 24-hour corpus is never held in memory by the reader: `scan_*` pairs transcripts
with files and runs the G2P, cheaply, before anything is decoded (or any Ray task started); `load` then decodes
one file at a time (audio.read_audio) and yields the good ones. Bad input, each named in the manifest's
"skipped" lists (or, with on_bad="fail", raised at the first, naming it):
- a transcript line without its wav ("no_wav"), a wav without a transcript ("no_transcript"), a malformed or
  duplicated metadata line ("malformed");
- a transcript the G2P refuses: a character it cannot read or a word CMUdict does not list ("g2p");
- an unreadable, zero-length, silent or too-short file ("unreadable", "empty", "silent", "too_short").
Kept but counted, and said once per file set rather than per file: files at another sample rate (resampled),
multi-channel files (downmixed by the channel mean), files with clipped samples (their count).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from djepa.console import say
from djepa.speech.audio import RESAMPLER, AudioError, read_audio
from djepa.speech.g2p import G2PError, encode
from djepa.speech.mel import SAMPLE_RATE

SKIP_KINDS = ("malformed", "no_wav", "no_transcript", "g2p", "unreadable", "empty", "silent", "too_short")


class CorpusError(ValueError):
    """Bad input with on_bad='fail': the message names the file or line and why."""


@dataclass
class Entry:
    """A transcript paired with its file, before decoding: phonemes are token ids of g2p.VOCABULARY."""

    id: str
    path: Path
    text: str
    normalised: str
    phonemes: list[int]


@dataclass
class Utterance:
    id: str
    text: str
    normalised: str
    phonemes: list[int]
    wave: np.ndarray  # (T,) float32 mono at the manifest's sample_rate


@dataclass
class Scan:
    entries: list[Entry]
    manifest: dict = field(default_factory=dict)


def _manifest(root: Path, layout: str) -> dict:
    return {"root": str(root), "layout": layout, "utterances": 0, "seconds": 0.0, "sample_rate": None,
            "resampled": {}, "resampler": RESAMPLER, "downmixed": 0, "clipped_files": 0, "clipped_samples": 0,
            "skipped": {kind: [] for kind in SKIP_KINDS}}


def _bad(manifest: dict, kind: str, name: str, reason: str, on_bad: str) -> None:
    if on_bad == "fail":
        raise CorpusError(f"{name}: {reason} (set on_bad='skip' to skip such files and count them)")
    manifest["skipped"][kind].append(f"{name}: {reason}")


def _entry(manifest: dict, uid: str, path: Path, text: str, normalised: str, where: str, on_bad: str
           ) -> Entry | None:
    try:
        return Entry(uid, path, text, normalised, encode(normalised or text))
    except G2PError as e:
        _bad(manifest, "g2p", where, str(e), on_bad)
        return None


def scan_ljspeech(root: str | Path, on_bad: str = "skip") -> Scan:
    """metadata.csv + wavs/: pairs, malformed lines, missing files either way, G2P refusals."""
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise CorpusError(f"{meta} not found: an LJSpeech folder holds metadata.csv (id|text|normalised) and wavs/")
    manifest, entries, seen = _manifest(root, "ljspeech"), [], set()
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{meta.name}:{n}"
        fields = line.split("|")
        if len(fields) not in (2, 3) or not fields[0].strip() or fields[0] in seen:
            why = "duplicate id" if fields[0] in seen else "not id|text|normalised text"
            _bad(manifest, "malformed", where, f"{why}: {line[:80]!r}", on_bad)
            continue
        uid = fields[0].strip()
        seen.add(uid)
        path = root / "wavs" / f"{uid}.wav"
        if not path.is_file():
            _bad(manifest, "no_wav", where, f"no wavs/{uid}.wav for this transcript", on_bad)
            continue
        entry = _entry(manifest, uid, path, fields[1], fields[2] if len(fields) == 3 else "", where, on_bad)
        if entry:
            entries.append(entry)
    for path in sorted((root / "wavs").glob("*.wav")) if (root / "wavs").is_dir() else []:
        if path.stem not in seen:
            _bad(manifest, "no_transcript", f"wavs/{path.name}", f"no line for {path.stem} in metadata.csv", on_bad)
    return Scan(entries, manifest)


def scan_folder(root: str | Path, on_bad: str = "skip") -> Scan:
    """root/**/x.wav + root/**/x.txt: pairs, missing halves either way, G2P refusals; sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root} is not a folder of .wav files with same-name .txt transcripts")
    manifest, entries = _manifest(root, "folder"), []
    wavs = {p.relative_to(root).with_suffix("").as_posix(): p for p in root.rglob("*.wav")}
    texts = {p.relative_to(root).with_suffix("").as_posix(): p for p in root.rglob("*.txt")}
    for uid in sorted(set(wavs) | set(texts)):
        if uid not in wavs:
            _bad(manifest, "no_wav", f"{uid}.txt", f"no {uid}.wav beside this transcript", on_bad)
        elif uid not in texts:
            _bad(manifest, "no_transcript", f"{uid}.wav", f"no {uid}.txt transcript beside it", on_bad)
        else:
            text = texts[uid].read_text(encoding="utf-8").strip()
            entry = _entry(manifest, uid, wavs[uid], text, text, f"{uid}.txt", on_bad)
            if entry:
                entries.append(entry)
    if not wavs and not texts:
        raise CorpusError(f"no .wav or .txt files under {root}")
    return Scan(entries, manifest)


def load(scan: Scan, sample_rate: int = SAMPLE_RATE, on_bad: str = "skip", verbose: bool = True
         ) -> Iterator[Utterance]:
    """Decode the scanned files one at a time, yielding the good ones; the scan's manifest counts the rest. At the
    end, one line each for resampled, downmixed, clipped and skipped files (never one per file)."""
    m = scan.manifest
    m["sample_rate"] = sample_rate
    for e in scan.entries:
        try:
            clip = read_audio(e.path, sample_rate)
        except AudioError as err:
            _bad(m, err.kind, str(e.path.relative_to(m["root"])), str(err), on_bad)
            continue
        if clip.source_rate != sample_rate:
            key = str(clip.source_rate)
            m["resampled"][key] = m["resampled"].get(key, 0) + 1
        m["downmixed"] += clip.channels > 1
        m["clipped_files"] += clip.clipped > 0
        m["clipped_samples"] += clip.clipped
        m["utterances"] += 1
        m["seconds"] = round(m["seconds"] + clip.seconds, 3)
        yield Utterance(e.id, e.text, e.normalised, e.phonemes, clip.wave)
    if verbose:
        say_manifest(m)


def say_manifest(m: dict) -> None:
    """What was done to the file set, one line per kind."""
    tag = "data"
    if m["resampled"]:
        rates = ", ".join(f"{n} at {r} Hz" for r, n in sorted(m["resampled"].items()))
        say(tag, f"resampled {sum(m['resampled'].values())} files to {m['sample_rate']} Hz with {m['resampler']} "
                 f"({rates})")
    if m["downmixed"]:
        say(tag, f"downmixed {m['downmixed']} multi-channel files to mono (the mean of the channels)")
    if m["clipped_files"]:
        say(tag, f"{m['clipped_files']} files have clipped samples ({m['clipped_samples']} at full scale); kept")
    for kind, names in m["skipped"].items():
        if names:
            say(tag, f"skipped {len(names)} ({kind}): {'; '.join(names[:3])}{' ...' if len(names) > 3 else ''}")
    say(tag, f"{m['utterances']} utterances, {m['seconds'] / 3600:.2f} h, from {m['root']} ({m['layout']})")


def read_corpus(root: str | Path, layout: str = "ljspeech", sample_rate: int = SAMPLE_RATE, on_bad: str = "skip",
                verbose: bool = True) -> tuple[list[Utterance], dict]:
    """Scan and load a whole (small) data set: (utterances, manifest)."""
    if layout not in ("ljspeech", "folder"):
        raise ValueError(f"layout must be 'ljspeech' or 'folder', not {layout!r}")
    if on_bad not in ("skip", "fail"):
        raise ValueError(f"on_bad must be 'skip' or 'fail', not {on_bad!r}")
    scan = (scan_ljspeech if layout == "ljspeech" else scan_folder)(root, on_bad)
    utterances = list(load(scan, sample_rate, on_bad, verbose))
    return utterances, scan.manifest
