"""Speech features (djepa/speech): HiFi-GAN's log-mel against librosa's own computation, the normalisation
statistics, Praat F0 at the mel frames and its 300-entry table, and the offline G2P with its 73-symbol vocabulary."""
import numpy as np
import pytest
import torch

from djepa.speech import g2p, mel, pitch

SR = mel.SAMPLE_RATE


def tone(hz: float, seconds: float, silence: tuple[int, int] = (0, 0), seed: int = 0) -> np.ndarray:
    """A 0.5-amplitude tone with its octave, a little noise, between `silence` samples of zeros."""
    t = np.arange(int(seconds * SR)) / SR
    x = 0.5 * np.sin(2 * np.pi * hz * t) + 0.1 * np.sin(2 * np.pi * 2 * hz * t)
    x = x + 0.01 * np.random.default_rng(seed).standard_normal(len(x))
    return np.concatenate([np.zeros(silence[0]), x, np.zeros(silence[1])]).astype(np.float32)


def test_log_mel_matches_librosa_with_hifigans_framing():
    import librosa

    x = tone(300.0, 0.7)
    ours = mel.log_mel(x).numpy()
    padded = np.pad(x, (mel.PAD, mel.PAD), mode="reflect")  # HiFi-GAN pads (n_fft - hop) / 2, frames uncentred
    ref = librosa.feature.melspectrogram(y=padded, sr=SR, n_fft=1024, hop_length=256, win_length=1024,
                                         window="hann", center=False, power=1.0, n_mels=80, fmin=0.0, fmax=8000.0)
    ref = np.log(np.maximum(ref, 1e-5))
    assert ours.shape == ref.shape == (80, len(x) // 256)
    assert np.abs(ours - ref).max() < 2e-3  # float32 STFT vs librosa's, and the 1e-9 under HiFi-GAN's sqrt
    assert ours.min() >= np.log(1e-5) - 1e-6
    # a 300 Hz tone peaks in the mel bin whose centre is nearest 300 Hz
    centres = librosa.mel_frequencies(n_mels=82, fmin=0.0, fmax=8000.0)[1:-1]
    assert abs(centres[ours.mean(1).argmax()] - 300.0) < 40.0


def test_log_mel_batches_frames_and_refuses_clips_too_short():
    x = np.stack([tone(200.0, 0.3), tone(400.0, 0.3, seed=1)])
    batch = mel.log_mel(x)
    assert batch.shape == (2, 80, x.shape[1] // 256)
    assert torch.allclose(batch[1], mel.log_mel(x[1]), atol=1e-5)
    assert mel.num_frames(22050) == 86 and mel.log_mel(np.zeros(22050, np.float32) + 0.1).shape[1] == 86
    silent = mel.log_mel(np.zeros(1000, np.float32))
    assert torch.allclose(silent, torch.full_like(silent, np.log(1e-5)), atol=1e-4)  # digital silence at the floor
    with pytest.raises(ValueError, match="too short"):
        mel.log_mel(np.zeros(300, np.float32))


def test_stats_are_per_bin_over_all_frames_and_normalise_inverts():
    rng = np.random.default_rng(0)
    mels = [rng.normal(i, 1 + i, (80, n)) for i, n in enumerate([5, 17, 30])]
    stats = mel.mel_stats(mels)
    frames = np.concatenate(mels, 1)
    assert np.allclose(stats["mean"], frames.mean(1)) and np.allclose(stats["std"], frames.std(1))
    backwards = mel.mel_stats(mels[::-1])  # float64 sums: the order of clips does not matter
    assert np.allclose(stats["mean"], backwards["mean"], rtol=1e-12) and np.allclose(stats["std"], backwards["std"])
    z = mel.normalise(mels[2], stats)
    assert torch.allclose(mel.denormalise(z, stats), torch.as_tensor(mels[2], dtype=torch.float32), atol=1e-4)
    zz = mel.normalise(frames, stats)
    assert zz.mean(1).abs().max() < 1e-4 and (zz.std(1, unbiased=False) - 1).abs().max() < 1e-4
    with pytest.raises(ValueError, match="at least 2 frames"):
        mel.mel_stats([np.zeros((80, 1))])


def test_f0_at_mel_frames_voiced_where_the_tone_is():
    x = tone(220.0, 0.5, silence=(2560, 3840))  # 10 hops of silence, 0.5 s of tone, 15 hops of silence
    f0 = pitch.f0(x)
    assert f0.shape == (mel.num_frames(len(x)),) and f0.dtype == np.float32
    tone_frames = slice(12, 12 + 38)  # frames whose 1024-sample window lies inside the tone
    assert np.all(np.abs(f0[tone_frames] - 220.0) < 2.0), f0[tone_frames]
    assert np.all(f0[:8] == 0) and np.all(f0[-12:] == 0)  # silence is unvoiced
    voiced = np.flatnonzero(f0)
    assert 8 <= voiced[0] <= 12 and 48 <= voiced[-1] <= 54  # the tone spans frames 10-53 (centres 256 k + 128)


def test_pitch_table_has_300_entries_log_spaced():
    entries = pitch.quantise([0.0, 59.0, 60.0, 800.0, 5000.0, 220.0, 440.0])
    assert list(entries[:5]) == [0, 1, 1, 299, 299]
    assert entries[6] - entries[5] == pytest.approx(299 * np.log(2) / np.log(800 / 60), abs=1)  # an octave: ~80 bins
    hz = np.geomspace(60.0, 799.0, 2000)
    q = pitch.quantise(hz)
    assert q.min() == 1 and q.max() == 299 and len(np.unique(q)) == 299
    assert np.all(np.abs(np.log(pitch.dequantise(q) / hz)) <= np.log(800 / 60) / 299 / 2 + 1e-9)  # half a bin
    assert pitch.dequantise([0])[0] == 0.0


def test_g2p_vocabulary_is_73_and_covers_cmudict():
    assert len(g2p.VOCABULARY) == 73 and len(set(g2p.VOCABULARY)) == 73
    assert g2p.VOCABULARY[:4] == ("<pad>", "<unk>", "<s>", "</s>")
    used = {p for prons in g2p.dictionary().values() for pron in prons for p in pron}
    assert used == set(g2p.PHONEMES)  # every symbol CMUdict uses has an id, and none is unused


def test_g2p_reads_words_and_refuses_what_it_cannot():
    assert g2p.phonemes("Three, seven!") == ["TH", "R", "IY1", "S", "EH1", "V", "AH0", "N"]
    ids = g2p.encode("three seven")
    assert ids[0] == g2p.BOS_ID and ids[-1] == g2p.EOS_ID and g2p.decode(ids)[1:4] == ["TH", "R", "IY1"]
    assert g2p.phonemes("don't -- stop") == ["D", "OW1", "N", "T", "S", "T", "AA1", "P"]
    with pytest.raises(g2p.G2PError, match="'3'"):
        g2p.phonemes("3 seven")
    with pytest.raises(g2p.G2PError, match="'é'"):
        g2p.phonemes("café")
    with pytest.raises(g2p.G2PError, match="'zqxv' is not in CMUdict"):
        g2p.phonemes("seven zqxv")
    with pytest.raises(g2p.G2PError, match="no words"):
        g2p.phonemes(" ... ")
