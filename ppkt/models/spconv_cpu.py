"""Make spconv 2.x usable, exact and fast on CPU; the one place ppkt imports ``spconv.pytorch``.

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

and replaces how the CPU computes (3):

3. ``spconv.pytorch.ops.indice_conv`` / ``indice_conv_backward`` are wrapped: CPU float32/float64
   tensors (without fused bias or activation, which ppkt never asks for) go to
   :mod:`ppkt.models.spconv_gemm` -- the "gemm" path: chunked gathers, one product per kernel offset
   and chunk, an ``embedding_bag`` gather-sum instead of the scatter-add, threads over chunks, index
   tables cached per rulebook; everything else (CUDA tensors, half precision) goes to spconv's
   function unchanged. The backward of SubMConvFunction / SparseConvFunction /
   SparseInverseConvFunction is wrapped only to tell the gemm path whether the input gradient is
   needed (the stem's is not: its input is the voxel colours). Forward and gradients equal dense
   ``conv3d`` to 1e-10 in float64 on both paths, with 1 and 2 threads (tests/models/test_spconv_cpu.py).
   The "loop" path is spconv's own loop with fixes 1-2, i.e. ppkt's CPU path before the gemm path.
   Choose with the environment variable ``PPKT_SPCONV_CPU=gemm|loop`` (default gemm) or
   :func:`set_cpu_conv_path` / :func:`cpu_conv_path`. ``benchmarks/bench_sparse_unet.py`` times
   SR-UNet34 forward+backward on both paths side by side in one process (`make bench` puts its table in
   docs/benchmarks.md). Measured on a quiet 2-core AMD EPYC VM (torch 2.14 with MKL, load 0.8-1.6), medians of
   5: 2 threads, two real 7-Scenes frames (28k voxels) loop 3.06 s -> gemm 2.11 s (1.45x; useful multiply-adds
   at 0.33 -> 0.48 of a dense fp32 matmul's rate), 2 synthetic frames x 20k voxels 4.19 -> 2.89 s (1.45x);
   1 thread 1.21x and 1.27x. Beside other busy processes the ratio was higher (1.54-1.65x with 2 threads):
   the loop's serial scatter suffers most. The per-offset products run at about the dense matmul rate; what
   is left above it is the gathers and the gather-sums (about as much memory traffic as the products).
   Peak RSS within 0.1 GiB of loop's.

Which path runs on CPU: the CPU-only spconv build forces ``ConvAlgo.Native`` for every layer
(SubMConv3d, SparseConv3d, SparseInverseConv3d), and the Native algorithm calls ``ops.indice_conv``
-- the wrapped function. A CUDA build on a machine without a usable GPU would default to implicit GEMM
(no CPU kernel), so layers should pass ``algo=default_conv_algo()``, which gives ``ConvAlgo.Native``
there and spconv's own default wherever CUDA is usable. Tensors on CUDA pass the wrappers to spconv's
own functions unchanged.
(Untested here: under a CUDA build of spconv the "loop" path for CPU tensors is spconv's C++ GEMM path,
which fixes 1-2 do not touch; the gemm path does not depend on the build.)
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys

import torch

import spconv.pytorch as spconv  # re-exported: the one way ppkt imports spconv
import spconv.pytorch.cppcore as _cppcore
import spconv.pytorch.functional as _functional
import spconv.pytorch.ops as _ops
from spconv.constants import ALL_WEIGHT_IS_KRSC, FILTER_HWIO
from spconv.core import ConvAlgo
from spconv.cppconstants import CPU_ONLY_BUILD

from ppkt.models import spconv_gemm

__all__ = [
    "spconv",
    "apply_spconv_cpu_patch",
    "default_conv_algo",
    "patch_applied",
    "CPU_ONLY_BUILD",
    "CPU_CONV_PATHS",
    "get_cpu_conv_path",
    "set_cpu_conv_path",
    "cpu_conv_path",
]

# spconv's originals (looked through our own wrappers, so a module reload cannot stack patches)
_ORIG_GET_CURRENT_STREAM = getattr(_cppcore.get_current_stream, "_ppkt_original", _cppcore.get_current_stream)
_ORIG_SPCONV_OPS = getattr(_ops.SpconvOps, "_ppkt_original", _ops.SpconvOps)
_ORIG_INDICE_CONV = getattr(_ops.indice_conv, "_ppkt_original", _ops.indice_conv)
_ORIG_INDICE_CONV_BACKWARD = getattr(_ops.indice_conv_backward, "_ppkt_original", _ops.indice_conv_backward)
_CONV_FUNCTIONS = (_functional.SubMConvFunction, _functional.SparseConvFunction, _functional.SparseInverseConvFunction)
_ORIG_BACKWARDS = {f: getattr(f.backward, "_ppkt_original", f.backward) for f in _CONV_FUNCTIONS}

CPU_CONV_PATHS = ("gemm", "loop")
_ENV_PATH = "PPKT_SPCONV_CPU"
_ACT_NONE = _ops.tv.gemm.Activation.None_


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


def _path_from_env() -> str:
    path = os.environ.get(_ENV_PATH, "gemm").strip() or "gemm"
    if path not in CPU_CONV_PATHS:
        raise ValueError(f"{_ENV_PATH}={path!r}: expected one of {', '.join(CPU_CONV_PATHS)}")
    return path


_cpu_conv_path = _path_from_env()


def get_cpu_conv_path() -> str:
    """The CPU convolution path in use: "gemm" (ppkt.models.spconv_gemm) or "loop" (spconv's patched loop)."""
    return _cpu_conv_path


def set_cpu_conv_path(path: str) -> None:
    """Choose how CPU tensors are convolved from now on: "gemm" (default) or "loop" (spconv's own per-offset
    loop with the scatter fix). The environment variable PPKT_SPCONV_CPU sets the initial choice."""
    global _cpu_conv_path
    if path not in CPU_CONV_PATHS:
        raise ValueError(f"unknown CPU conv path {path!r}: expected one of {', '.join(CPU_CONV_PATHS)}")
    _cpu_conv_path = path


@contextlib.contextmanager
def cpu_conv_path(path: str):
    """Context manager: :func:`set_cpu_conv_path` inside, the previous path restored after."""
    old = get_cpu_conv_path()
    set_cpu_conv_path(path)
    try:
        yield
    finally:
        set_cpu_conv_path(old)


# whether the running backward of a sparse conv Function needs the input gradient (set by its wrapper)
_NEED_INPUT_GRAD = contextvars.ContextVar("ppkt_spconv_need_input_grad", default=True)


def _takes_gemm_path(features: torch.Tensor, filters: torch.Tensor) -> bool:
    return (
        _cpu_conv_path == "gemm"
        and features.device.type == "cpu"
        and filters.device.type == "cpu"
        and features.dtype in (torch.float32, torch.float64)
        and filters.dtype == features.dtype
        and ALL_WEIGHT_IS_KRSC
        and not FILTER_HWIO
    )


def _indice_conv(features, filters, indice_pairs, indice_pair_num, num_activate_out, inverse=False, subm=False,
                 *args, **kwargs):
    """``spconv.pytorch.ops.indice_conv``: CPU float tensors without bias/activation take the gemm path.

    (Like spconv's own CPU code, act_alpha/act_beta are ignored without an activation: spconv's SparseConv3d
    passes act_type in the act_alpha slot.)"""
    plain = not args and kwargs.get("bias") is None and kwargs.get("act_type", _ACT_NONE) == _ACT_NONE
    if plain and _takes_gemm_path(features, filters):
        rb = spconv_gemm.rulebook(indice_pairs, indice_pair_num, subm)
        return spconv_gemm.conv_forward(features.contiguous(), filters, rb, int(num_activate_out), bool(inverse))
    return _ORIG_INDICE_CONV(features, filters, indice_pairs, indice_pair_num, num_activate_out, inverse, subm,
                             *args, **kwargs)


def _indice_conv_backward(features, filters, out_bp, indice_pairs, indice_pair_num, inverse=False, subm=False,
                          *args, **kwargs):
    """``spconv.pytorch.ops.indice_conv_backward``: CPU float tensors take the gemm path."""
    if _takes_gemm_path(features, filters) and out_bp.device.type == "cpu" and out_bp.dtype == features.dtype:
        rb = spconv_gemm.rulebook(indice_pairs, indice_pair_num, subm)
        return spconv_gemm.conv_backward(features.contiguous(), filters, out_bp.contiguous(), rb, bool(inverse),
                                         need_input_grad=_NEED_INPUT_GRAD.get())
    return _ORIG_INDICE_CONV_BACKWARD(features, filters, out_bp, indice_pairs, indice_pair_num, inverse, subm,
                                      *args, **kwargs)


def _wrapped_backward(original):
    """Function.backward that tells the conv backward whether the input gradient is needed (the stem's is not:
    its input is the voxel colours)."""

    def backward(ctx, *grad_outputs):
        token = _NEED_INPUT_GRAD.set(bool(ctx.needs_input_grad[0]))
        try:
            return original(ctx, *grad_outputs)
        finally:
            _NEED_INPUT_GRAD.reset(token)

    backward._ppkt_original = original
    return backward


_indice_conv._ppkt_original = _ORIG_INDICE_CONV
_indice_conv_backward._ppkt_original = _ORIG_INDICE_CONV_BACKWARD


def patch_applied() -> bool:
    """True once :func:`apply_spconv_cpu_patch` has run in this process."""
    return (
        isinstance(_ops.SpconvOps, _SpconvOpsProxy)
        and _ops.get_current_stream is _safe_get_current_stream
        and _ops.indice_conv is _indice_conv
        and _ops.indice_conv_backward is _indice_conv_backward
        and all(getattr(f.backward, "_ppkt_original", None) is _ORIG_BACKWARDS[f] for f in _CONV_FUNCTIONS)
    )


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
    _ops.indice_conv, _ops.indice_conv_backward = _indice_conv, _indice_conv_backward
    for function in _CONV_FUNCTIONS:
        if getattr(function.backward, "_ppkt_original", None) is not _ORIG_BACKWARDS[function]:
            function.backward = staticmethod(_wrapped_backward(_ORIG_BACKWARDS[function]))


def default_conv_algo() -> ConvAlgo | None:
    """Conv algorithm for ppkt's sparse layers: ``ConvAlgo.Native`` without usable CUDA (the only
    algorithm with a CPU kernel, and the patched path), else ``None`` (spconv's own default)."""
    if CPU_ONLY_BUILD or not _cuda_usable():
        return ConvAlgo.Native
    return None


apply_spconv_cpu_patch()
_silence_fx_tracing_warning()
