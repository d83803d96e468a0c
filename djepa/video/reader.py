"""Video class folders (UCF101's layout): the scan of root/<class>/<video>, a cheap probe, and clip decoding.

Plain PyAV + Pillow + numpy (no Ray): the encode job scans and probes in the driver and decodes in Ray tasks.

Class order. UCF101's official classInd.txt numbers its 101 folders in case-insensitive alphabetical order
(checked against the published file: "35 Hammering, 36 HammerThrow", "47 JumpingJack, 48 JumpRope"). Python's
sorted(), torchvision's ImageFolder and torchvision's UCF101 are case-sensitive and swap those two pairs, so here
classes are sorted case-insensitively (ties: case-sensitively): label i is classInd's i + 1 even without the file.
A classInd.txt beside the split file, when there is one, is read and used, and must name exactly the folders.

decode_clip's rules (paper app. G.3: UCF101 at 8 fps, 160 frames, "zero padding for videos shorter"):
- Resampling: clip frame k is the frame on screen at time k / fps after the first frame, i.e. the last decoded
  frame whose timestamp is <= that time (sample and hold, torchvision's floor rule for constant rates). It reads
  each frame's own timestamp, so variable frame rates are sampled by time, not by frame count. A timestamp counts
  as <= t within half a tick of the stream's time base, at most 1 ms: muxers round to ticks (Matroska stores
  milliseconds, so 1/24 s is written as 42 ms). A frame without a timestamp is placed one average frame interval
  after the one before it. The video ends one mean frame interval after its last frame (frame durations are
  unreliable), so a clip time at or past that end is padding. Display rotation and non-square pixels (sample
  aspect ratio) are not applied: frames are read as stored.
- Size: the images' centre crop (images.center_crop): box-halve while both sides are >= 2x the target, then
  Pillow's bicubic resize keeping the aspect until the frame just covers (height, width) (for a target of the
  frame's aspect: the short side scaled to the target's), then the centre is cut out. Grey (channels=1) is
  Pillow's ITU-R 601 luma of the RGB frame FFmpeg converts.
- Length: the first `frames` resampled frames. A shorter video is zero-padded: the missing frames are black
  (pixel 0, value -1 in [-1, 1]) and valid_frames says how many are real (the encode stores it per clip).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from djepa.data.format import DatasetError

# read case-insensitively (all five are written and read back by the PyAV 18 wheel); any other file is listed as
# ignored, never silently dropped
VIDEO_EXTENSIONS = ["avi", "mkv", "mov", "mp4", "webm"]


class VideoError(ValueError):
    """A video file that cannot be decoded; the message is the reason (the file is named by the caller)."""


@dataclass
class VideoScan:
    """What encode will read from a video class-folder tree, and everything it will not (listed, with why)."""
    classes: list[str]
    files: list[str] = field(default_factory=list)  # absolute paths: the split file's order, else sorted by class
    ignored: list[str] = field(default_factory=list)  # "path<TAB>why" lines

    def label(self, path: str, root: str) -> int:
        return self.classes.index(Path(path).relative_to(root).parts[0])


def _is_video(name: str) -> bool:
    return "." in name and name.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS


def _class_index(split_file: Path, folders: list[str]) -> list[str] | None:
    """classInd.txt beside the split file ("1 ApplyEyeMakeup" lines, numbered 1..K) as a list, None when absent;
    refused unless it names exactly the class folders."""
    ind = split_file.parent / "classInd.txt"
    if not ind.is_file():
        return None
    names = []
    for n, line in enumerate(ind.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] != str(len(names) + 1):
            raise DatasetError(f"{ind}:{n}: expected '{len(names) + 1} <class>', got {line.strip()!r}")
        names.append(parts[1])
    if sorted(names) != sorted(folders):
        missing, extra = sorted(set(names) - set(folders)), sorted(set(folders) - set(names))
        raise DatasetError(f"{ind} does not match the class folders of data.root: listed but not a folder: "
                           f"{missing[:5] or 'none'}; folders not listed: {extra[:5] or 'none'}. Fix the file or "
                           f"the folders (it sits beside data.split_file, so it defines the labels)")
    return names


def _split_entries(split_file: Path, root: Path, classes: list[str]) -> list[str]:
    """The split file's videos as absolute paths, in its order; each line is checked (the file exists in a class
    folder, the optional 1-based label agrees with the class order, no line repeats an earlier one)."""
    seen, files = {}, []
    for n, line in enumerate(split_file.read_text().splitlines(), 1):  # UCF101's lists end lines with CRLF
        parts = line.split()
        if not parts:
            continue
        where = f"data.split_file={str(split_file)!r} line {n}"
        rel = parts[0]
        path = root / rel
        if len(parts) > 2 or len(Path(rel).parts) < 2 or Path(rel).parts[0] not in classes or not _is_video(rel):
            raise DatasetError(f"{where}: {line.strip()!r} is not '<class>/<video> [label]' with <class> a folder "
                               f"of data.root={str(root)!r} and a video extension ({', '.join(VIDEO_EXTENSIONS)})")
        if not path.is_file():
            raise DatasetError(f"{where} lists {rel}, but {path} is missing; restore it, or check data.root and "
                               f"data.split_file")
        label = classes.index(Path(rel).parts[0]) + 1
        if len(parts) == 2 and parts[1] != str(label):
            raise DatasetError(f"{where}: {rel} has label {parts[1]}, but {Path(rel).parts[0]} is class {label} "
                               f"here (classInd.txt order, else the folders' case-insensitive order)")
        if rel in seen:
            raise DatasetError(f"{where} repeats {rel} (first on line {seen[rel]}); each video is listed once")
        seen[rel] = n
        files.append(str(path))
    return files


def scan_videos(root: str | Path, split_file: str | Path | None = None) -> VideoScan:
    """root/<class>/[sub-folders/]<video>: every class folder's videos at any depth, or with `split_file` exactly
    its listed videos, in its order. Everything else is listed as ignored (files at the root, files that are not
    videos, videos the split does not list); hidden files and folders (.name) are skipped. A class without
    videos is an error (the model would be told to generate a class it never sees), as is a root without any."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={str(root)!r} is not a directory; it must hold one folder per class")
    folders = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not folders:
        raise FileNotFoundError(f"data.root={str(root)!r} has no class folders (expected root/<class>/<video>)")
    split = Path(split_file).resolve() if split_file else None
    if split and not split.is_file():
        raise FileNotFoundError(f"data.split_file={str(split)!r} does not exist")
    # classInd.txt's order when it is there, else the same order from the names (module docstring)
    classes = (_class_index(split, folders) if split else None) or sorted(folders, key=lambda c: (c.casefold(), c))
    scan = VideoScan(classes)
    scan.ignored += [f"{p}\tat the root, outside any class folder" for p in sorted(root.iterdir())
                     if p.is_file() and not p.name.startswith(".")]
    videos = []
    for c in classes:
        for dirpath, dirnames, filenames in os.walk(root / c, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(n for n in filenames if not n.startswith(".")):
                path = os.path.join(dirpath, name)
                if _is_video(name):
                    videos.append(path)
                else:
                    scan.ignored.append(f"{path}\tnot a video format encode reads ({', '.join(VIDEO_EXTENSIONS)})")
    scan.files = _split_entries(split, root, classes) if split else videos
    listed = set(scan.files)
    scan.ignored += [f"{p}\tnot listed in data.split_file={str(split)!r}" for p in videos if p not in listed]
    if not scan.files:
        raise DatasetError(f"data.root={str(root)!r} holds no videos ({', '.join(VIDEO_EXTENSIONS)}) in its class "
                           f"folders" + (f" listed in data.split_file={str(split)!r}" if split else ""))
    empty = sorted(set(classes) - {Path(f).relative_to(root).parts[0] for f in scan.files})
    if empty:
        raise DatasetError(f"data.root={str(root)!r}: class folder(s) without " + ("listed " if split else "") +
                           f"videos: {', '.join(empty[:10])}. Each sub-folder of the root is a class; remove empty "
                           f"ones or add their videos" + (" to data.split_file" if split else ""))
    return scan


# ----------------------------------------------------------------------------- probing and decoding
def _open(source):
    """av.open of a path or of bytes in memory; a file FFmpeg cannot open is a VideoError with PyAV's reason."""
    import av

    try:
        return av.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else str(source))
    except Exception as err:  # PyAV's FFmpegError types (InvalidDataError, EOFError, ...) and OSError
        raise VideoError(f"{type(err).__name__}: {err}") from None


def _video_stream(container):
    if not container.streams:  # FFmpeg opened it but found no stream table: an MP4 keeps its index at the end
        raise VideoError("no streams: not a video, or cut off before its index")
    if not container.streams.video:
        raise VideoError(f"no video stream (only {', '.join(sorted({s.type for s in container.streams}))})")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # PyAV builds a decoder context only when FFmpeg has a decoder for the codec
        import av

        raise VideoError(f"codec cannot be decoded: PyAV {av.__version__}'s FFmpeg has no decoder for this stream's "
                         f"codec (re-encode it, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)")
    return stream


def _span(first, last, count: int, stream) -> Fraction:
    """Seconds covered by `count` frames from time `first` to `last`: the last one lasts the mean interval of all
    (frame and packet durations are unreliable: a variable-rate Matroska file says 1 ms), else one average frame."""
    if count > 1:
        return (last - first) * count / (count - 1)
    return 1 / stream.average_rate if stream.average_rate else Fraction(0)


class _Tally:
    """The video stream's packets as demuxed: how many, and the first and last timestamps (seconds)."""

    def __init__(self, stream):
        self.stream, self.packets, self.timed, self.first, self.last = stream, 0, 0, None, None

    def packets_of(self, container):
        """The video stream's packets, counted; a read error after the first one is a cut-off or damaged file."""
        packets = container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except Exception as err:  # PyAV's FFmpegError types, or OSError (EIO) from a cut Matroska cluster
                if not self.packets:
                    raise VideoError(f"{type(err).__name__}: {err}") from None
                raise VideoError(f"truncated or damaged: reading stopped after {self.packets} frames "
                                 f"({type(err).__name__}: {err})") from None
            self.add(packet)
            yield packet

    def add(self, packet) -> None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None and not packet.size:
            return  # the empty packet PyAV yields at the end to flush the decoder
        self.packets += 1
        if ts is not None:
            t = ts * packet.time_base
            self.timed += 1
            self.first = t if self.first is None else min(self.first, t)
            self.last = t if self.last is None else max(self.last, t)

    def truncated(self, container) -> str | None:
        """Why the stream ended before what its container declares, None when it did not: fewer packets than the
        header's frame count (AVI, MP4), or over two frames (and 0.1 s) less than the declared duration
        (Matroska, WebM: no frame count)."""
        s = self.stream
        if s.frames and self.packets < s.frames:
            return f"truncated: {self.packets} of the {s.frames} frames its header declares"
        declared = None
        if s.duration:
            declared = s.duration * s.time_base
        elif s.metadata.get("DURATION"):  # FFmpeg's Matroska muxer: per track, "HH:MM:SS.nnnnnnnnn"
            h, m, sec = s.metadata["DURATION"].split(":")
            declared = int(h) * 3600 + int(m) * 60 + Fraction(sec)
        elif len(container.streams) == 1 and container.duration:  # the container's duration is this stream's
            declared = Fraction(container.duration, 1_000_000)
        if declared is None or not self.timed:
            return None
        span = _span(self.first, self.last, self.timed, s)
        if span + max(2 * span / self.timed, Fraction(1, 10)) < declared:
            return (f"truncated: the video stops at {float(span):.2f} s of the {float(declared):.2f} s its container "
                    f"declares")
        return None


def probe(path: str | Path) -> str | None:
    """None when PyAV opens the file, finds a video stream with a decodable codec, decodes a frame, and the stream
    is as long as its container declares; else the reason. Cost: every packet is demuxed (the whole file is read,
    which is what finds a cut-off file), only the first frame is decoded."""
    try:
        with _open(path) as container:
            stream = _video_stream(container)
            tally, decoded = _Tally(stream), False
            for packet in tally.packets_of(container):
                decoded = decoded or bool(packet.decode())  # the first frame only (the last packet flushes)
            if not tally.packets:
                return "0 frames"
            if not decoded:
                return f"0 frames: none of its {tally.packets} packets decodes to a frame"
            return tally.truncated(container)
    except VideoError as err:
        return str(err)
    except Exception as err:  # PyAV raises many FFmpegError types (and OSError) for a broken file
        return f"{type(err).__name__}: {err}"


def _pixels(frame, height: int, width: int, channels: int) -> np.ndarray:
    """A decoded frame -> float32 (H, W, C) in [-1, 1]: RGB by FFmpeg's swscale, then the image centre crop."""
    from djepa.data.images import center_crop

    im = frame.to_image()
    im = center_crop(im.convert("L") if channels == 1 else im, (height, width))
    return np.asarray(im, dtype=np.float32).reshape(height, width, channels) / 127.5 - 1.0


def _frames(container, stream, tally: _Tally):
    """Decoded frames with their time in seconds (Fraction), in presentation order."""
    import av

    t, step = None, 1 / stream.average_rate if stream.average_rate else Fraction(0)
    for packet in tally.packets_of(container):
        try:
            frames = packet.decode()
        except av.error.FFmpegError as err:
            at = f"{float(t):.2f} s" if t is not None else "the start"
            raise VideoError(f"decode error after {at}: {type(err).__name__}: {err}") from None
        for frame in frames:
            t = frame.pts * frame.time_base if frame.pts is not None else (t + step if t is not None else Fraction(0))
            yield frame, t


def _on_screen(container, stream):
    """(frame, shown from, shown until) for each decoded frame: until the next frame's time, the last one until
    the video ends (one mean frame interval later). Reaching the end checks that the file was not cut off."""
    tally, prev, first, count = _Tally(stream), None, None, 0
    for frame, t in _frames(container, stream, tally):
        if prev is not None:
            yield prev[0], prev[1], t
        first, prev, count = first if first is not None else t, (frame, t), count + 1
    if prev is None:
        raise VideoError("0 frames")
    why = tally.truncated(container)
    if why:
        raise VideoError(why)
    yield prev[0], prev[1], first + _span(first, prev[1], count, stream)


def decode_clip(source: bytes | str | Path, frames: int, fps: float, height: int, width: int, channels: int
                ) -> tuple[np.ndarray, int]:
    """A video (its bytes or its path) -> (clip float32 (C, frames, height, width) in [-1, 1], valid_frames): the
    first `frames` frames resampled to `fps`, resized and centre-cropped, zero-padded (black) after valid_frames
    real ones (module docstring). Raises VideoError with the reason for a file that cannot give a clip; a file
    cut off after the frames the clip needs still gives it (the rest is not read)."""
    if channels not in (1, 3):
        raise ValueError(f"video frames are grey (tokenizer.channels=1) or RGB (3), not {channels}")
    period = 1 / Fraction(repr(float(fps)))  # 8.0 -> 1/8, 29.97 -> 100/2997: exact, like the timestamps
    picked: list[np.ndarray] = []
    with _open(source) as container:
        stream = _video_stream(container)
        # muxers round timestamps to ticks, by up to half a tick; a coarse time base (AVI's 1/24 s) is exact, and
        # half of its tick would reach the next frame, hence the 1 ms cap
        tol, start = min(stream.time_base / 2, Fraction(1, 1000)), None
        for frame, shown_from, until in _on_screen(container, stream):
            start = shown_from if start is None else start
            pixels = None  # converted once, however many clip frames repeat it
            while len(picked) < frames and start + len(picked) * period + tol < until:
                pixels = _pixels(frame, height, width, channels) if pixels is None else pixels
                picked.append(pixels)
            if len(picked) == frames:
                break
    valid = len(picked)
    clip = np.full((frames, height, width, channels), -1.0, dtype=np.float32)  # zero padding: black frames
    if valid:
        clip[:valid] = np.stack(picked)
    return clip.transpose(3, 0, 1, 2), valid
