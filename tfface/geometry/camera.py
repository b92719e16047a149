r"""Perspective camera and its inverse form (supplement Sec. Q, eqs. 19-20, corrected).

Conventions (DESIGN.md): a model point :math:`X` (mm) maps to camera space by
:math:`X_c = R X + t`; its homogeneous pixel is :math:`x = K X_c / Z` with depth :math:`Z > 0`,
pixel centres at +0.5. ``K`` is upper triangular with last row ``[0, 0, 1]``::

    K = [[k1, k2, k3],
         [ 0, k4, k5],
         [ 0,  0,  1]],   k1, k4 > 0  (focal lengths), k2 skew, (k3, k5) principal point.

The least-squares layers solve for the *inverse camera*: with :math:`P = \psi K R` and
:math:`q = \psi K t`, a pixel :math:`x = (x, y, 1)` with predicted depth :math:`d = \psi Z`
satisfies :math:`d x = P X + q`, so

.. math:: X = \hat P (d x) + \hat q, \qquad \hat P = P^{-1}, \qquad \hat q = -P^{-1} q = -R^T t.

:math:`\psi > 0` absorbs the unknown scale of the predicted depth. Every function here is pure
TensorFlow, generic in the float dtype and batched over any leading dimensions.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfface.errors import InputError, SolveError
from tfface.geometry.vectors import cross, det3

__all__ = [
    "adjugate",
    "camera_is_plausible",
    "compose_inverse_camera",
    "decompose_inverse_camera",
    "inverse_camera_is_valid",
    "project",
    "random_cameras",
    "unproject",
]

# Plausible cameras of real photographs (:func:`camera_is_plausible`). The ranges are generous:
# they reject fits no lens and no sitter could produce, not unusual photos.

#: Shortest plausible focal length in image widths: a 136-degree horizontal field of view, wider
#: than any rectilinear phone or action-camera lens.
MIN_FOCAL_WIDTHS = 0.2

#: Longest plausible focal length in image widths (a 0.6-degree field of view): a long telephoto
#: lens, or a face cropped tightly out of a large photograph.
MAX_FOCAL_WIDTHS = 100.0

#: Nearest plausible depth (mm) of the model origin in front of the camera: nearer, no face fits
#: in view.
MIN_FACE_DEPTH_MM = 100.0

#: Farthest plausible depth (mm) of the model origin: 100 m, a face seen through a telephoto lens.
MAX_FACE_DEPTH_MM = 100_000.0

#: Largest plausible elevation (degrees) of the camera centre above or below the face's horizontal
#: (model x-z) plane, seen from the model origin: 90 would look straight down on the crown.
MAX_CAMERA_ELEVATION_DEGREES = 80.0

#: Largest plausible azimuth (degrees) of the camera centre around the head's vertical axis from
#: straight ahead (model +z): 90 is an exact profile, beyond it the camera sees the back of the head.
MAX_CAMERA_AZIMUTH_DEGREES = 100.0


def upper_triangular_inverse(K: tf.Tensor) -> tf.Tensor:
    """Closed-form inverse of upper-triangular 3x3 matrices ``K`` (..., 3, 3)."""
    a, b, c = K[..., 0, 0], K[..., 0, 1], K[..., 0, 2]
    d, e, f = K[..., 1, 1], K[..., 1, 2], K[..., 2, 2]
    zero = tf.zeros_like(a)
    rows = [
        tf.stack([1 / a, -b / (a * d), (b * e - c * d) / (a * d * f)], axis=-1),
        tf.stack([zero, 1 / d, -e / (d * f)], axis=-1),
        tf.stack([zero, zero, 1 / f], axis=-1),
    ]
    return tf.stack(rows, axis=-2)


def _dot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(a * b, axis=-1)


def adjugate(matrix: tf.Tensor) -> tf.Tensor:
    r"""Adjugate ``(..., 3, 3)`` of ``(..., 3, 3)`` matrices: :math:`\det(M) M^{-1}`, defined for any ``M``.

    Its rows are the cross products of the columns :math:`c_i` of ``M``:
    :math:`(c_2 \times c_3, c_3 \times c_1, c_1 \times c_2)`. Elementwise ops only (TFLite
    built-ins); finite for finite input, singular or not.
    """
    matrix = tf.convert_to_tensor(matrix)
    c1, c2, c3 = matrix[..., :, 0], matrix[..., :, 1], matrix[..., :, 2]
    return tf.stack([cross(c2, c3), cross(c3, c1), cross(c1, c2)], axis=-2)


def compose_inverse_camera(
    K: tf.Tensor, R: tf.Tensor, t: tf.Tensor, psi: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    r"""Inverse camera :math:`(\hat P, \hat q)` of a camera ``K, R, t`` and depth scale ``psi``.

    Args:
        K: ``(..., 3, 3)`` float. Upper-triangular intrinsics (pixels), ``K[..., 2, 2] == 1``,
            ``k1, k4 > 0``.
        R: ``(..., 3, 3)`` float. Rotation, model to camera space.
        t: ``(..., 3)`` float. Translation (mm), model to camera space.
        psi: ``(...)`` float. Positive depth scale: predicted depth ``d = psi * Z``.

    Returns:
        p_hat: ``(..., 3, 3)``. :math:`\hat P = P^{-1} = R^T K^{-1} / \psi`
            (mm per pixel-depth unit).
        q_hat: ``(..., 3)``. :math:`\hat q = -P^{-1} q = -R^T t`, the camera centre in model space
            (mm).

    Raises:
        InputError: In eager mode, when ``psi``, ``k1`` or ``k4`` is not positive.
    """
    K = tf.convert_to_tensor(K)
    R = tf.convert_to_tensor(R, dtype=K.dtype)
    t = tf.convert_to_tensor(t, dtype=K.dtype)
    psi = tf.convert_to_tensor(psi, dtype=K.dtype)
    if tf.executing_eagerly():
        positive = tf.stack(
            [tf.reduce_all(psi > 0), tf.reduce_all(K[..., 0, 0] > 0), tf.reduce_all(K[..., 1, 1] > 0)]
        )
        if not bool(tf.reduce_all(positive)):
            raise InputError("compose_inverse_camera needs psi > 0 and focal lengths k1, k4 > 0")
    p_hat = tf.linalg.matmul(R, upper_triangular_inverse(K), transpose_a=True)
    p_hat = p_hat / psi[..., None, None]
    q_hat = -tf.linalg.matvec(R, t, transpose_a=True)
    return p_hat, q_hat


def inverse_camera_is_valid(p_hat: tf.Tensor, q_hat: tf.Tensor) -> tf.Tensor:
    r"""Whether each inverse camera can be decomposed: finite and :math:`\det \hat P > 0`.

    Besides the sign, the determinant must exceed ``100 * eps`` (of the dtype) times the
    product of the column norms of :math:`\hat P` (its Hadamard bound), so nearly singular
    matrices count as degenerate. This ratio is invariant to the scale of each column and close
    to 1 for realistic cameras (about ``1 / sqrt(1 + |c|^2 / f^2)`` for principal point ``c``).

    Args:
        p_hat: ``(..., 3, 3)`` float.
        q_hat: ``(..., 3)`` float.

    Returns:
        valid: ``(...)`` bool.
    """
    p_hat = tf.convert_to_tensor(p_hat)
    q_hat = tf.convert_to_tensor(q_hat, dtype=p_hat.dtype)
    finite = tf.logical_and(
        tf.reduce_all(tf.math.is_finite(p_hat), axis=[-2, -1]),
        tf.reduce_all(tf.math.is_finite(q_hat), axis=-1),
    )
    safe = tf.where(finite[..., None, None], p_hat, tf.eye(3, dtype=p_hat.dtype))
    det = det3(safe)
    bound = tf.reduce_prod(tf.norm(safe, axis=-2), axis=-1)
    eps = 100.0 * np.finfo(p_hat.dtype.as_numpy_dtype).eps
    return tf.logical_and(finite, det > eps * bound)


def decompose_inverse_camera(
    p_hat: tf.Tensor, q_hat: tf.Tensor, strict: bool = True
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    r"""Recover ``K, R, t, psi`` from an inverse camera (supplement Sec. Q, corrected).

    Derivation. :math:`P = \hat P^{-1} = \psi K R` is an RQ decomposition: an upper-triangular
    factor :math:`\psi K` times an orthogonal :math:`R`. Write the rows of :math:`P` as
    :math:`p_1^T, p_2^T, p_3^T` and those of :math:`R` as :math:`r_1^T, r_2^T, r_3^T`. Since
    ``K``'s rows are ``[k1, k2, k3], [0, k4, k5], [0, 0, 1]``,

    .. math::
        p_3 = \psi r_3, \qquad
        p_2 = \psi (k_4 r_2 + k_5 r_3), \qquad
        p_1 = \psi (k_1 r_1 + k_2 r_2 + k_3 r_3).

    Orthonormality of the :math:`r_i` then gives, from the bottom row up (Gram-Schmidt):

    .. math::
        \psi = \|p_3\|, \quad r_3 = p_3 / \psi, \quad
        k_5 = r_3 \cdot p_2 / \psi, \quad
        k_4 = \|p_2 / \psi - k_5 r_3\|, \quad r_2 = (p_2 / \psi - k_5 r_3) / k_4,

    .. math::
        r_1 = r_2 \times r_3, \quad
        k_3 = r_3 \cdot p_1 / \psi, \quad k_2 = r_2 \cdot p_1 / \psi, \quad
        k_1 = r_1 \cdot p_1 / \psi.

    The norms are plain norms (the supplement's eqs. 21-32 print squared norms, which would
    break :math:`\|r_i\| = 1`), and they are taken of the rows of :math:`P = \hat P^{-1}`, not of
    :math:`\hat P` (the supplement mixes the two). Since :math:`\det P = \psi^3 k_1 k_4 \det R`,
    a proper rotation with :math:`k_1, k_4 > 0` exists exactly when :math:`\det P > 0`; then
    :math:`r_2 \times r_3` equals the Gram-Schmidt :math:`r_1` and :math:`k_1 > 0`. Finally
    :math:`\hat q = -R^T t` gives :math:`t = -R \hat q` (the supplement's eq. 32,
    :math:`t = K^{-1} \hat q / \psi`, applies to :math:`q = \psi K t`, not to :math:`\hat q`).

    :math:`P` is formed without a general matrix inverse, as :func:`adjugate` of :math:`\hat P`
    over :math:`\det \hat P`, so the result is smooth wherever the input is valid.

    Args:
        p_hat: ``(..., 3, 3)`` float. :math:`\hat P = P^{-1}`.
        q_hat: ``(..., 3)`` float. :math:`\hat q = -R^T t` (mm).
        strict: Raise eagerly on a degenerate input (below). False: never raise; degenerate entries
            get the placeholder camera of graph mode, and the caller must flag them with
            :func:`inverse_camera_is_valid` (as
            :class:`~tfface.layers.geometric.InverseCameraDecomposition` does in its ``valid``
            output).

    Returns:
        K: ``(..., 3, 3)``. Upper triangular, ``K[..., 2, 2] = 1``, ``k1, k4 > 0``.
        R: ``(..., 3, 3)``. Proper rotation (``det R = +1``).
        t: ``(..., 3)``. Translation (mm).
        psi: ``(...)``. Depth scale, :math:`\psi = \|p_3\| > 0`.

    Raises:
        SolveError: In eager mode with ``strict``, when any input is degenerate
            (see :func:`inverse_camera_is_valid`): non-finite, :math:`\det \hat P \le 0`
            (a reflection, no proper rotation exists) or nearly singular. In graph mode
            (inside ``tf.function``) or without ``strict`` no error is raised: degenerate entries
            get the placeholder ``K = R = I``, ``psi = 1`` and ``t = -q_hat``
            (``t = 0`` when ``q_hat`` is not finite), which is finite, has zero gradient and is no
            camera: check :func:`inverse_camera_is_valid` to tell it apart.
    """
    p_hat = tf.convert_to_tensor(p_hat)
    q_hat = tf.convert_to_tensor(q_hat, dtype=p_hat.dtype)
    valid = inverse_camera_is_valid(p_hat, q_hat)
    if strict and tf.executing_eagerly() and not bool(tf.reduce_all(valid)):
        bad = int(tf.size(valid)) - int(tf.math.count_nonzero(valid))
        raise SolveError(
            f"{bad} inverse camera(s) cannot be decomposed: P_hat must be finite with "
            "det(P_hat) > 0 (got a reflection, a singular or a non-finite matrix)"
        )
    eye = tf.eye(3, dtype=p_hat.dtype)
    p_hat = tf.where(valid[..., None, None], p_hat, eye)
    q_finite = tf.reduce_all(tf.math.is_finite(q_hat), axis=-1, keepdims=True)
    q_hat = tf.where(q_finite, q_hat, tf.zeros_like(q_hat))

    p = adjugate(p_hat) / det3(p_hat)[..., None, None]
    p1, p2, p3 = p[..., 0, :], p[..., 1, :], p[..., 2, :]

    psi = tf.norm(p3, axis=-1)
    r3 = p3 / psi[..., None]
    p2 = p2 / psi[..., None]
    p1 = p1 / psi[..., None]
    k5 = _dot(r3, p2)
    u2 = p2 - k5[..., None] * r3
    k4 = tf.norm(u2, axis=-1)
    r2 = u2 / k4[..., None]
    r1 = cross(r2, r3)
    k1, k2, k3 = _dot(r1, p1), _dot(r2, p1), _dot(r3, p1)

    zero, one = tf.zeros_like(k1), tf.ones_like(k1)
    K = tf.stack(
        [tf.stack([k1, k2, k3], -1), tf.stack([zero, k4, k5], -1), tf.stack([zero, zero, one], -1)],
        axis=-2,
    )
    R = tf.stack([r1, r2, r3], axis=-2)
    t = -tf.linalg.matvec(R, q_hat)
    return K, R, t, psi


def centred_intrinsics(focal_widths: float, image_width: tf.Tensor | int, batch_size: tf.Tensor | int) -> tf.Tensor:
    """Intrinsics of a natural camera for a square image: square pixels, no skew, the principal
    point at the image centre.

    Args:
        focal_widths: focal length in image widths.
        image_width: width (pixels) of the square image.
        batch_size: number of copies.

    Returns:
        ``(batch_size, 3, 3)`` float32 ``[[f, 0, w/2], [0, f, w/2], [0, 0, 1]]``, ``f = focal_widths w``
        (pixels; pixel centres at +0.5, so ``w/2`` is the centre).
    """
    width = tf.cast(image_width, tf.float32)
    focal, centre = focal_widths * width, width / 2.0
    K = tf.stack([tf.stack([focal, 0.0, centre]), tf.stack([0.0, focal, centre]), tf.constant([0.0, 0.0, 1.0])])
    return tf.tile(K[None], [batch_size, 1, 1])


def project(
    points: tf.Tensor, K: tf.Tensor, R: tf.Tensor, t: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Project model points to pixels: ``x = K (R X + t) / Z``.

    Args:
        points: ``(..., N, 3)`` float. Model-space points (mm).
        K: ``(..., 3, 3)`` float. Intrinsics, last row ``[0, 0, 1]``.
        R: ``(..., 3, 3)`` float.
        t: ``(..., 3)`` float.

    Returns:
        pixels: ``(..., N, 2)``. Pixel coordinates (x right, y down, centres at +0.5).
        depth: ``(..., N)``. Camera-space depth ``Z`` (mm); positive in front of the camera. Points
            with ``|Z| < tiny`` (the dtype's smallest normal number) are divided by ``±tiny``
            instead, so pixels are always finite; check ``depth > 0`` before trusting them.
    """
    points = tf.convert_to_tensor(points)
    K = tf.convert_to_tensor(K, dtype=points.dtype)
    R = tf.convert_to_tensor(R, dtype=points.dtype)
    t = tf.convert_to_tensor(t, dtype=points.dtype)
    camera = tf.linalg.matmul(points, R, transpose_b=True) + t[..., None, :]
    homogeneous = tf.linalg.matmul(camera, K, transpose_b=True)
    depth = camera[..., 2]
    tiny = np.finfo(points.dtype.as_numpy_dtype).tiny
    safe = tf.where(depth >= 0, tf.maximum(depth, tiny), tf.minimum(depth, -tiny))
    return homogeneous[..., :2] / safe[..., None], depth


def unproject(
    pixels: tf.Tensor, depth: tf.Tensor, K: tf.Tensor, R: tf.Tensor, t: tf.Tensor
) -> tf.Tensor:
    """Model points seen at ``pixels`` with camera depth ``depth``: ``X = R^T (Z K^-1 x - t)``.

    Args:
        pixels: ``(..., N, 2)`` float. Pixel coordinates.
        depth: ``(..., N)`` float. Camera-space depth ``Z`` (mm).
        K: ``(..., 3, 3)`` float. Upper-triangular intrinsics with positive diagonal.
        R: ``(..., 3, 3)`` float.
        t: ``(..., 3)`` float.

    Returns:
        points: ``(..., N, 3)``. Model-space points (mm).
    """
    pixels = tf.convert_to_tensor(pixels)
    depth = tf.convert_to_tensor(depth, dtype=pixels.dtype)
    K = tf.convert_to_tensor(K, dtype=pixels.dtype)
    R = tf.convert_to_tensor(R, dtype=pixels.dtype)
    t = tf.convert_to_tensor(t, dtype=pixels.dtype)
    homogeneous = tf.concat([pixels, tf.ones_like(pixels[..., :1])], axis=-1)
    rays = tf.linalg.matmul(homogeneous, upper_triangular_inverse(K), transpose_b=True)
    camera = depth[..., None] * rays - t[..., None, :]
    return tf.linalg.matmul(camera, R)


def camera_is_plausible(K: tf.Tensor, R: tf.Tensor, t: tf.Tensor, image_width: tf.Tensor | float) -> tf.Tensor:
    """Whether each camera could have taken a real photograph of the face.

    A camera is plausible when ``K``, ``R`` and ``t`` are finite and

    * both focal lengths ``k1, k4`` lie in [:data:`MIN_FOCAL_WIDTHS`, :data:`MAX_FOCAL_WIDTHS`]
      image widths;
    * the model origin lies in front of the camera at a depth ``t_z`` in
      [:data:`MIN_FACE_DEPTH_MM`, :data:`MAX_FACE_DEPTH_MM`] mm;
    * the camera centre ``c = -R^T t``, seen from the model origin, lies at most
      :data:`MAX_CAMERA_ELEVATION_DEGREES` above or below the face's horizontal plane
      (``|c_y| <= sin(max) |c|``) and at most :data:`MAX_CAMERA_AZIMUTH_DEGREES` around the
      head from straight ahead (``c_z >= cos(max) |(c_x, c_z)|``).

    The pose is judged from where the camera stands rather than from Euler angles, which are
    arbitrary at a profile view (gimbal lock); the roll of the camera is free (a photo may be
    rotated). Skew, aspect ratio and principal point are not judged. The placeholder camera of a
    failed decomposition (``K = R = I``) fails: a focal length of 1 pixel and a camera behind the
    head. Elementwise ops only (TFLite built-ins); batched over leading dimensions.

    Args:
        K: ``(..., 3, 3)`` intrinsics in pixels of an image ``image_width`` pixels wide.
        R: ``(..., 3, 3)`` rotation, model to camera space.
        t: ``(..., 3)`` translation (mm).
        image_width: width (pixels) of the image ``K`` refers to.

    Returns:
        ``(...)`` bool.
    """
    K = tf.convert_to_tensor(K)
    R = tf.convert_to_tensor(R, dtype=K.dtype)
    t = tf.convert_to_tensor(t, dtype=K.dtype)
    finite = tf.logical_and(
        tf.reduce_all(tf.math.is_finite(tf.concat([K, R], axis=-1)), axis=[-2, -1]),
        tf.reduce_all(tf.math.is_finite(t), axis=-1),
    )
    focal = tf.stack([K[..., 0, 0], K[..., 1, 1]], axis=-1) / tf.cast(image_width, K.dtype)
    focal_ok = tf.reduce_all(tf.logical_and(focal >= MIN_FOCAL_WIDTHS, focal <= MAX_FOCAL_WIDTHS), axis=-1)
    depth_ok = tf.logical_and(t[..., 2] >= MIN_FACE_DEPTH_MM, t[..., 2] <= MAX_FACE_DEPTH_MM)
    centre = -tf.linalg.matvec(R, t, transpose_a=True)
    c_x, c_y, c_z = centre[..., 0], centre[..., 1], centre[..., 2]
    elevation_ok = tf.abs(c_y) <= math.sin(math.radians(MAX_CAMERA_ELEVATION_DEGREES)) * tf.norm(centre, axis=-1)
    azimuth_ok = c_z >= math.cos(math.radians(MAX_CAMERA_AZIMUTH_DEGREES)) * tf.sqrt(c_x * c_x + c_z * c_z)
    pose_ok = tf.logical_and(elevation_ok, azimuth_ok)
    return tf.logical_and(tf.logical_and(finite, focal_ok), tf.logical_and(depth_ok, pose_ok))


def random_cameras(num: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random cameras spanning the range the least squares may meet, for tests and tools.

    Focal length k1 uniform in [100, 3000] px with aspect k4 / k1 in [0.7, 1.4], skew k2
    within +-0.1 k1, principal point (k3, k5) in [-200, 600] px, rotation uniform (normalised
    Gaussian quaternion), translation ``N(0, 100^2)`` mm per axis plus 600 mm along z, and
    ``psi`` log-uniform in [1e-3, 1e3].

    Returns:
        K, R, t, psi: float64 NumPy arrays ``(num, 3, 3)``, ``(num, 3, 3)``, ``(num, 3)`` and
            ``(num,)``.
    """
    rng = np.random.default_rng(seed)
    f = rng.uniform(100, 3000, num)
    K = np.zeros((num, 3, 3))
    K[:, 0, 0] = f
    K[:, 1, 1] = f * rng.uniform(0.7, 1.4, num)
    K[:, 0, 1] = rng.uniform(-0.1, 0.1, num) * f
    K[:, 0, 2] = rng.uniform(-200, 600, num)
    K[:, 1, 2] = rng.uniform(-200, 600, num)
    K[:, 2, 2] = 1
    w, x, y, z = rng.normal(size=(4, num))
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    R = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )
    t = rng.normal(size=(num, 3)) * 100 + np.array([0.0, 0.0, 600.0])
    psi = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), num))
    return K, R, t, psi
