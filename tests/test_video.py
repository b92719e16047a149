"""Video reading and writing with PyAV: round trips per container, sizes, and bad files."""

from __future__ import annotations

import numpy as np
import pytest

from tfface.errors import InputError
from tfface.io import video


def _frames(count: int = 12, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Flat frames of rising grey with a white square moving right (easy to compress, easy to check)."""
    frames = []
    for i in range(count):
        frame = np.full((height, width, 3), 10 * i + 20, np.uint8)
        frame[10:26, 2 * i:2 * i + 16] = 255
        frames.append(frame)
    return frames


@pytest.mark.parametrize("suffix, tolerance", [(".mp4", 6.0), (".mov", 6.0), (".webm", 8.0)])
def test_round_trip(tmp_path, suffix, tolerance):
    frames = _frames()
    path = tmp_path / f"clip{suffix}"
    with video.VideoWriter(path, fps=24) as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.frames == len(frames)
    info = video.probe(path)
    assert (info.width, info.height) == (64, 48) and info.fps == pytest.approx(24, rel=0.05)
    decoded = list(video.read_frames(path))
    assert len(decoded) == len(frames)
    for original, frame in zip(frames, decoded):
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        assert np.abs(frame.astype(float) - original).mean() < tolerance


def test_animated_gif_is_read(tmp_path):
    from PIL import Image

    frames = _frames(5)
    Image.fromarray(frames[0]).save(tmp_path / "clip.gif", save_all=True, duration=100,
                                    append_images=[Image.fromarray(f) for f in frames[1:]])
    decoded = list(video.read_frames(tmp_path / "clip.gif"))
    assert len(decoded) == 5 and np.abs(decoded[3].astype(float) - frames[3]).mean() < 2
    assert video.probe(tmp_path / "clip.gif").fps == pytest.approx(10, rel=0.05)


def test_odd_sizes_are_padded_for_h264(tmp_path):
    path = tmp_path / "odd.mp4"
    with video.VideoWriter(path, fps=10) as writer:
        for frame in _frames(3, 47, 63):
            writer.write(frame)
    info = video.probe(path)
    assert (info.width, info.height) == (64, 48)
    with pytest.raises(InputError, match="frame 1"):
        with video.VideoWriter(tmp_path / "mixed.mp4", fps=10) as writer:
            writer.write(_frames(1)[0])
            writer.write(_frames(1, 30, 30)[0])


def test_writer_rejects_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="type"):
        video.VideoWriter(tmp_path / "clip.xyz", fps=10)
    with pytest.raises(InputError, match="positive"):
        video.VideoWriter(tmp_path / "clip.mp4", fps=0)
    with pytest.raises(InputError, match="uint8"):
        video.VideoWriter(tmp_path / "clip.mp4", fps=10).write(np.zeros((8, 8, 3), np.float32))
    writer = video.VideoWriter(tmp_path / "none.mp4", fps=10)
    writer.close()
    assert not (tmp_path / "none.mp4").exists()


def test_bad_videos_raise_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(video.read_frames(tmp_path / "missing.mp4"))
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="zero length"):
        list(video.read_frames(tmp_path / "empty.mp4"))
    with pytest.raises(InputError, match="zero length"):
        video.probe(tmp_path / "empty.mp4")
    (tmp_path / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(InputError, match="not a video"):
        list(video.read_frames(tmp_path / "garbage.mp4"))
    good = tmp_path / "good.mp4"
    with video.VideoWriter(good, fps=10) as writer:
        for frame in _frames():
            writer.write(frame)
    (tmp_path / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated.mp4"):
        list(video.read_frames(tmp_path / "truncated.mp4"))
