"""Speech samples as files a person can listen to and look at: a 16-bit PCM WAV and a mel-spectrogram PNG per
sample, and `samples.jsonl`, one line per sample naming its files and its text, in sample order:

    {"index": 0, "text": "three seven", "wav": "sample-0000.wav", "png": "sample-0000.png", "seconds": 0.58}

Paths are relative to the folder, so the folder can be moved or logged to MLflow as it is. Every file is written
to a temporary name and renamed (samples.atomic_write).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from djepa.speech.audio import write_wav
from djepa.speech.mel import HOP, SAMPLE_RATE, log_mel

LINES = "samples.jsonl"


def save_mel_png(path: str | Path, log_mel_, title: str = "", sample_rate: int = SAMPLE_RATE) -> Path:
    """A log-mel (80, T) as a PNG: time in seconds across, mel bin up, log magnitude in colour (viridis)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    from djepa.samples import atomic_write

    m = np.asarray(log_mel_, np.float32)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.5 + m.shape[1] / 25), 3.0), dpi=100)  # ~4 px a frame
    shown = ax.imshow(m, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest",
                      extent=(0, m.shape[1] * HOP / sample_rate, 0, m.shape[0]))
    ax.set_xlabel("seconds")
    ax.set_ylabel("mel bin")
    ax.set_title(title, fontsize=9)
    fig.colorbar(shown, ax=ax, label="log magnitude")
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def write_samples(out: str | Path, waves, texts: list[str], mels=None, prefix: str = "sample",
                  sample_rate: int = SAMPLE_RATE) -> Path:
    """Waveforms (float, [-1, 1]) and their texts -> out/<prefix>-NNNN.wav and .png, and out/samples.jsonl.
    The PNG shows `mels[i]` when given (the generated log-mel before the vocoder), else the WAV's own log-mel."""
    from djepa.samples import atomic_write

    out = Path(out)
    if len(waves) != len(texts) or (mels is not None and len(mels) != len(waves)):
        raise ValueError(f"{len(waves)} waveforms, {len(texts)} texts"
                         f"{'' if mels is None else f', {len(mels)} mels'}: one of each per sample")
    lines = []
    for i, (wave, text) in enumerate(zip(waves, texts)):
        stem = f"{prefix}-{i:04d}"
        write_wav(out / f"{stem}.wav", wave, sample_rate)
        shown = mels[i] if mels is not None else log_mel(wave, sample_rate)
        save_mel_png(out / f"{stem}.png", shown, f"{i}: {text}", sample_rate)
        lines.append(json.dumps({"index": i, "text": text, "wav": f"{stem}.wav", "png": f"{stem}.png",
                                 "seconds": round(len(wave) / sample_rate, 3)}))
    path = out / LINES
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in lines)))
    return path


def read_samples(out: str | Path) -> list[dict]:
    """samples.jsonl's lines as dicts, with the WAV paths made absolute ("wav_path")."""
    out = Path(out)
    rows = [json.loads(line) for line in (out / LINES).read_text().splitlines() if line]
    for r in rows:
        r["wav_path"] = str(out / r["wav"])
    return rows
