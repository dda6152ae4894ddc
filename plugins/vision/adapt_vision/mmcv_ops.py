"""Compiled mmcv ops from torchvision, for installs with mmcv-lite (no compiled ``mmcv._ext``).

OpenMMLab ships compiled mmcv wheels only on its own site, and building mmcv from source takes
about an hour; mmcv-lite has the same Python code without ``mmcv._ext``. :func:`install` puts
this module in its place when no compiled mmcv is importable. It provides what the supported
model families call (nms, and through it batched nms; roi_align forward and backward, average
mode) with torchvision's ops, which compute the same thing; multi-scale deformable attention
takes mmcv's own PyTorch path on every device; every other op raises an error that names it and
says what to install.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import torch

PROVIDED = ("nms", "roi_align_forward", "roi_align_backward")


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0) -> torch.Tensor:
    """Indices of the boxes kept, by decreasing score (mmcv's ``nms``)."""
    from torchvision.ops import nms as tv_nms

    if offset:  # mmcv's legacy mode: boxes include their last pixel
        boxes = boxes.clone()
        boxes[:, 2:] += offset
    return tv_nms(boxes.float(), scores.float(), float(iou_threshold))


def _roi_align(features: torch.Tensor, rois: torch.Tensor, height: int, width: int, spatial_scale: float,
               sampling_ratio: int, pool_mode: int, aligned: bool) -> torch.Tensor:
    from torchvision.ops import roi_align

    if pool_mode == 0:
        raise NotImplementedError("roi_align with pool_mode='max' needs the compiled mmcv (torchvision's roi_align "
                                  "averages); use pool_mode='avg' or install mmcv built for this torch")
    return roi_align(features, rois.to(features.dtype), (height, width), spatial_scale,
                     sampling_ratio if sampling_ratio > 0 else -1, aligned)


def roi_align_forward(features: torch.Tensor, rois: torch.Tensor, output: torch.Tensor, argmax_y: torch.Tensor,
                      argmax_x: torch.Tensor, *, aligned_height: int, aligned_width: int, spatial_scale: float,
                      sampling_ratio: int, pool_mode: int, aligned: bool) -> None:
    """Fill ``output`` with the pooled features of each RoI (mmcv writes into its arguments)."""
    with torch.no_grad():
        output.copy_(_roi_align(features, rois, aligned_height, aligned_width, spatial_scale, sampling_ratio,
                                pool_mode, aligned))


def roi_align_backward(grad_output: torch.Tensor, rois: torch.Tensor, argmax_y: torch.Tensor,
                       argmax_x: torch.Tensor, grad_input: torch.Tensor, *, aligned_height: int, aligned_width: int,
                       spatial_scale: float, sampling_ratio: int, pool_mode: int, aligned: bool) -> None:
    """Fill ``grad_input``: average RoI align is linear in its input, so its gradient is the
    vector-Jacobian product of torchvision's op taken at any input of the right shape."""
    with torch.enable_grad():
        probe = torch.zeros_like(grad_input, requires_grad=True)
        pooled = _roi_align(probe, rois, aligned_height, aligned_width, spatial_scale, sampling_ratio,
                            pool_mode, aligned)
        (grad,) = torch.autograd.grad(pooled, probe, grad_output)
    grad_input.copy_(grad)


class _Ext(ModuleType):
    """``mmcv._ext`` made of the functions above; any other op is an error naming it."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError(
                f"the mmcv op {name!r} is compiled code: this install has mmcv-lite, and adapt-vision provides only "
                f"{', '.join(PROVIDED)} from torchvision. Install a compiled mmcv 2.x built for torch "
                f"{torch.__version__} (pip install mmcv, or OpenMMLab's wheels) to use this model")

        return missing


def install() -> bool:
    """Use the compiled mmcv when it imports; else register this provider. True if installed."""
    if "mmcv._ext" in sys.modules:
        return isinstance(sys.modules["mmcv._ext"], _Ext)
    try:
        import mmcv._ext  # noqa: F401
        return False
    except ImportError:
        pass
    import importlib.machinery

    ext = _Ext("mmcv._ext", __doc__)
    ext.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", None)  # no loader: "mmcv-full" stays unavailable
    for name in PROVIDED:
        setattr(ext, name, globals()[name])
    sys.modules["mmcv._ext"] = ext
    # multi-scale deformable attention (Deformable DETR, DINO, Mask2Former) has a PyTorch path
    # (grid_sample) that mmcv takes off CUDA: take it on CUDA too, instead of the compiled op
    from mmcv.ops import multi_scale_deform_attn

    multi_scale_deform_attn.IS_CUDA_AVAILABLE = False
    return True
