"""Real-photo streams: decoding odd files, the framing warp, the random similarity and the fill."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tfface.data.framing import AFLW_CROPS, CANONICAL, PhotoFraming
from tfface.data.photos import PhotoSource, photo_dataset, pixel_similarity
from tfface.data.augment import SimilarityRange
from tfface.errors import InputError

SIZE = 32
TEMPLATE5 = np.array([[0.35, 0.31], [0.65, 0.31], [0.5, 0.45], [0.39, 0.63], [0.61, 0.63]], np.float32)


def _dot_photo(path, centre=(0.25, 0.75), side: int = 64, mode: str = "RGB", background=(0, 0, 0), radius: int = 2):
    """A photo of one ``background`` colour with a white square dot at unit position ``centre``."""
    image = np.zeros((side, side, 3), np.uint8) + np.array(background, np.uint8)
    x, y = int(centre[0] * side), int(centre[1] * side)
    image[y - radius:y + radius, x - radius:x + radius] = 255
    Image.fromarray(image).convert(mode).save(path)


def _dot_position(image: np.ndarray) -> np.ndarray:
    """Unit position of the brightness-weighted centre of an image."""
    weight = image.mean(-1)
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]] + 0.5
    return np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum() / image.shape[0]


def test_canonical_photos_pass_unchanged_and_odd_files_are_handled(tmp_path):
    _dot_photo(tmp_path / "rgb.png")
    _dot_photo(tmp_path / "grey.png", mode="L")
    _dot_photo(tmp_path / "rgba.png", mode="RGBA")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    images = list(photo_dataset([PhotoSource(tmp_path, CANONICAL)], SIZE, TEMPLATE5).take(16).as_numpy_iterator())
    for image in images:
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.float32
        assert np.isfinite(image).all() and 0 <= image.min() and image.max() <= 1
        np.testing.assert_allclose(_dot_position(image), [0.25, 0.75], atol=0.02)
        np.testing.assert_allclose(image[..., 0], image[..., 2], atol=1e-6)  # grey replicated to RGB


def test_framing_moves_the_collections_face_where_the_template_wants_it(tmp_path):
    source = np.array([[0.2, 0.6], [0.3, 0.6], [0.25, 0.7], [0.22, 0.8], [0.28, 0.8]])  # a small face, lower left
    _dot_photo(tmp_path / "face.png", centre=source.mean(0))
    framing = PhotoFraming("lower-left", tuple(map(tuple, source)))
    image = next(photo_dataset([PhotoSource(tmp_path, framing)], SIZE, TEMPLATE5).as_numpy_iterator())
    np.testing.assert_allclose(_dot_position(image), TEMPLATE5.mean(0), atol=0.03)


def test_random_similarity_keeps_the_face_inside_its_ranges_and_fills_uncovered_pixels(tmp_path):
    _dot_photo(tmp_path / "a.png", centre=(0.5, 0.5), background=(0, 0, 100), radius=8)
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "b.png")  # grey donor
    ranges = SimilarityRange(rotation=(0.0, 0.0), scale=(0.5, 0.5), translation=0.0)
    images = list(photo_dataset([PhotoSource(tmp_path, CANONICAL)], SIZE, TEMPLATE5, ranges).take(16)
                  .as_numpy_iterator())
    dots = [image for image in images if image[..., 0].max() > 0.9]
    assert dots, "the dot photo never came"
    for image in dots:
        # shrunk to half about the centre: the 16-pixel dot (8 at 32 px) becomes 4 wide ...
        assert 3 <= (image[SIZE // 2, :, 0] > 0.9).sum() <= 5
        np.testing.assert_allclose(_dot_position(np.where(image[..., :1] > 0.9, 1.0, 0.0)), [0.5, 0.5], atol=0.03)
        # ... and the uncovered border is filled from a photo (grey or blue), never left black
        assert image[0, 0].max() > 0.3 and image[-1, -1].max() > 0.3


def test_content_radius_is_the_distance_to_the_nearest_edge_of_the_framed_photo():
    assert CANONICAL.content_radius(TEMPLATE5) == pytest.approx(0.5)
    assert AFLW_CROPS.content_radius(TEMPLATE5) == pytest.approx(0.5 * 1.4 / 1.5)  # zoomed out about the centre
    shifted = PhotoFraming("shifted", tuple(map(tuple, TEMPLATE5 + [0.1, 0.0])))
    assert shifted.content_radius(TEMPLATE5) == pytest.approx(0.4)  # moved 0.1 left: the right edge comes in


def test_seam_radius_keeps_the_fill_and_its_seams_out_of_the_disc(tmp_path):
    for name, value in (("white", 255), ("black", 0)):
        for index in range(3):
            Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(tmp_path / f"{name}{index}.png")
    ranges = SimilarityRange.symmetric(30.0, (0.6, 0.9), 0.2)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    disc = np.hypot(cols - SIZE / 2, rows - SIZE / 2) <= 0.4 * SIZE

    def spread_in_disc(seam_radius):
        images = photo_dataset([PhotoSource(tmp_path, CANONICAL)], SIZE, TEMPLATE5, ranges, seed=1,
                               seam_radius=seam_radius).take(24).as_numpy_iterator()
        return np.array([np.ptp(image[disc]) for image in images])

    assert (spread_in_disc(None) > 0.5).any()  # zoomed out and shifted: the donor shows in the disc
    np.testing.assert_array_less(spread_in_disc(0.4), 1e-3)


def test_pixel_similarity_matches_unit_similarity():
    unit = np.array([[0.5, 0, 0.25], [0, 0.5, 0.25], [0, 0, 1]])
    pixel = pixel_similarity(unit, 100)
    np.testing.assert_allclose(pixel @ [100, 100, 1], [75, 75, 1], atol=1e-4)


def test_photo_source_parsing():
    source = PhotoSource.parse("some/dir:aflw-crops:2.5")
    assert source.framing.name == "aflw-crops" and source.weight == 2.5 and str(source.folder) == "some/dir"
    assert PhotoSource.parse("d").framing is CANONICAL
    for bad in ("d:nosuchframing", "d:celeba:-1", "d:celeba:x"):
        with pytest.raises(InputError):
            PhotoSource.parse(bad)
    with pytest.raises(InputError):
        photo_dataset([], SIZE, TEMPLATE5)
