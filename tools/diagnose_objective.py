"""Objective-level diagnostics of the unsupervised training loss on synthetic data with ground truth.

Feeds FaceModel's loss path (sampling -> geometric solve -> photometric solve -> losses) maps built
from the ground truth instead of the U-Net output, perturbs them, and compares with the degenerate
output training drifts to (one frontal face, confidence 1 everywhere). Prints

1. the loss terms for GT maps, perturbations, degenerate maps and the real networks;
2. the photometric residual at GT under variants of the photometric solve (which ingredient
   makes it large: softplus image, fitted vs GT normals, priors, albedo basis truncation);
3. the cosine between the descent direction of the loss w.r.t. the correspondence map and the
   direction back to the GT correspondence.

Usage::

    python3 tools/diagnose_objective.py --workdir runs/small

(``--workdir`` is a ``tfface train``/``demo`` run folder; ``--uv``, ``--data``, ``--config``,
``--pretrained`` and ``--trained`` override its files one by one.)
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfface.data.synthetic import FRONTAL, SynthesisConfig, SyntheticFaces  # noqa: E402
from tfface.layers.photometric import sample_normals, solve_photometry  # noqa: E402
from tfface.layers.pixel_sampling import gather_pixels  # noqa: E402
from tfface.model import face_confidence  # noqa: E402
from tfface.morphable.uv3dmm import UVMorphableModel  # noqa: E402
from tfface.training import data, loop  # noqa: E402
from tfface.training.config import load_config  # noqa: E402
from tfface.training.evaluation import filled_depth, stack_maps  # noqa: E402


def roll(array, dx, dy):
    return np.roll(np.roll(array, dy, axis=1), dx, axis=2)


def rotate_about_centroid(array, mask, degrees):
    """Nearest-neighbour image-plane rotation of per-pixel maps about each face's centroid."""
    out = np.zeros_like(array)
    size = array.shape[1]
    rows, cols = np.mgrid[0:size, 0:size]
    angle = np.deg2rad(degrees)
    for b in range(len(array)):
        cy, cx = [np.sum(g * mask[b]) / mask[b].sum() for g in (rows, cols)]
        # Inverse map: output pixel p reads input pixel R^-1 (p - c) + c.
        sy = np.cos(angle) * (rows - cy) - np.sin(angle) * (cols - cx) + cy
        sx = np.sin(angle) * (rows - cy) + np.cos(angle) * (cols - cx) + cx
        sy, sx = np.clip(np.rint(sy), 0, size - 1).astype(int), np.clip(np.rint(sx), 0, size - 1).astype(int)
        out[b] = array[b][sy, sx]
    return out


def frontal_mean_faces(uv_full, batch, K, centres_cam):
    """Render the mean face frontally with camera ``K`` and the face centre at ``centres_cam``
    (B, 3) camera coordinates; returns correspondence, depth (mm) and mask."""
    size = batch["image"].shape[1]
    faces = SyntheticFaces(uv_full, SynthesisConfig(image_size=size))
    ks, ke, kr = faces.sizes
    n = len(K)
    centre = faces._centre.numpy()
    params = {
        "shape_coefficients": tf.zeros([n, ks]), "expression_coefficients": tf.zeros([n, ke]),
        "albedo_coefficients": tf.zeros([n, kr]),
        "lighting": tf.constant(np.tile(np.eye(9, 3, dtype=np.float32)[None] * 3.0, [n, 1, 1])),
        "K": tf.constant(K, tf.float32), "R": tf.constant(np.tile(FRONTAL[None], [n, 1, 1])),
        "t": tf.constant(centres_cam - centre @ FRONTAL.T, tf.float32),
        "texture_seed": tf.zeros([n, 2], tf.int64),
    }
    out = faces.render(params)
    return out["correspondence"].numpy(), out["depth"].numpy(), out["mask"].numpy()


# ---------------------------------------------------------------------------- losses
def evaluate(model, images, maps):
    """Loss terms of ``maps`` (mean over the batch) through FaceModel's loss path, and ``failed``:
    the images whose fit is not valid (``fit_valid`` 0), whose loss terms are in the means."""
    cfg = model.config
    # In a compiled function, as in training: a degenerate fit then gets a finite placeholder
    # camera instead of raising (see decompose_inverse_camera); it is counted in ``failed`` and
    # its loss, which training would see, is reported.
    fit = tf.function(model.fit_maps)(images, tf.constant(maps))
    terms = model.losses_of(fit)
    conf_g, conf_p, valid = fit["geometric_confidence"], fit["photometric_confidence"], fit["valid"]
    rg = tf.norm(fit["geometric_residual"], axis=-1)
    rp = tf.norm(fit["photometric_residual"], axis=-1)

    def weighted_rms(r, w):
        return float(tf.reduce_mean(tf.sqrt(tf.reduce_sum(w * r ** 2, -1) / tf.maximum(tf.reduce_sum(w, -1), 1e-9))))

    return {
        "loss": float(tf.reduce_mean(terms["loss"])),
        "geo": float(tf.reduce_mean(terms["geometric"])) / cfg.tau_geometric ** 2,
        "photo": cfg.photometric_weight * float(tf.reduce_mean(terms["photometric"])) / cfg.tau_photometric ** 2,
        "stat": cfg.stat_weight * float(tf.reduce_mean(terms["statistical"])) / model.num_coefficients,
        "rms_g_mm": weighted_rms(rg, conf_g * valid),
        "rms_p": weighted_rms(rp, conf_p * valid),
        "in_g": float(tf.reduce_mean(valid * tf.cast(rg < cfg.tau_geometric, tf.float32))),
        "in_p": float(tf.reduce_mean(valid * tf.cast(rp < cfg.tau_photometric, tf.float32))),
        "valid": float(tf.reduce_mean(valid)),
        "failed": float(tf.reduce_sum(1.0 - model.outputs_of(fit)["fit_valid"])),
    }


COLUMNS = ("loss", "geo", "photo", "stat", "rms_g_mm", "rms_p", "in_g", "in_p", "valid", "failed")


def print_table(title, rows):
    print(f"\n{title}")
    print(f"{'case':<44}" + "".join(f"{c:>10}" for c in COLUMNS))
    for name, row in rows:
        print(f"{name:<44}" + "".join(f"{row[c]:>10.4f}" for c in COLUMNS))


# ---------------------------------------------------------------------------- photometric at GT
def photometric_variants(model, uv_full, batch, maps):
    """RMS photometric residual (albedo units) at GT correspondence under solve variants."""
    cfg = model.config
    images = tf.constant(batch["image"])
    indices = model.sampler(face_confidence(maps))  # the model's own sampling rule
    weights = gather_pixels(maps[..., 3:4], indices)[..., 0]
    uv = gather_pixels(maps[..., 0:2], indices)
    raw = gather_pixels(images, indices)
    soft = gather_pixels(model.preprocessing(images), indices)
    trunc = model.uv_sampling(uv)
    full = uv_full.sample(uv)
    fit = model.fit_maps(images, maps)  # fitted normals as in training
    # Model's fitted normals at these samples (fit used its own samples: recompute on ours).
    fitted_normals = sample_normals(fit["vertices"], model._triangles, trunc.vertex_ids, trunc.barycentrics, fit["R"])
    m = uv_full.model
    coef = np.concatenate([batch["shape_coefficients"], batch["expression_coefficients"]], -1)
    basis = np.concatenate([m.shape_basis, m.expression_basis]).reshape(len(coef[0]), -1)
    gt_vertices = tf.constant((m.mean.reshape(-1) + coef @ basis).reshape(len(coef), -1, 3), tf.float32)
    gt_normals = sample_normals(gt_vertices, tf.constant(m.triangles), full.vertex_ids, full.barycentrics,
                                tf.constant(batch["R"]))
    weights = weights * trunc.valid
    # Oracle: GT albedo (clipped, as rendered) vs. best inverse-SH fit with GT normals and raw colour.
    gt_albedo_vertices = np.clip(m.albedo_mean.reshape(-1) + batch["albedo_coefficients"] @ m.albedo_basis.reshape(
        m.num_albedo, -1), 0.0, 1.0).reshape(len(coef), -1, 3)
    gt_albedo = tf.reduce_sum(tf.gather(tf.constant(gt_albedo_vertices, tf.float32), full.vertex_ids, batch_dims=1)
                              * full.barycentrics[..., None], -2)

    def rms(colours, normals, sample, light_w, albedo_w, prior="neutral", fixed_albedo=None):
        if fixed_albedo is not None:  # albedo known: only lighting free (a zero-mode basis is not allowed)
            mean, basis_ = fixed_albedo, tf.zeros_like(sample.albedo_basis[..., :1])
            kw = tf.fill([1], 1e6)
        else:
            mean, basis_ = sample.albedo_mean, sample.albedo_basis
            kw = tf.fill([basis_.shape[-1]], float(albedo_w))
        out = solve_photometry(colours, normals, weights, mean, basis_, kw, light_w, prior)
        r = tf.norm(out["residual"], axis=-1)
        per = tf.sqrt(tf.reduce_sum(weights * r ** 2, -1) / tf.reduce_sum(weights, -1))
        inl = tf.reduce_sum(weights * tf.cast(r < cfg.tau_photometric, tf.float32), -1) / tf.reduce_sum(weights, -1)
        return float(tf.reduce_mean(per)), float(tf.reduce_mean(inl))

    lw, aw = cfg.lighting_weight, cfg.albedo_weight
    cases = [
        ("as trained: softplus, fitted n, Kr=20, priors", rms(soft, fitted_normals, trunc, lw, aw)),
        ("raw image instead of softplus", rms(raw, fitted_normals, trunc, lw, aw)),
        ("GT normals instead of fitted", rms(soft, gt_normals, trunc, lw, aw)),
        ("fitted normals negated", rms(soft, -fitted_normals, trunc, lw, aw)),
        ("weak priors (xi=gamma2=1e-3)", rms(soft, fitted_normals, trunc, 1e-3, 1e-3)),
        ("weak lighting prior only (xi=1e-3)", rms(soft, fitted_normals, trunc, 1e-3, aw)),
        ("weak albedo prior only (gamma2=1e-3)", rms(soft, fitted_normals, trunc, lw, 1e-3)),
        ("full albedo basis (Kr=40)", rms(soft, fitted_normals, full, lw, aw)),
        ("lighting prior 'zero' (eq. 40)", rms(soft, fitted_normals, trunc, lw, aw, "zero")),
        ("raw + GT n + weak priors + Kr=40", rms(raw, gt_normals, full, 1e-3, 1e-3)),
        ("oracle: raw, GT n, GT albedo, light free", rms(raw, gt_normals, full, 1e-3, 0, fixed_albedo=gt_albedo)),
        ("oracle but softplus image", rms(soft, gt_normals, full, 1e-3, 0, fixed_albedo=gt_albedo)),
    ]
    print("\nPhotometric residual at GT correspondence (conf = mask), albedo units; tau_p =", cfg.tau_photometric)
    print(f"{'variant':<44}{'rms':>10}{'inliers':>10}")
    for name, (value, inl) in cases:
        print(f"{name:<44}{value:>10.4f}{inl:>10.4f}")


# ---------------------------------------------------------------------------- gradients
def gradient_cosines(model, images, perturbed, gt_uv, mask):
    """Cosine of -d(loss)/d(uv) with (gt - perturbed) over face pixels that received gradient."""
    cfg = model.config
    maps = tf.Variable(perturbed)
    with tf.GradientTape(persistent=True) as tape:
        fit = model.fit_maps(images, maps)
        terms = model.losses_of(fit)
        photo = tf.reduce_mean(cfg.photometric_weight * terms["photometric"] / cfg.tau_photometric ** 2)
        geo = tf.reduce_mean(terms["geometric"]) / cfg.tau_geometric ** 2
        total = tf.reduce_mean(terms["loss"])
    mask = mask * perturbed.numpy()[..., 3]
    direction = (gt_uv - perturbed.numpy()[..., 0:2]) * mask[..., None]
    out = {}
    for name, value in (("photo", photo), ("geo", geo), ("total", total)):
        grad = tape.gradient(value, maps)
        g = -grad.numpy()[..., 0:2] * mask[..., None]
        cos = [float(np.sum(g[b] * direction[b]) / (np.linalg.norm(g[b]) * np.linalg.norm(direction[b]) + 1e-30))
               for b in range(len(g))]
        out[name] = (float(np.mean(cos)), float(np.min(cos)), float(np.max(cos)))
    return out


def loss_along(model, images, perturbed, gt_uv, steps=(0.0, 0.25, 0.5, 0.75, 1.0)):
    """Photometric and total loss at ``perturbed + s (GT - perturbed)`` in the uv channels."""
    cfg = model.config
    base = perturbed.numpy()
    values = []
    for step in steps:
        maps = base.copy()
        maps[..., 0:2] += step * (gt_uv - base[..., 0:2])
        terms = model.losses_of(model.fit_maps(images, tf.constant(maps)))
        values.append((float(tf.reduce_mean(cfg.photometric_weight * terms["photometric"] / cfg.tau_photometric ** 2)),
                       float(tf.reduce_mean(terms["loss"]))))
    return steps, values


# ---------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/small", help="run folder of tfface train/demo")
    parser.add_argument("--uv", default=None, help="UV-3DMM file (default: <workdir>/uv3dmm.npz)")
    parser.add_argument("--data", default=None, help="synthetic TFRecords (default: <workdir>/data)")
    parser.add_argument("--config", default=None, help="training config (default: <workdir>/config.json)")
    parser.add_argument("--pretrained", default=None,
                        help="pretrained U-Net weights (default: <workdir>/pretrain/unet.weights.h5)")
    parser.add_argument("--trained", default=None,
                        help="trained model weights (default: <workdir>/train/final.weights.h5)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--translation-weight", type=float, default=None,
                        help="rho of the geometric solve (default: the config's initial value)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a training-config field (JSON value), e.g. --set stat_weight=0.0001")
    parser.add_argument("--trained-state", action="store_true",
                        help="use the trained run's adaptive weights and rho (end of training) for every case")
    args = parser.parse_args()
    defaults = {"uv": "uv3dmm.npz", "data": "data", "config": "config.json",
                "pretrained": "pretrain/unet.weights.h5", "trained": "train/final.weights.h5"}
    for key, name in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, os.path.join(args.workdir, name))

    config = load_config(args.config)
    overrides = dict(item.split("=", 1) for item in args.set)
    config = config.replace(**{key: json.loads(value) for key, value in overrides.items()})
    uv_full = UVMorphableModel.load(args.uv)
    model = loop.build_model(args.uv, config)
    if args.trained_state:
        other = loop.build_model(args.uv, config)
        other.load_weights(args.trained)
        for mine, theirs in zip(model.regularizer.variables, other.regularizer.variables):
            mine.assign(theirs)
        model.geometric.translation_weight.assign(other.geometric.translation_weight)
    if args.translation_weight is not None:
        model.geometric.translation_weight.assign(args.translation_weight)
    batch = {k: v.numpy() for k, v in next(iter(data.heldout_batches(args.data, args.batch))).items()}
    images = tf.constant(batch["image"])
    mask = batch["mask"].astype(np.float32)
    gt_uv = batch["correspondence"]
    depth = filled_depth(batch["depth"], mask)
    n, size = len(mask), mask.shape[1]
    ones = np.ones_like(mask)
    print(f"overrides {overrides or 'none'}; config {config.name}: tau_g={config.tau_geometric} mm, tau_p={config.tau_photometric}, "
          f"photometric_weight={config.photometric_weight}, rho={float(model.geometric.translation_weight):g}, "
          f"batch {n}, face area {mask.mean():.3f} of the image")

    gt = stack_maps(gt_uv, depth, mask)
    # Frontal mean face at each GT face's position and distance (same K): the "mean-face correspondence".
    centres = np.einsum("bij,j->bi", batch["R"], SyntheticFaces(uv_full)._centre.numpy()) + batch["t"]
    fr_uv, fr_depth, fr_mask = frontal_mean_faces(uv_full, batch, batch["K"], centres)
    # One fixed frontal face for every input: image centre, focal 2S; "big" fills the image.
    fixed_k = np.tile(np.array([[2.0 * size, 0, size / 2], [0, 2.0 * size, size / 2], [0, 0, 1]], np.float32), [n, 1, 1])
    face_size = float(np.ptp(uv_full.model.mean[:, :2], axis=0).max())
    fixed = [frontal_mean_faces(uv_full, batch, fixed_k, np.tile([[0.0, 0.0, 2.0 * face_size / f]], [n, 1]))
             for f in (0.6, 1.3)]
    inside = np.where(fr_mask[..., None] > 0, fr_uv, gt_uv)

    # Moved correspondences keep GT depth; confidence only where the moved map still holds face
    # correspondences (pixels moved in from the background would carry uv = (0, 0), a valid corner
    # of the UV square, and wreck the geometric fit).
    def shifted(px):
        return stack_maps(roll(gt_uv, px, 0), depth, mask * roll(mask, px, 0))

    def rotated(deg):
        return stack_maps(rotate_about_centroid(gt_uv, mask, deg), depth, mask * rotate_about_centroid(mask, mask, deg))

    cases = [
        ("GT (conf = mask)", gt),
        ("GT, conf = 1 everywhere", stack_maps(gt_uv, depth, ones)),
        ("GT corr, depth = 1.2 x GT (scaled)", stack_maps(gt_uv, depth * 1.2, mask)),
        ("GT corr, constant depth (planar)", stack_maps(gt_uv, np.where(mask > 0, depth.mean(), depth), mask)),
    ]
    for px in (2, 4, 8):
        cases.append((f"corr shifted {px} px (depth GT)", shifted(px)))
    cases.append(("all maps shifted 8 px (consistent)",
                  stack_maps(roll(gt_uv, 8, 0), roll(depth, 8, 0), roll(mask, 8, 0))))
    for deg in (5, 15):
        cases.append((f"corr rotated {deg} deg (depth GT)", rotated(deg)))
    cases.append(("all maps rotated 15 deg (consistent)",
                  stack_maps(*(rotate_about_centroid(a, mask, 15) for a in (gt_uv, depth, mask)))))
    for a in (0.25, 0.5, 1.0):
        cases.append((f"corr {1 - a:.2f} GT + {a:.2f} frontal mean", stack_maps((1 - a) * gt_uv + a * inside, depth, mask)))
    cases.append(("frontal mean face at GT place (own maps)",
                  stack_maps(fr_uv, filled_depth(fr_depth, fr_mask), fr_mask)))
    for (uv_, d_, m_), label in zip(fixed, ("face", "image-filling face")):
        cases.append((f"DEGENERATE fixed frontal {label}, conf=1", stack_maps(uv_, filled_depth(d_, m_), ones)))
        cases.append((f"fixed frontal {label}, conf = its mask", stack_maps(uv_, filled_depth(d_, m_), m_)))

    rows = [(name, evaluate(model, images, maps)) for name, maps in cases]
    for label, path, unet_only in (("pretrained network output", args.pretrained, True),
                                   ("trained network output", args.trained, False)):
        if path and os.path.exists(path):
            if unet_only:
                model.unet.load_weights(path)
            else:
                other = loop.build_model(args.uv, config)
                other.load_weights(path)
                model.unet.set_weights(other.unet.get_weights())
            rows.append((label, evaluate(model, images, model.predict_maps(images))))
    print_table("Loss terms (batch means; loss = geo + photo + stat; rms over confident valid samples; "
                "in_* = inlier share of all samples)", rows)

    photometric_variants(model, uv_full, batch, gt)

    print("\nGradient check: cosine of -dL/d(uv) with (GT uv - perturbed uv) on face pixels (mean, min, max over images)")
    for name, perturbed in (("corr shifted 4 px", shifted(4)),
                            ("corr 0.5 GT + 0.5 frontal mean", stack_maps(0.5 * gt_uv + 0.5 * inside, depth, mask)),
                            ("corr rotated 5 deg", rotated(5))):
        cos = gradient_cosines(model, images, perturbed, gt_uv, mask)
        print(f"  {name:<34}" + "  ".join(f"{k} {v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]" for k, v in cos.items()))
        steps, values = loss_along(model, images, perturbed, gt_uv)
        print(f"    along the line to GT (step: photo/total) " + "  ".join(
            f"{st:.2f}: {ph:.3f}/{tot:.3f}" for st, (ph, tot) in zip(steps, values)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
