"""djepa/video/writer.py: every file read back (GIF with Pillow, MP4 with PyAV, the strip PNG) against the grid
built here independently of the writer."""
import av
import numpy as np
import pytest
from PIL import Image

from djepa.video import writer
from djepa.video.writer import LINE, save_video_grid, video_grid_scale


def grid(images, ncol, scale, line=LINE):
    """The expected picture: (N, H, W, C) -> `ncol` per row between 1-px `line` rules, pixels repeated `scale`x."""
    n, h, w, c = images.shape
    rows = -(-n // ncol)
    out = np.full((rows * (h + 1) + 1, ncol * (w + 1) + 1, c), line, np.uint8)
    for i in range(n):
        r, k = divmod(i, ncol)
        out[1 + r * (h + 1):(r + 1) * (h + 1), 1 + k * (w + 1):(k + 1) * (w + 1)] = images[i]
    return np.kron(out, np.ones((scale, scale, 1), np.uint8))


def gif_frames(path, mode):
    im = Image.open(path)
    frames = []
    for t in range(im.n_frames):
        im.seek(t)
        frames.append(np.asarray(im.convert(mode)))
    return im, frames


def mp4_frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def moving_discs(n, t, h, w):
    """Grey clips (n, t, h, w, 1) of a soft bright disc moving on black: Moving-MNIST-like content for a codec."""
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((n, t, h, w, 1), np.uint8)
    for i in range(n):
        for s in range(t):
            out[i, s, ..., 0] = 255 * np.exp(-((yy - 3 - i - s) ** 2 + (xx - 4 - 2 * s) ** 2) / 8)
    return out


def test_grey_gif_is_exact_frame_by_frame(tmp_path):
    clips = np.random.default_rng(0).integers(0, 256, (5, 6, 10, 12, 1), dtype=np.uint8)  # all 256 grey levels
    paths = save_video_grid(tmp_path / "s", clips, ncol=3, scale=2)
    assert paths == {"gif": tmp_path / "s.gif", "mp4": tmp_path / "s.mp4", "strip": tmp_path / "s-strip.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s-strip.png", "s.gif", "s.mp4"]  # no temp file left
    im, frames = gif_frames(paths["gif"], "L")
    assert im.n_frames == 6 and im.info["loop"] == 0 and im.info["duration"] == 120  # 8 fps in 1/100 s units
    for t, f in enumerate(frames):  # a grey palette holds every level: exact, not approximately equal
        assert np.array_equal(f, grid(clips[:, t], 3, 2)[..., 0]), t


def test_colour_gif_is_exact_when_the_palette_holds_the_colours(tmp_path):
    """A GIF frame has at most 256 colours: clips drawn from 8 colours (+ the grey rules) come back exactly;
    more colours would be quantised, so this is the case an exact check can hold for."""
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, (8, 3), dtype=np.uint8)
    clips = colours[rng.integers(0, 8, (4, 5, 9, 7))]  # (4, 5, 9, 7, 3)
    path = save_video_grid(tmp_path / "c", clips, ncol=2, scale=1, fps=10)["gif"]
    im, frames = gif_frames(path, "RGB")
    assert len(frames) == 5 and im.info["duration"] == 100
    for t, f in enumerate(frames):
        assert np.array_equal(f, grid(clips[:, t], 2, 1)), t


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_mp4_decodes_to_the_grid_padded_to_even_size(tmp_path, monkeypatch, codec):
    monkeypatch.setattr(writer, "MP4_CODECS", ("no-such-encoder", codec))  # the first one that exists is used
    assert writer.mp4_codec() == codec
    clips = moving_discs(5, 6, 16, 20)
    expected = np.stack([grid(clips[:, t], 3, 1) for t in range(6)])  # (6, 35, 64, 1): an odd height
    path = save_video_grid(tmp_path / "m", clips, ncol=3, scale=1)["mp4"]
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == ("h264" if codec == "libx264" else "mpeg4")
        assert stream.average_rate == 8 and stream.codec_context.pix_fmt == "yuv420p"
    frames = mp4_frames(path)
    assert len(frames) == 6 and frames[0].shape == (36, 64, 3)  # 35 rows padded to 36
    err = np.abs(np.stack(frames)[:, :35].astype(int) - expected.astype(int))  # grey -> every RGB channel
    # lossy (4:2:0, quantised DCT): measured mean 0.7-0.8 and 99th percentile 5 levels for both codecs
    assert err.mean() < 3 and np.percentile(err, 99) < 20, (err.mean(), np.percentile(err, 99))
    assert np.stack(frames)[:, 35].mean() < 20  # the padding row is black (give or take the codec's ringing)


def test_mp4_without_an_encoder_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "MP4_CODECS", ("no-such-encoder",))
    with pytest.raises(RuntimeError, match="reinstall av"):
        save_video_grid(tmp_path / "x", moving_discs(1, 2, 8, 8), ncol=1)
    assert not (tmp_path / "x.mp4").exists()


def test_strip_is_the_first_ncol_clips_one_row_each(tmp_path):
    clips = np.random.default_rng(2).integers(0, 256, (5, 4, 6, 7, 1), dtype=np.uint8)
    strip = np.asarray(Image.open(save_video_grid(tmp_path / "s", clips, ncol=3, scale=3)["strip"]))
    expected = grid(clips[:3].reshape(12, 6, 7, 1), 4, 3)[..., 0]  # rows: clips 0, 1, 2; columns: their 4 frames
    assert strip.shape == (3 * 3 * 7 + 3, 3 * 4 * 8 + 3) and np.array_equal(strip, expected)
    few = np.asarray(Image.open(save_video_grid(tmp_path / "f", clips[:2], ncol=10)["strip"]))
    assert np.array_equal(few, grid(clips[:2].reshape(8, 6, 7, 1), 4, 1)[..., 0])  # N < ncol: N rows


def test_bad_clips_are_refused_before_any_file(tmp_path):
    for bad in (np.zeros((2, 4, 8, 8), np.uint8), np.zeros((2, 4, 8, 8, 1), np.float32),
                np.zeros((0, 4, 8, 8, 1), np.uint8), np.zeros((2, 4, 8, 8, 2), np.uint8)):
        with pytest.raises(ValueError, match=r"clips must be uint8 \(N, T, H, W, C\)"):
            save_video_grid(tmp_path / "b", bad, ncol=2)
    assert list(tmp_path.iterdir()) == []


def test_video_grid_scale():
    assert [video_grid_scale(s) for s in (8, 32, 64, 128)] == [12, 3, 1, 1]
