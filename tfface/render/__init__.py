"""Pure-TensorFlow rendering: :mod:`~tfface.render.rasterizer` (batched z-buffer, triangle ids,
differentiable perspective-correct barycentrics) and :mod:`~tfface.render.shader` (albedo x SH
shading, background compositing)."""
