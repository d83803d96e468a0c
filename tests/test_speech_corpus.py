"""Speech readers (djepa/speech/corpus.py, audio.py) on tiny WAVs written by soundfile: LJSpeech's layout and
folders of .wav + .txt pairs, and each kind of bad input named, counted or refused before anything is decoded."""
import numpy as np
import pytest
import soundfile as sf

from djepa.speech import audio, corpus
from djepa.speech.mel import SAMPLE_RATE


def voice(seconds: float = 0.3, rate: int = SAMPLE_RATE, hz: float = 180.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def lj(root, rows: list[str], wavs: dict):
    """An LJSpeech folder: metadata.csv from `rows`, wavs/<id>.wav from {id: (data, rate[, subtype])}."""
    (root / "wavs").mkdir(parents=True)
    (root / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for uid, (data, rate, *subtype) in wavs.items():
        sf.write(str(root / "wavs" / f"{uid}.wav"), data, rate, subtype=subtype[0] if subtype else "PCM_16")
    return root


def test_ljspeech_reads_texts_phonemes_and_audio(tmp_path):
    x = voice()
    root = lj(tmp_path / "lj", ["LJ001-0001|3 7|three seven", "LJ001-0002|Printing, in the only sense.|"],
              {"LJ001-0001": (x, SAMPLE_RATE), "LJ001-0002": (voice(0.2), SAMPLE_RATE)})
    utts, m = corpus.read_corpus(root, verbose=False)
    assert [u.id for u in utts] == ["LJ001-0001", "LJ001-0002"]
    a, b = utts
    assert a.text == "3 7" and a.normalised == "three seven" and len(a.phonemes) == 8 + 2
    assert b.normalised == "" and len(b.phonemes) > 10  # the G2P falls back to the text column
    assert a.wave.dtype == np.float32 and len(a.wave) == len(x)
    assert np.abs(a.wave - x).max() < 1 / 32767 + 1e-6  # 16-bit PCM read back
    assert m["utterances"] == 2 and m["seconds"] == pytest.approx(0.5, abs=1e-3)
    assert not any(m["skipped"].values()) and m["resampled"] == {} and m["downmixed"] == 0


def test_ljspeech_names_and_counts_every_bad_input(tmp_path, capsys):
    rng = np.random.default_rng(0)
    stereo = np.stack([voice(), voice(hz=300.0)], 1)
    clipped = np.clip(voice(amp=1.5), -1, 1)
    rows = ["a|one|one", "b|two|two", "c|three|three", "d|four|four", "e|five|five", "f|six|six",
            "g|seven|seven", "h|3 things|", "i|zqxv|zqxv", "not a line", "a|one again|one again", "j|nine|nine"]
    wavs = {"a": (voice(rate=44100), 44100), "b": (stereo, SAMPLE_RATE), "c": (clipped, SAMPLE_RATE),
            "d": (np.zeros(0, np.float32), SAMPLE_RATE), "e": (np.zeros(4000, np.float32), SAMPLE_RATE),
            "f": (1e-4 * rng.standard_normal(4000).astype(np.float32), SAMPLE_RATE),
            "g": (voice(0.01), SAMPLE_RATE), "h": (voice(), SAMPLE_RATE), "i": (voice(), SAMPLE_RATE),
            "k": (voice(), SAMPLE_RATE)}  # j has no wav, k no line
    root = lj(tmp_path / "lj", rows, wavs)
    (root / "wavs" / "broken.wav").write_bytes(b"RIFF\x00\x00not a wave")
    (root / "metadata.csv").write_text((root / "metadata.csv").read_text() + "broken|eight|eight\n")
    utts, m = corpus.read_corpus(root)
    assert [u.id for u in utts] == ["a", "b", "c"]
    skipped = {k: [s.split(":")[0] for s in v] for k, v in m["skipped"].items()}
    assert skipped == {"malformed": ["metadata.csv"] * 2, "no_wav": ["metadata.csv"], "no_transcript": ["wavs/k.wav"],
                       "g2p": ["metadata.csv", "metadata.csv"], "unreadable": ["wavs/broken.wav"],
                       "empty": ["wavs/d.wav"], "silent": ["wavs/e.wav", "wavs/f.wav"], "too_short": ["wavs/g.wav"]}
    assert any("'3'" in s for s in m["skipped"]["g2p"]) and any("zqxv" in s for s in m["skipped"]["g2p"])
    assert any("duplicate id" in s for s in m["skipped"]["malformed"])
    assert "digital silence" in m["skipped"]["silent"][0] and "dBFS" in m["skipped"]["silent"][1]
    assert m["resampled"] == {"44100": 1} and len(utts[0].wave) == pytest.approx(0.3 * SAMPLE_RATE, abs=2)
    assert m["downmixed"] == 1 and np.allclose(utts[1].wave, stereo.mean(1), atol=1e-4)
    assert m["clipped_files"] == 1 and m["clipped_samples"] == int((np.abs(clipped) >= 1.0).sum()) > 100
    out = capsys.readouterr().out  # each kind said once for the file set, not per file
    assert out.count("resampled 1 files to 22050 Hz with soxr VHQ (1 at 44100 Hz)") == 1
    assert out.count("downmixed 1") == 1 and out.count("clipped samples") == 1 and out.count("skipped 2 (silent)") == 1


def test_resampling_keeps_the_pitch_and_the_duration():
    x = voice(0.5, 16000, hz=440.0)
    y = audio.resample(x, 16000)
    assert len(y) == 0.5 * SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.fft.rfftfreq(len(y), 1 / SAMPLE_RATE)[spectrum.argmax()] - 440.0) <= 2.0
    assert audio.resample(x, SAMPLE_RATE) is x


def test_on_bad_fail_names_the_first_bad_input(tmp_path):
    root = lj(tmp_path / "lj", ["a|one|one", "b|two|two"], {"a": (voice(), SAMPLE_RATE)})
    with pytest.raises(corpus.CorpusError, match=r"metadata.csv:2: no wavs/b.wav"):
        corpus.read_corpus(root, on_bad="fail", verbose=False)
    root = lj(tmp_path / "lj2", ["a|one|one"], {"a": (np.zeros(3000, np.float32), SAMPLE_RATE)})
    with pytest.raises(corpus.CorpusError, match=r"wavs/a.wav: silent"):
        corpus.read_corpus(root, on_bad="fail", verbose=False)
    with pytest.raises(corpus.CorpusError, match="metadata.csv not found"):
        corpus.read_corpus(tmp_path, verbose=False)


def test_folder_of_pairs(tmp_path):
    root = tmp_path / "pairs"
    (root / "spk1").mkdir(parents=True)
    sf.write(str(root / "spk1" / "x.wav"), voice(), SAMPLE_RATE)
    (root / "spk1" / "x.txt").write_text("Seven eight.\n")
    sf.write(str(root / "y.wav"), voice(), SAMPLE_RATE)  # no transcript
    (root / "z.txt").write_text("nine")  # no wav
    sf.write(str(root / "w.wav"), voice(), SAMPLE_RATE)
    (root / "w.txt").write_text("$5")
    utts, m = corpus.read_corpus(root, layout="folder", verbose=False)
    assert [(u.id, u.text) for u in utts] == [("spk1/x", "Seven eight.")]
    assert [s.split(":")[0] for s in m["skipped"]["no_transcript"]] == ["y.wav"]
    assert [s.split(":")[0] for s in m["skipped"]["no_wav"]] == ["z.txt"]
    assert m["skipped"]["g2p"][0].startswith("w.txt: characters the G2P cannot read: '$5'")


def test_wav_writer_is_16_bit_and_saturates(tmp_path):
    x = np.array([0.0, 0.5, -0.5, 1.2, -1.7], np.float32)
    path = audio.write_wav(tmp_path / "a" / "x.wav", x)
    info = sf.info(str(path))
    assert info.subtype == "PCM_16" and info.samplerate == SAMPLE_RATE and info.channels == 1
    back, _ = sf.read(str(path), dtype="int16")
    assert list(back) == [0, 16384, -16384, 32767, -32768]
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.wav"]  # no temporary file left
