"""Video class folders (djepa/video/reader.py) and their encode: UCF101's layout and split lists, resampling by
timestamp, the crop, zero padding, every kind of bad file (named before Ray, or counted and skipped), one encode
through Ray Data, and Moving MNIST checked against the tokenizer's input shape."""
import json
import os
import re
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from djepa.data.encode import BadImageError, _decode_batch, _decoder, encode, encode_settings
from djepa.data.encoded import batch_tokens, open_encoded, read_shard
from djepa.data.format import DatasetError
from djepa.video.reader import decode_clip, probe, scan_videos

H, W = 16, 24


def write_video(path, n=12, fps=24, size=(H, W), noise=False, times_ms=None, colour=None):
    """A tiny video (mpeg4; VP8 in WebM): frame i is grey level 10 + 20 i (so a decoded frame names its index), or
    noise (a file large enough to cut in half), or one colour; times_ms: explicit timestamps (a variable rate)."""
    rng, (h, w) = np.random.default_rng(0), size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libvpx" if path.suffix == ".webm" else "mpeg4", rate=1000 if times_ms else fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(len(times_ms) if times_ms else n):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if noise else \
                np.broadcast_to(np.asarray(colour if colour is not None else [10 + 20 * i] * 3, np.uint8), (h, w, 3))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if times_ms:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def indices(clip):
    """Which source frame each clip frame is (its grey level), -1 for a black padding frame."""
    level = (clip[0, :, H // 2, W // 2] + 1) * 127.5
    return [int(round((v - 10) / 20)) if v > 5 else -1 for v in level]


def bad_files(d):
    """One file of each bad kind, with the start of the reason the probe and the decoder give."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "random.mp4").write_bytes(np.random.default_rng(1).bytes(3000))
    with av.open(str(d / "audio.mp4"), "w") as c:  # a container without a video stream
        s = c.add_stream("aac", rate=8000)
        for i in range(4):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 8000, i * 1024
            for p in s.encode(f):
                c.mux(p)
    with av.open(str(d / "empty.avi"), "w") as c:  # a video stream with no frame at all
        s = c.add_stream("mpeg4", rate=24)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        c.start_encoding()  # the header, then no packet
    data = write_video(d / "cut.mkv", n=24, noise=True).read_bytes()
    (d / "cut.mkv").write_bytes(data[: len(data) // 2])
    # Matroska names its codec by string: an unknown one (same length, so no size field changes) has no decoder
    data = write_video(d / "codec.mkv").read_bytes()
    assert data.count(b"V_MPEG4/ISO/ASP") == 1
    (d / "codec.mkv").write_bytes(data.replace(b"V_MPEG4/ISO/ASP", b"V_DJEPA/NO/SUCH"))
    return {"random.mp4": "InvalidDataError: ", "audio.mp4": "no video stream (only audio)",
            "empty.avi": "0 frames", "cut.mkv": "truncated: the video stops at 0.25 s of the 1.00 s",
            "codec.mkv": "codec cannot be decoded: "}


# ----------------------------------------------------------------------------- scan
def _tree(root):
    """UCF101's layout with two of its real class names whose order depends on case (classInd: 47, 48)."""
    for rel in ("JumpingJack/v_JumpingJack_g01_c01.avi", "JumpingJack/v_JumpingJack_g01_c02.MP4",
                "JumpRope/v_JumpRope_g01_c01.mkv", "JumpRope/v_JumpRope_g02_c01.avi"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")  # the scan never opens a file
    (root / "JumpRope/notes.txt").write_text("x")
    (root / "JumpRope/.hidden.avi").write_bytes(b"")
    (root / "stray.avi").write_bytes(b"")
    return root


def test_scan_classes_split_lists_and_what_is_ignored(tmp_path):
    root = _tree(tmp_path / "ucf")
    scan = scan_videos(root)
    assert scan.classes == ["JumpingJack", "JumpRope"] != sorted(scan.classes)  # classInd's order, not sorted()'s
    assert [os.path.relpath(f, root) for f in scan.files] == [
        "JumpingJack/v_JumpingJack_g01_c01.avi", "JumpingJack/v_JumpingJack_g01_c02.MP4",
        "JumpRope/v_JumpRope_g01_c01.mkv", "JumpRope/v_JumpRope_g02_c01.avi"]
    assert [scan.label(f, str(root)) for f in scan.files] == [0, 0, 1, 1]
    assert sorted(line.split("\t")[0] for line in scan.ignored) == [str(root / "JumpRope/notes.txt"),
                                                                    str(root / "stray.avi")]
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_bytes(b"JumpRope/v_JumpRope_g02_c01.avi 2\r\n"
                                            b"JumpingJack/v_JumpingJack_g01_c01.avi 1\r\n")
    (lists / "testlist01.txt").write_text("JumpRope/v_JumpRope_g01_c01.mkv\n\n")
    train = scan_videos(root, lists / "trainlist01.txt")
    assert [os.path.relpath(f, root) for f in train.files] == ["JumpRope/v_JumpRope_g02_c01.avi",
                                                               "JumpingJack/v_JumpingJack_g01_c01.avi"]
    assert {os.path.relpath(line.split("\t")[0], root) for line in train.ignored if "not listed" in line} == {
        "JumpingJack/v_JumpingJack_g01_c02.MP4", "JumpRope/v_JumpRope_g01_c01.mkv"}
    with pytest.raises(DatasetError, match=r"class folder\(s\) without listed videos: JumpingJack"):
        scan_videos(root, lists / "testlist01.txt")  # a class the model would never see
    (lists / "classInd.txt").write_text("1 JumpRope\n2 JumpingJack\n")  # beside the split: it sets the labels
    with pytest.raises(DatasetError, match=r"trainlist01.txt' line 1: JumpRope/v_JumpRope_g02_c01.avi has label 2, "
                                           r"but JumpRope is class 1"):
        scan_videos(root, lists / "trainlist01.txt")
    (lists / "classInd.txt").write_text("1 JumpingJack\n2 JumpRope\n3 YoYo\n")
    with pytest.raises(DatasetError, match=r"classInd.txt does not match .* not a folder: \['YoYo'\]"):
        scan_videos(root, lists / "trainlist01.txt")
    (lists / "classInd.txt").unlink()
    (lists / "trainlist01.txt").write_text("JumpRope/v_JumpRope_g02_c01.avi 2\nJumpRope/v_JumpRope_g09_c01.avi 2\n")
    with pytest.raises(DatasetError, match=rf"trainlist01.txt' line 2 lists JumpRope/v_JumpRope_g09_c01.avi, but "
                                           rf"{root}/JumpRope/v_JumpRope_g09_c01.avi is missing"):
        scan_videos(root, lists / "trainlist01.txt")
    for f in (root / "JumpRope").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=r"class folder\(s\) without videos: JumpRope"):
        scan_videos(root)
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match=rf"data.root='{empty}' holds no videos"):
        scan_videos(empty)


# ----------------------------------------------------------------------------- decode
@pytest.mark.parametrize("ext", ["mp4", "avi", "mkv", "mov", "webm"])
def test_decode_resamples_by_timestamp_in_every_container(tmp_path, ext):
    path = write_video(tmp_path / f"v.{ext}")  # 12 frames at 24 fps: 0.5 s
    assert probe(path) is None
    clip, valid = decode_clip(path, 4, 8, H, W, 1)  # k / 8 s: source frames 3k
    assert clip.shape == (1, 4, H, W) and clip.dtype == np.float32 and valid == 4
    assert indices(clip) == [0, 3, 6, 9]
    same, _ = decode_clip(path.read_bytes(), 4, 8, H, W, 1)  # bytes, as Ray's read task hands them over
    np.testing.assert_array_equal(same, clip)
    # the same rate: every frame once, even where Matroska rounds 1/24 s to 42 ms
    assert indices(decode_clip(path, 12, 24, H, W, 1)[0]) == list(range(12))
    assert indices(decode_clip(path, 6, 10, H, W, 1)[0]) == [0, 2, 4, 7, 9, -1]  # floor(2.4 k); 0.5 s is the end
    assert indices(decode_clip(path, 4, 48, H, W, 1)[0]) == [0, 0, 1, 1]  # a higher rate holds each frame


def test_variable_frame_rate_is_sampled_by_time(tmp_path):
    path = write_video(tmp_path / "vfr.mkv", times_ms=[0, 100, 150, 400, 450])
    clip, valid = decode_clip(path, 8, 10, H, W, 1)  # clip times 0, 0.1, ..., 0.5 s
    assert indices(clip) == [0, 1, 2, 2, 3, 4, -1, -1] and valid == 6


def test_short_video_is_zero_padded_with_black_frames(tmp_path):
    clip, valid = decode_clip(write_video(tmp_path / "short.avi", n=6), 8, 8, H, W, 3)  # 0.25 s at 8 fps: 2 frames
    assert valid == 2 and indices(clip) == [0, 3, -1, -1, -1, -1, -1, -1]
    assert (clip[:, valid:] == -1.0).all() and (clip[:, :valid] > -0.95).all()  # padding is pixel 0, exactly


def test_crop_keeps_the_centre_and_channels_are_grey_or_rgb(tmp_path):
    # 16 x 48: a red centre between white side bands; the target 8 x 8 halves it once (box), scales by the short
    # side's ratio and keeps the centre, so no white remains
    img = np.full((16, 48, 3), 255, np.uint8)
    img[:, 12:36] = (220, 20, 20)
    path = write_video(tmp_path / "wide.mp4", n=2, size=(16, 48), colour=img)
    rgb, _ = decode_clip(path, 2, 24, 8, 8, 3)
    assert rgb.shape == (3, 2, 8, 8)
    red = (rgb[:, 0] + 1) * 127.5
    assert red[0].min() > 180 and red[1].max() < 70 and red[2].max() < 70
    grey, _ = decode_clip(path, 2, 24, 8, 8, 1)  # ITU-R 601 luma of (220, 20, 20): 79
    assert grey.shape == (1, 2, 8, 8) and abs((grey[0, 0] + 1).mean() * 127.5 - 79) < 12
    full, _ = decode_clip(path, 1, 24, 16, 48, 1)  # the full frame keeps its white bands
    assert (full[0, 0, :, :8] > 0.9).all()


def test_every_bad_kind_has_its_reason(tmp_path):
    for name, why in bad_files(tmp_path).items():
        assert probe(tmp_path / name).startswith(why), (name, probe(tmp_path / name))
        with pytest.raises(Exception, match="^" + re.escape(why)):
            decode_clip((tmp_path / name).read_bytes(), 8, 8, H, W, 1)
    data = write_video(tmp_path / "half.mp4", n=24, noise=True).read_bytes()  # an MP4 keeps its index at the end
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    assert probe(tmp_path / "half.mp4") is not None


# ----------------------------------------------------------------------------- encode
def video_config(tiny, root, out, *extra):
    return tiny("data.source=video_folder", f"data.root={root}", f"data.encoded_dir={out}", "tokenizer.frames=8",
                "tokenizer.image_size=[16,24]", "tokenizer.patch_size=4", "tokenizer.temporal_patch=2",
                "data.fps=16", "model.num_classes=2", *extra)


def test_encode_settings_add_clip_keys_only_for_video(tiny, tmp_path):
    image = encode_settings(tiny())
    assert "frames" not in image["tokenizer"] and "fps" not in image and "split_file" not in image
    cfg = video_config(tiny, tmp_path, tmp_path / "enc")
    video = encode_settings(cfg)
    assert video["tokenizer"]["frames"] == 8 and video["fps"] == 16 and video["split_file"] is None
    assert tuple(video["tokenizer"]["image_size"]) == (16, 24) and video["root"] == str(tmp_path)
    for change in ("data.fps=8", "tokenizer.frames=4", f"data.split_file={tmp_path / 'trainlist01.txt'}"):
        assert encode_settings(video_config(tiny, tmp_path, tmp_path / "enc", change)) != video, change


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if encode starts Ray or builds its pipeline."""
    import ray

    import djepa.data.encode as enc

    def refuse(*a, **k):
        raise AssertionError("Ray was started, or the pipeline built, before the bad video was named")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(enc, "_source_dataset", refuse)


@pytest.mark.parametrize("name", ["random.mp4", "audio.mp4", "empty.avi", "cut.mkv", "codec.mkv"])
def test_a_bad_video_is_named_before_ray_with_fail(tiny, tmp_path, no_ray, name):
    root = tmp_path / "ucf"
    write_video(root / "a" / "good.avi")
    why = bad_files(root / "b")[name]
    write_video(root / "b" / "good.mkv")
    for other in set(os.listdir(root / "b")) - {name, "good.mkv"}:
        (root / "b" / other).unlink()
    out = tmp_path / "enc"
    with pytest.raises(BadImageError, match=rf"^unreadable video {root / 'b' / name} \({re.escape(why)}.*"
                                            rf"data.on_bad_image=skip"):
        encode(video_config(tiny, root, out))
    assert not out.exists() and not list(tmp_path.glob(".enc.tmp*"))


def test_only_bad_videos_is_an_error_even_with_skip(tiny, tmp_path, no_ray):
    root = tmp_path / "ucf"
    why = bad_files(root / "a")["random.mp4"]
    for other in set(os.listdir(root / "a")) - {"random.mp4"}:
        (root / "a" / other).unlink()
    with pytest.raises(DatasetError, match=rf"none of the 1 videos under data.root='{root}' can be read \(the first: "
                                           rf"{root / 'a' / 'random.mp4'}: {why}"):
        encode(video_config(tiny, root, tmp_path / "enc", "data.on_bad_image=skip"))


def test_a_decode_task_records_and_skips_a_bad_clip_or_stops(tiny, tmp_path):
    """The tasks' side (a file that changed after the probe, or one the probe let through): recorded, then
    skipped, or the task fails naming it."""
    root = tmp_path / "ucf"
    good = write_video(root / "a" / "good.avi")
    why = bad_files(root / "a")["cut.mkv"]
    decode, empty = _decoder(video_config(tiny, root, tmp_path / "enc"))
    batch = {"bytes": [good.read_bytes(), (root / "a" / "cut.mkv").read_bytes()],
             "path": [str(good), str(root / "a" / "cut.mkv")]}
    kw = dict(decode=decode, empty=empty, classes=["a"], root=str(root), what="video")
    (tmp_path / "bad").mkdir()
    out = _decode_batch(batch, on_bad="skip", bad_dir=str(tmp_path / "bad"), **kw)
    assert out["image"].shape == (1, 1, 8, 16, 24) and list(out["valid_frames"]) == [8]
    assert list(out["key"]) == ["a/good.avi"] and list(out["label"]) == [0]
    records = [p.read_text() for p in (tmp_path / "bad").iterdir()]
    assert len(records) == 1 and records[0].startswith(f"{root / 'a' / 'cut.mkv'}\t{why}")
    with pytest.raises(BadImageError, match=rf"^unreadable video {root / 'a' / 'cut.mkv'} \(truncated: "):
        _decode_batch(batch, on_bad="fail", bad_dir=str(tmp_path / "bad"), **kw)
    none = _decode_batch({"bytes": batch["bytes"][1:], "path": batch["path"][1:]}, on_bad="skip",
                         bad_dir=str(tmp_path / "bad"), **kw)
    assert none["image"].shape == (0, 1, 8, 16, 24) and none["valid_frames"].shape == (0,)


def test_encode_a_video_folder_through_ray(ray_session, tiny, tmp_path):
    root = tmp_path / "ucf"
    write_video(root / "Archery" / "v_Archery_g01_c01.avi")
    write_video(root / "Archery" / "v_Archery_g01_c02.mp4", n=6)  # 0.25 s: 4 real frames at 16 fps
    write_video(root / "YoYo" / "v_YoYo_g01_c01.mkv")
    write_video(root / "YoYo" / "v_YoYo_g02_c01.avi")  # not in the split: ignored, and listed as such
    reasons = bad_files(root / "YoYo")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Archery\n2 YoYo\n")
    listed = ["YoYo/v_YoYo_g01_c01.mkv 2", "Archery/v_Archery_g01_c01.avi 1", "Archery/v_Archery_g01_c02.mp4 1"]
    (lists / "trainlist01.txt").write_text("\n".join(listed + [f"YoYo/{name} 2" for name in reasons]) + "\n")
    out = tmp_path / "enc"
    cfg = video_config(tiny, root, out, f"data.split_file={lists / 'trainlist01.txt'}", "data.on_bad_image=skip",
                       "data.encode_batch_size=2")
    manifest = encode(cfg)
    assert manifest["rows"] == 3 and manifest["skipped"] == len(reasons) == 5 and manifest["ignored"] == 1
    assert manifest["classes"] == ["Archery", "YoYo"] and manifest["frames"] == 8 and manifest["fps"] == 16
    assert manifest["moments_shape"] == manifest["latent_shape"] == [1, 8, 16, 24]
    assert manifest["columns"][-1] == "valid_frames" and json.loads((out / "manifest.json").read_text()) == manifest
    bad = dict(line.split("\t") for line in (out / "bad_videos.txt").read_text().splitlines())
    assert {os.path.basename(p): why[: len(reasons[os.path.basename(p)])] for p, why in bad.items()} == reasons
    assert "v_YoYo_g02_c01.avi\tnot listed in data.split_file" in (out / "ignored_files.txt").read_text()
    rows = [read_shard(out / f["name"], tuple(manifest["moments_shape"])) for f in manifest["files"]]
    got = {k: (label, valid, m, mf) for part in rows for k, label, valid, m, mf in
           zip(part["key"], part["label"], part["valid_frames"], part["moments"], part["moments_flip"])}
    assert {k: (int(v[0]), int(v[1])) for k, v in got.items()} == {
        "Archery/v_Archery_g01_c01.avi": (0, 8), "Archery/v_Archery_g01_c02.mp4": (0, 4),
        "YoYo/v_YoYo_g01_c01.mkv": (1, 8)}
    for key, (_, _, m, mf) in got.items():  # pixels: the moments are the clip, and the flip mirrors each frame
        clip, _ = decode_clip(root / key, 8, 16, H, W, 1)
        np.testing.assert_array_equal(m, clip)
        np.testing.assert_array_equal(mf, clip[..., ::-1])
    assert indices(got["Archery/v_Archery_g01_c01.avi"][2]) == [0, 1, 3, 4, 6, 7, 9, 10]  # floor(1.5 k)
    assert open_encoded(cfg, out)["rows"] == 3


def test_flip_pick_broadcasts_over_clips(tiny):
    cfg = tiny("data.hflip=true", "tokenizer.frames=2", "tokenizer.patch_size=2")
    m = torch.randn(256, 1, 2, 8, 8)
    batch = {"label": torch.zeros(256), "moments": m, "moments_flip": m + 100.0}
    tokens, _ = batch_tokens(batch, cfg, torch.Generator().manual_seed(0))
    plain, _ = batch_tokens(batch, tiny("tokenizer.frames=2", "tokenizer.patch_size=2"))
    diff = (tokens - plain).flatten(1)
    mirrored = torch.isclose(diff, torch.tensor(100.0)).all(1)
    assert (mirrored | (diff == 0).all(1)).all()  # a whole clip is its mirror or itself
    assert 0.35 < mirrored.float().mean() < 0.65


def test_moving_mnist_is_checked_against_the_tokenizer(tiny):
    from djepa.config import ConfigError
    from djepa.data.sources import check_shape, load_source

    clips, labels = load_source("moving_mnist")  # the bundled arrays, (N, 1, T, H, W)
    ok = tiny("data.source=moving_mnist", "tokenizer.frames=8", "tokenizer.image_size=32")
    check_shape("moving_mnist", clips, ok.tokenizer)
    assert clips.shape[1:] == ok.tokenizer.input_shape and "frames" in encode_settings(ok)["tokenizer"]
    with pytest.raises(ConfigError, match=r"data.source=moving_mnist gives clips of \(1, 8, 32, 32\), but the "
                                          r"tokenizer expects \(1, 16, 32, 32\); set \(tokenizer.channels, "
                                          r"tokenizer.frames, \*tokenizer.image_size\)"):
        check_shape("moving_mnist", clips, tiny("tokenizer.frames=16", "tokenizer.image_size=32").tokenizer)
    with pytest.raises(ConfigError, match=r"expects \(1, 8, 8\)"):
        check_shape("moving_mnist", clips, tiny().tokenizer)  # an image tokenizer
