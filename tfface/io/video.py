"""Reading and writing videos with PyAV (FFmpeg's libraries, shipped inside the ``av`` wheel).

No ``ffmpeg`` program is needed. :func:`read_frames` decodes any container FFmpeg reads (mp4,
mov, webm, mkv, avi, animated GIF...) frame by frame as ``(H, W, 3)`` uint8 RGB;
:func:`probe` gives the frame rate, size and (where the container says) frame count; bad input
raises :class:`~tfface.errors.InputError` naming the file: a missing file, a zero-length file, a
file FFmpeg cannot open or decode (corrupt, truncated, not a video), a file without a video
stream, or a video with no frame. :class:`VideoWriter` encodes frames to H.264 (``.mp4``,
``.mov``, ``.m4v``, ``.mkv``) or VP9 (``.webm``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tfface.errors import InputError

#: Encoder per output file ending.
ENCODERS = {".mp4": "libx264", ".mov": "libx264", ".m4v": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream.

    Attributes:
        fps: frames per second (average rate; 25 where the container gives none).
        width, height: frame size in pixels.
        frames: number of frames, or None where the container does not say.
    """

    fps: float
    width: int
    height: int
    frames: int | None


def _open(path: Path):
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (zero length), not a video")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path}: not a video FFmpeg can read ({error})") from error
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: holds no video stream")
    return container


def probe(path: str | Path) -> VideoInfo:
    """The frame rate, size and frame count of a video (see :class:`VideoInfo`).

    Raises:
        InputError: see the module docstring.
    """
    with _open(Path(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(float(rate) if rate else 25.0, int(stream.codec_context.width),
                         int(stream.codec_context.height), int(stream.frames) or None)


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode a video frame by frame as ``(H, W, 3)`` uint8 RGB.

    Raises:
        InputError: see the module docstring; also when decoding fails part way (frames
            before the damage have been yielded) or no frame decodes.
    """
    path = Path(path)
    count = 0
    with _open(path) as container:
        try:
            for frame in container.decode(video=0):
                count += 1
                yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as error:
            raise InputError(f"{path}: corrupt video, decoding failed after {count} frames ({error})") from error
    if count == 0:
        raise InputError(f"{path}: the video holds no frame")


class VideoWriter:
    """Encode RGB frames to a video file; use as a context manager.

    The encoder follows the file ending (:data:`ENCODERS`); both need even sides (4:2:0
    chroma), so odd-sized frames get one black row or column. All frames must have the first
    one's size.

    Args:
        path: output file (``.mp4``, ``.mov``, ``.m4v``, ``.mkv`` or ``.webm``).
        fps: frames per second.
        quality: H.264/VP9 constant rate factor (lower is better; 18 is visually lossless).
    """

    def __init__(self, path: str | Path, fps: float, quality: int = 20):
        self.path = Path(path)
        self.codec = ENCODERS.get(self.path.suffix.lower())
        if self.codec is None:
            raise InputError(f"{self.path}: cannot write video of type {self.path.suffix!r}; use one of {sorted(ENCODERS)}")
        if not fps > 0:
            raise InputError(f"frames per second must be positive, got {fps}")
        self.fps, self.quality = Fraction(fps).limit_denominator(1001), int(quality)
        self._container = None
        self._stream = None
        self.frames = 0

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self, height: int, width: int) -> None:
        self._container = av.open(str(self.path), "w")
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self.quality)}
        self._stream = stream

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise InputError(f"video frames must be (H, W, 3) uint8, got {frame.dtype} {frame.shape}")
        if self._stream is None:
            self._start(*frame.shape[:2])
        stream = self._stream
        padded = np.zeros((stream.height, stream.width, 3), np.uint8)
        if frame.shape[0] > stream.height or frame.shape[1] > stream.width or \
                stream.height - frame.shape[0] > 1 or stream.width - frame.shape[1] > 1:
            raise InputError(f"frame {self.frames} is {frame.shape[1]}x{frame.shape[0]}, the video "
                             f"{stream.width}x{stream.height}")
        padded[:frame.shape[0], :frame.shape[1]] = frame
        for packet in stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file (no file is written without a frame)."""
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
