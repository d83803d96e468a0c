"""Sampled (or real) clips as files a person can look at, in MLflow's artifact view or anywhere else.

save_video_grid writes three views of the same uint8 clips (N, T, H, W, C):
- <stem>.gif: frame t is the grid of the N clips at time t (1-px lines as samples.save_grid_png draws, but
  mid-grey: on black lines a clip's edge is invisible, and so is its digit's bounce off it), looping
  forever. Pillow's GIF writer; GIF delays count hundredths of a second, so 8 fps is stored as 120 ms.
  Grey clips come back exactly (a GIF palette holds all 256 grey levels); colour frames are quantised to
  256 colours each. Pillow merges a frame identical to the one before into it (one longer frame).
- <stem>.mp4: the same grid at `fps` with PyAV (libx264, else mpeg4; yuv420p), padded with black to even
  width and height (4:2:0 chroma needs them). Lossy, but plays in browsers.
- <stem>-strip.png: the first min(N, ncol) clips, one row each, their T frames side by side: a still that
  shows the motion. The preview grid lays out one sample per class per row (labels 0..C-1, ncol = C), so
  there the strip is one row per class.
Every file is written to a temporary name and renamed (samples.atomic_write): no half-written artifact.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from djepa.samples import atomic_write, save_grid_png, tile

FPS = 8.0  # data.fps's default (the paper samples UCF101 at 8 fps)
MP4_CODECS = ("libx264", "mpeg4")  # the first one this FFmpeg build can encode
LINE = 128  # the grey of the 1-px lines between clips (and between the frames of a strip)


def video_grid_scale(height: int) -> int:
    """Upscaling of a clip grid so each clip is about 96 px (32x32 Moving MNIST x3, 64 px x1): readable in the
    MLflow artifact view, a little smaller than samples.grid_scale's 112 px because a GIF holds T frames."""
    return max(1, 96 // height)


def _check(clips_u8: np.ndarray) -> None:
    if clips_u8.dtype != np.uint8 or clips_u8.ndim != 5 or clips_u8.shape[-1] not in (1, 3) or not len(clips_u8):
        raise ValueError(f"clips must be uint8 (N, T, H, W, C) with N > 0 and C = 1 or 3, got {clips_u8.dtype} "
                         f"{clips_u8.shape}")


def frame_grids(clips_u8: np.ndarray, ncol: int, scale: int = 1) -> np.ndarray:
    """uint8 (N, T, H, W, C) -> (T, H', W', C): frame t is the grid of the N clips at time t, each pixel
    repeated `scale` times along both axes (nearest neighbour, as save_grid_png)."""
    grids = np.stack([tile(clips_u8[:, t], ncol, LINE) for t in range(clips_u8.shape[1])])  # (T, H', W', C)
    return grids.repeat(scale, axis=1).repeat(scale, axis=2)


def gif_duration_ms(fps: float) -> int:
    """The frame delay a GIF can store closest to 1/fps: a multiple of 10 ms (8 fps -> 120 ms)."""
    return 10 * max(1, round(100 / fps))


def save_gif(path: str | Path, frames: np.ndarray, fps: float = FPS) -> Path:
    """(T, H, W, C) uint8 frames -> an animated GIF that loops forever."""
    from PIL import Image

    pil = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]  # "L" for grey: exact
    path = Path(path)
    atomic_write(path, lambda tmp: pil[0].save(tmp, format="GIF", save_all=True, append_images=pil[1:],
                                               duration=gif_duration_ms(fps), loop=0))
    return path


def mp4_codec() -> str:
    import av

    for name in MP4_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # this FFmpeg build has no encoder of that name
            continue
    raise RuntimeError(f"PyAV's FFmpeg can encode none of {MP4_CODECS}; reinstall av (its wheels ship libx264)")


def save_mp4(path: str | Path, frames: np.ndarray, fps: float = FPS) -> Path:
    """(T, H, W, C) uint8 frames -> an H.264 (or MPEG-4 part 2) MP4 in yuv420p, padded to even dimensions."""
    import av

    t, h, w, c = frames.shape
    rgb = np.zeros((t, h + h % 2, w + w % 2, 3), dtype=np.uint8)  # black padding on the bottom and right
    rgb[:, :h, :w] = frames  # grey (C = 1) broadcasts to the 3 channels
    codec = mp4_codec()

    def write(tmp):
        with av.open(tmp, "w", format="mp4") as out:
            stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = rgb.shape[2], rgb.shape[1], "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "18"}  # visually lossless: digits are thin strokes on black
            else:
                stream.bit_rate = 4_000_000  # mpeg4's default (~200 kbit/s) smears small frames
            for f in rgb:
                frame = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")
                out.mux(stream.encode(frame))
            out.mux(stream.encode())  # flush the encoder's delayed frames

    path = Path(path)
    atomic_write(path, write)
    return path


def save_video_grid(path_stem: str | Path, clips_u8: np.ndarray, ncol: int, scale: int = 1, fps: float = FPS
                    ) -> dict[str, Path]:
    """uint8 clips (N, T, H, W, C) -> {"gif", "mp4", "strip"}: <stem>.gif, <stem>.mp4 and <stem>-strip.png
    (the module docstring says what each holds). `ncol` clips per grid row, each upscaled `scale` times."""
    _check(clips_u8)
    stem = Path(path_stem)
    frames = frame_grids(clips_u8, ncol, scale)  # (T, H', W', C)
    first = clips_u8[:min(len(clips_u8), ncol)]  # (k, T, H, W, C): one strip row each
    k, t = first.shape[:2]
    return {"gif": save_gif(stem.with_name(stem.name + ".gif"), frames, fps),
            "mp4": save_mp4(stem.with_name(stem.name + ".mp4"), frames, fps),
            "strip": save_grid_png(stem.with_name(stem.name + "-strip.png"), first.reshape(k * t, *first.shape[2:]),
                                   ncol=t, scale=scale, line=LINE)}
