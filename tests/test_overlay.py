"""The whole-picture overlay: boxes, landmarks and mesh veil where they belong, the picture kept."""

from __future__ import annotations

import numpy as np

from tfface.overlay import BOX_COLOUR, FAILED_COLOUR, LANDMARK_COLOUR, FaceDrawing, draw_faces


def test_overlay_draws_each_face_in_place_and_keeps_the_picture():
    picture = np.full((120, 200, 3), 60, np.uint8)
    landmarks = np.stack([np.linspace(30, 70, 68), np.linspace(30, 70, 68)], -1)
    mesh = np.stack(np.meshgrid(np.arange(35, 65), np.arange(35, 65)), -1).reshape(-1, 2) + 0.5
    faces = [FaceDrawing(np.array([20.0, 20.0, 80.0, 80.0]), "0", landmarks, mesh),
             FaceDrawing(np.array([120.0, 20.0, 180.0, 80.0]), "1")]  # detected, not fitted
    out = draw_faces(picture, faces)
    assert out.shape == picture.shape and out.dtype == np.uint8 and (picture == 60).all()
    assert tuple(out[50, 50]) == LANDMARK_COLOUR  # a landmark on the diagonal
    assert tuple(out[20, 50]) == BOX_COLOUR and tuple(out[20, 150]) == FAILED_COLOUR
    assert (out[60, 40] != 60).any()  # the mesh veil, off the landmarks
    assert (out[100:, :] == 60).all() and (out[40:60, 130:170] == 60).all()  # nothing else drawn
