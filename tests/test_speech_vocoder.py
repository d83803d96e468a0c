"""Vocoders and sample files (djepa/speech): HiFi-GAN V1's generator in the authors' exact parameter layout (random
weights saved as their checkpoint format and loaded back with weights_only=True), Griffin-Lim's inversion of the
mel framing, and the WAV + PNG + samples.jsonl writer."""
import json

import numpy as np
import pytest
import torch

from djepa.speech import hifigan, mel
from djepa.speech.griffin_lim import griffin_lim, mel_to_magnitude

# A few entries of the published generator_v1 state dict (the authors' Generator, config_v1.json), by shape
PUBLISHED_SHAPES = {
    "conv_pre.weight_v": (512, 80, 7), "conv_pre.weight_g": (512, 1, 1), "conv_pre.bias": (512,),
    "ups.0.weight_v": (512, 256, 16), "ups.0.weight_g": (512, 1, 1), "ups.3.weight_v": (64, 32, 4),
    "resblocks.0.convs1.0.weight_v": (256, 256, 3), "resblocks.2.convs2.2.weight_v": (256, 256, 11),
    "resblocks.11.convs1.2.weight_v": (32, 32, 11), "conv_post.weight_v": (1, 32, 7), "conv_post.bias": (1,),
}


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return hifigan.Generator().eval()


def test_generator_has_the_published_v1_layout(generator):
    sd = generator.state_dict()
    # conv_pre, 4 ups, 12 resblocks x 6 convs, conv_post: 78 weight-normed convolutions of 3 tensors each
    assert len(sd) == 78 * 3 and all(k.rsplit(".", 1)[1] in ("weight_g", "weight_v", "bias") for k in sd)
    assert {k: tuple(sd[k].shape) for k in PUBLISHED_SHAPES} == PUBLISHED_SHAPES
    assert sum(p.numel() for p in generator.parameters()) == 13_936_130  # "13.92M" in the HiFi-GAN paper


def test_weight_norm_is_torchs(generator):
    """weight_g / weight_v mean what torch.nn.utils.weight_norm (the authors' call) makes them mean."""
    import warnings

    ours = generator.ups[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # weight_norm is deprecated; here it is the reference
        ref = torch.nn.utils.weight_norm(torch.nn.ConvTranspose1d(256, 128, 16, 8, padding=4))
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(1, 256, 5)
    assert torch.allclose(ours(x), ref(x), atol=1e-6)


def test_checkpoint_round_trip_and_forward(generator, tmp_path):
    path = tmp_path / "generator_v1"
    torch.save({"generator": generator.state_dict()}, path)  # the authors' file format
    loaded = hifigan.load_generator(path)
    log_mel = torch.randn(80, 6) - 5.0
    wave = hifigan.vocode(loaded, log_mel)
    assert wave.shape == (6 * 256,) and wave.abs().max() <= 1.0
    with torch.no_grad():
        assert torch.equal(wave, generator(log_mel[None])[0, 0])


def test_load_generator_refuses_other_files(generator, tmp_path):
    with pytest.raises(FileNotFoundError, match="generator_v1"):
        hifigan.load_generator(tmp_path / "missing")
    torch.save({"state_dict": generator.state_dict()}, tmp_path / "a")
    with pytest.raises(ValueError, match="no 'generator' entry"):
        hifigan.load_generator(tmp_path / "a")
    sd = {k: v for k, v in generator.state_dict().items() if not k.startswith("conv_post")}
    torch.save({"generator": sd}, tmp_path / "b")
    with pytest.raises(ValueError, match="missing .*conv_post"):
        hifigan.load_generator(tmp_path / "b")
    torch.save({"generator": generator.state_dict(), "code": hifigan.Generator}, tmp_path / "c")  # pickled code
    with pytest.raises(ValueError, match="weights_only=True"):
        hifigan.load_generator(tmp_path / "c")


def chirp(seconds: float = 0.6) -> np.ndarray:
    t = np.arange(int(seconds * mel.SAMPLE_RATE)) / mel.SAMPLE_RATE
    f = 150 + 250 * t / seconds
    x = 0.4 * np.sin(2 * np.pi * np.cumsum(f) / mel.SAMPLE_RATE) * np.minimum(1, 20 * t) * np.minimum(1, 20 * t[::-1])
    return x.astype(np.float32)


def test_griffin_lim_inverts_the_mel_framing():
    from djepa.speech.spoken_digits import spoken_digits

    x = spoken_digits().waves[1]  # "nine five", 0.66 s
    m = mel.log_mel(x)
    y = griffin_lim(m, seed=0)
    assert y.shape == (m.shape[1] * 256,) and y.dtype == np.float32
    assert np.array_equal(y, griffin_lim(m, seed=3)) is False and np.array_equal(y, griffin_lim(m, seed=0))

    def convergence(shift):  # spectral convergence of the mel magnitude: ||M - M'|| / ||M||
        back = mel.log_mel(np.roll(y, shift))
        return ((back.exp() - m.exp()).norm() / m.exp().norm()).item()

    err = {s: convergence(s) for s in (-64, 0, 64)}
    assert err[0] < 0.12, err  # measured 0.090
    assert err[0] < 0.8 * min(err[-64], err[64]), err  # aligned: a quarter hop either way is worse


def test_pseudo_inverse_magnitude_matches_librosas_nnls():
    import librosa

    m = mel.log_mel(chirp()).numpy().astype(np.float64)
    ref = librosa.feature.inverse.mel_to_stft(np.exp(m), sr=22050, n_fft=1024, power=1.0, fmin=0.0, fmax=8000.0)
    ours = mel_to_magnitude(m).double().numpy()
    assert ours.min() >= 0 and np.abs(ours - ref).max() < 1e-4 * np.abs(ref).max()


def test_samples_are_wavs_pngs_and_jsonl_lines(tmp_path):
    import soundfile as sf
    from PIL import Image

    from djepa.speech.writer import read_samples, write_samples

    waves = [chirp(0.3), chirp(0.5)]
    path = write_samples(tmp_path / "out", waves, ["three seven", "nine"])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"index": 0, "text": "three seven", "wav": "sample-0000.wav", "png": "sample-0000.png",
                      "seconds": 0.3},
                     {"index": 1, "text": "nine", "wav": "sample-0001.wav", "png": "sample-0001.png", "seconds": 0.5}]
    for row, wave in zip(read_samples(tmp_path / "out"), waves):
        back, rate = sf.read(row["wav_path"], dtype="float32")
        assert rate == 22050 and sf.info(row["wav_path"]).subtype == "PCM_16"
        assert np.abs(back - wave).max() < 1e-4
        image = Image.open(tmp_path / "out" / row["png"])
        assert image.format == "PNG" and image.size[0] >= 300
    with pytest.raises(ValueError, match="one of each"):
        write_samples(tmp_path / "bad", waves, ["one"])
