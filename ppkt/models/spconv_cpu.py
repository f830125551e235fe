"""Make spconv 2.x usable and exact on CPU; the one place ppkt imports ``spconv.pytorch``.

Use ``from ppkt.models.spconv_cpu import spconv`` instead of ``import spconv.pytorch as spconv``.
Importing this module applies :func:`apply_spconv_cpu_patch` once. It fixes two bugs of spconv 2.3.8
on CPU (both measured; tests/models/test_spconv_cpu.py fails without the patch):

1. ``spconv.pytorch.ops.indice_conv_backward`` calls ``get_current_stream()``, i.e.
   ``torch.cuda.current_stream()``, unconditionally; without an NVIDIA driver that raises.
   The patched getter returns stream 0 when CUDA is not usable and defers to spconv otherwise.
2. The CPU gather-GEMM-scatter path of ``indice_conv`` / ``indice_conv_backward`` adds the per-offset
   results into the output with ``SpconvOps.scatter_add_cpu``, whose OpenMP loop races: with 2 threads
   a convolution differs from dense ``conv3d`` by up to ~0.5. The patch swaps the ``SpconvOps`` name
   inside ``spconv.pytorch.ops`` for a proxy whose ``scatter_add_cpu`` is a torch ``index_put_``
   (accumulate, serial) / ``index_add_`` on zero-copy views of the same memory (deterministic,
   race-free); every other attribute is forwarded unchanged. ``gather_cpu`` (correct, but run on
   spconv's own bundled libgomp) is done with ``torch.index_select`` too, so the conv loop stays in
   torch's OpenMP runtime instead of alternating between two (about 10% faster for SR-UNet34).

Which path runs on CPU: the CPU-only spconv build forces ``ConvAlgo.Native`` for every layer
(SubMConv3d, SparseConv3d, SparseInverseConv3d), and with no C++ GEMM available the Native algorithm
runs the Python gather-GEMM-scatter loop in ``spconv/pytorch/ops.py`` -- the patched path. A CUDA
build on a machine without a usable GPU would default to implicit GEMM (no CPU kernel), so layers
should pass ``algo=default_conv_algo()``, which gives ``ConvAlgo.Native`` there and spconv's own
default wherever CUDA is usable. Tensors on CUDA never reach the patched code. (Untested here: CPU
tensors under a CUDA build of spconv take spconv's C++ GEMM path, which this patch does not touch.)
"""

from __future__ import annotations

import logging
import sys

import torch

import spconv.pytorch as spconv  # re-exported: the one way ppkt imports spconv
import spconv.pytorch.cppcore as _cppcore
import spconv.pytorch.ops as _ops
from spconv.core import ConvAlgo
from spconv.cppconstants import CPU_ONLY_BUILD

__all__ = ["spconv", "apply_spconv_cpu_patch", "default_conv_algo", "patch_applied", "CPU_ONLY_BUILD"]

# spconv's originals (looked through our own wrappers, so a module reload cannot stack patches)
_ORIG_GET_CURRENT_STREAM = getattr(_cppcore.get_current_stream, "_ppkt_original", _cppcore.get_current_stream)
_ORIG_SPCONV_OPS = getattr(_ops.SpconvOps, "_ppkt_original", _ops.SpconvOps)


class _FxTracingWarningFilter(logging.Filter):
    """Drops torch.fx's "is_fx_tracing will return true for both fx.symbolic_trace and torch.export ..." warning.

    Why: spconv's ``SparseConvTensor`` has torch.fx's ``ProxyableClassMeta`` as its metaclass, whose ``__call__``
    runs ``torch.fx._symbolic_trace.is_fx_tracing()`` on every construction; that function logs this warning
    (once per process, through the logger "torch.fx._symbolic_trace"), so every ppkt command printed it although
    nothing is ever traced. Any other message of that logger passes.
    """

    ppkt_fx_tracing = True  # marks it, so a module reload does not add a second one

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("is_fx_tracing will return true")


def _silence_fx_tracing_warning() -> None:
    logger = logging.getLogger("torch.fx._symbolic_trace")
    if not any(getattr(f, "ppkt_fx_tracing", False) for f in logger.filters):
        logger.addFilter(_FxTracingWarningFilter())


def _cuda_usable() -> bool:
    return torch.cuda.is_available()


def _safe_get_current_stream() -> int:
    """CUDA stream handle of the current device, or 0 (the null stream) when CUDA is not usable."""
    if not _cuda_usable():
        return 0
    return _ORIG_GET_CURRENT_STREAM()


_safe_get_current_stream._ppkt_original = _ORIG_GET_CURRENT_STREAM


_SERIAL_SCATTER_MAX_NUMEL = 1 << 17


def _tv_as_torch(t) -> torch.Tensor:
    """Zero-copy torch view of a CPU ``cumm.tensorview.Tensor`` (via its numpy view)."""
    return torch.from_numpy(t.numpy_view())


class _SpconvOpsProxy:
    """Stands in for ``SpconvOps`` inside ``spconv.pytorch.ops``; ``gather_cpu``/``scatter_add_cpu`` differ."""

    def __init__(self, ops):
        self._ppkt_original = ops

    def __getattr__(self, name):
        return getattr(self._ppkt_original, name)

    @staticmethod
    def gather_cpu(buf_tv, inp_tv, idx_tv) -> None:
        """``buf[j] = inp[idx[j]]`` for ``j < len(idx)``, in place (torch instead of spconv's OpenMP)."""
        idx = _tv_as_torch(idx_tv)
        if idx.numel() == 0:
            return
        buf = _tv_as_torch(buf_tv)[: idx.shape[0]]
        torch.index_select(_tv_as_torch(inp_tv), 0, idx.long(), out=buf)

    @staticmethod
    def scatter_add_cpu(out_tv, buf_tv, idx_tv) -> None:
        """``out[idx[j]] += buf[j]`` for ``j < len(idx)``, in place, deterministic.

        ``buf`` is a work buffer with at least ``len(idx)`` rows; rows past ``len(idx)`` are stale.
        """
        idx = _tv_as_torch(idx_tv)
        if idx.numel() == 0:
            return
        out = _tv_as_torch(out_tv)
        buf = _tv_as_torch(buf_tv)[: idx.shape[0]]
        if buf.numel() < _SERIAL_SCATTER_MAX_NUMEL:
            # serial kernel on CPU: no OpenMP fork/join, which dominates for small blocks (and costs
            # milliseconds per call when the cores are busy with other processes)
            out.index_put_((idx.long(),), buf, accumulate=True)
        else:
            out.index_add_(0, idx.long(), buf)


def patch_applied() -> bool:
    """True once :func:`apply_spconv_cpu_patch` has run in this process."""
    return isinstance(_ops.SpconvOps, _SpconvOpsProxy) and _ops.get_current_stream is _safe_get_current_stream


def apply_spconv_cpu_patch() -> None:
    """Patch spconv for CPU use (idempotent). GPU tensors are unaffected. See module docstring."""
    _cppcore.get_current_stream = _safe_get_current_stream
    for name, module in list(sys.modules.items()):
        # every spconv module that did ``from spconv.pytorch.cppcore import get_current_stream``
        getter = getattr(module, "get_current_stream", None) if name.startswith("spconv") else None
        if getter is not None and getattr(getter, "_ppkt_original", getter) is _ORIG_GET_CURRENT_STREAM:
            module.get_current_stream = _safe_get_current_stream
    if not isinstance(_ops.SpconvOps, _SpconvOpsProxy):
        _ops.SpconvOps = _SpconvOpsProxy(_ORIG_SPCONV_OPS)


def default_conv_algo() -> ConvAlgo | None:
    """Conv algorithm for ppkt's sparse layers: ``ConvAlgo.Native`` without usable CUDA (the only
    algorithm with a CPU kernel, and the patched path), else ``None`` (spconv's own default)."""
    if CPU_ONLY_BUILD or not _cuda_usable():
        return ConvAlgo.Native
    return None


apply_spconv_cpu_patch()
_silence_fx_tracing_warning()
