"""Make the embedded spoken digits (djepa/speech/data/) with espeak-ng. Run once; its output is committed.

    apt-get install -y espeak-ng          # Debian 12: espeak-ng 1.51
    python -m djepa.speech.make_spoken_digits

How the data were made, exactly:
- Texts: the 10 digits alone, each 10 times (100 utterances), and every ordered pair of digits ("three seven";
  a digit may repeat: "four four"), each twice (200 utterances): 300 utterances, 110 distinct texts.
- Each utterance draws, from numpy's default_rng(SEED), an accent among ACCENTS, a voice variant among
  VARIANTS (espeak-ng's formant variants: m1-m7 male, f1-f5 female, or none), a speed in words per minute in
  [150, 250] and a pitch in [20, 80] (espeak-ng's 0-99 scale; 50 is its default), all uniform.
- `espeak-ng -v <accent>[+<variant>] -s <speed> -p <pitch> --stdout <text>` synthesises 16-bit mono PCM at
  22,050 Hz (espeak-ng's own rate: no resampling). The amplitude is espeak-ng's default (100: peaks reach
  0.998 of full scale in the loudest voices, no sample at it). Leading and trailing silence is cut to 10 ms
  either side of the first and last sample above 0.001 of full scale (espeak-ng ends every utterance with
  ~0.35 s of silence). 162 s of audio in all, 0.17-1.15 s an utterance.
- The utterances, in a shuffled order, are concatenated into one FLAC file (libsndfile, compression level 1.0):
  one file instead of 300 keeps git's history small, and FLAC is lossless, so the int16 samples read back are
  espeak-ng's. `utterances.csv` gives each one's voice, speed, pitch, first sample and length;
  `metadata.csv` is LJSpeech's layout (id|text|normalised text: "sd0007|3 7|three seven").
- `info.json`: the versions used and the per-mel-bin mean / std over every frame of the 300 utterances
  (djepa/speech/mel.py), the data set's normalisation statistics.

espeak-ng's output changes between its versions, hence the committed data: tests and CI need no system package,
and a rerun with another espeak-ng version makes other (equally valid) data.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from djepa.speech.mel import SAMPLE_RATE, log_mel, mel_stats

SEED = 0
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SINGLES_PER_DIGIT, PER_PAIR = 10, 2
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbcwmd")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
SPEED, PITCH = (150, 250), (20, 80)
TRIM_LEVEL, MARGIN = 0.001, SAMPLE_RATE // 100  # silence below 0.001 of full scale; 10 ms kept either side
OUT = Path(__file__).resolve().parent / "data"


def texts() -> list[tuple[str, str]]:
    """(text, normalised text) of every utterance, in generation order: '7' / 'seven', '3 7' / 'three seven'."""
    out = [(str(d), WORDS[d]) for d in range(10) for _ in range(SINGLES_PER_DIGIT)]
    out += [(f"{a} {b}", f"{WORDS[a]} {WORDS[b]}") for a in range(10) for b in range(10) for _ in range(PER_PAIR)]
    return out


def speak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's int16 samples of `text`, silence trimmed."""
    import soundfile as sf

    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         capture_output=True, check=True).stdout
    x, rate = sf.read(io.BytesIO(wav), dtype="int16")
    if rate != SAMPLE_RATE or x.ndim != 1:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz with shape {x.shape}; expected mono {SAMPLE_RATE} Hz")
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > TRIM_LEVEL * 32768)
    return x[max(loud[0] - MARGIN, 0):loud[-1] + 1 + MARGIN]


def main(out: Path = OUT) -> None:
    import soundfile as sf

    rng = np.random.default_rng(SEED)
    items = texts()
    order = rng.permutation(len(items))  # shuffled: any prefix or split mixes digits and pairs
    rows, clips, start = [], [], 0
    for i, j in enumerate(order):
        text, normalised = items[j]
        accent, variant = ACCENTS[rng.integers(len(ACCENTS))], VARIANTS[rng.integers(len(VARIANTS))]
        voice = f"{accent}+{variant}" if variant else accent
        speed, pitch = int(rng.integers(SPEED[0], SPEED[1] + 1)), int(rng.integers(PITCH[0], PITCH[1] + 1))
        x = speak(normalised, voice, speed, pitch)
        rows.append({"id": f"sd{i:04d}", "text": text, "normalised": normalised, "voice": voice, "speed": speed,
                     "pitch": pitch, "start": start, "samples": len(x)})
        clips.append(x)
        start += len(x)
    out.mkdir(parents=True, exist_ok=True)
    audio = np.concatenate(clips)
    sf.write(str(out / "audio.flac"), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16", compression_level=1.0)
    (out / "metadata.csv").write_text("".join(f"{r['id']}|{r['text']}|{r['normalised']}\n" for r in rows))
    keys = ("id", "voice", "speed", "pitch", "start", "samples")
    (out / "utterances.csv").write_text("|".join(keys) + "\n" +
                                        "".join("|".join(str(r[k]) for k in keys) + "\n" for r in rows))
    back, _ = sf.read(str(out / "audio.flac"), dtype="int16")
    assert np.array_equal(back, audio), "FLAC did not read back the samples written"
    stats = mel_stats(log_mel(back[r["start"]:r["start"] + r["samples"]] / 32768.0).numpy() for r in rows)
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout.split()
    info = {"made_with": {"espeak-ng": version[3] if len(version) > 3 else " ".join(version),
                          "libsndfile": sf.__libsndfile_version__, "seed": SEED,
                          "command": "python -m djepa.speech.make_spoken_digits"},
            "utterances": len(rows), "seconds": round(len(audio) / SAMPLE_RATE, 2), "mel_stats": stats}
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir())
    sys.stdout.write(f"[speech] {len(rows)} utterances, {len(audio) / SAMPLE_RATE:.1f} s, {size / 1e6:.2f} MB "
                     f"in {out}\n")


if __name__ == "__main__":
    main()
