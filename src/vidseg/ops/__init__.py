"""Matching and fusion ops for FEELVOS and VPSNet: one API, several exact implementations.

- :func:`global_matching` (B, N, H, W): FEELVOS distance to the nearest reference pixel of each object.
- :func:`local_matching` (B, N, H, W): the same within a (2k+1)^2 window of the previous frame.
- :func:`correlation` (B, (2r+1)^2, H, W): cost volume for flow refinement.
- :func:`flow_warp` (B, C, H, W): backward warping by optical flow (F.grid_sample).
- :func:`deform_conv2d` (B, O, H, W): deformable convolution (VPSNet's semantic head); torchvision's kernel, or
  on CPU an exact grid_sample + matmul path (``vidseg.ops.deform_conv``).

``impl`` selects the path: "reference" (plain loops, obviously correct), "cpu" (tiled matmul in
PyTorch; runs on any device), "triton" (fused CUDA kernels; CPU tensors under TRITON_INTERPRET=1),
or "auto" ("triton" for CUDA fp16/bf16/fp32 tensors, else "cpu"). All paths return the same values
(exact fp32 distances of the arg-min pair) and the same gradients, and none materialises the pair
matrix or the window stack. The matching and correlation ops are torch custom ops
(``torch.ops.vidseg.*``), so torch.compile keeps them as single calls.
"""

from vidseg.ops.correlation import correlation
from vidseg.ops.deform_conv import deform_conv2d
from vidseg.ops.matching import global_matching, local_matching
from vidseg.ops.warp import flow_warp

__all__ = ["correlation", "deform_conv2d", "flow_warp", "global_matching", "local_matching"]
