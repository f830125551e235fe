"""spconv on CPU (with ppkt's patch) must equal dense conv3d / conv_transpose3d, with 2 threads.

Without the patch these tests fail: backward raises (no NVIDIA driver) and the racy CPU scatter-add
makes forward values differ from dense convolution by O(0.1).
"""

import pytest
import torch
import torch.nn.functional as F

from ppkt.models.spconv_cpu import apply_spconv_cpu_patch, default_conv_algo, patch_applied, spconv

S = 16  # grid side
B = 2  # clouds per batch
N_PER_CLOUD = 1200  # ~30% occupancy: >1000 pairs per kernel offset, where the unpatched race shows every run
C_IN, C_OUT = 8, 16
TOL = 1e-10
REPEATS = 5


pytestmark = pytest.mark.usefixtures("two_threads")


def random_cloud(gen: torch.Generator):
    """(coords (N,4) int32 [b,x,y,z] unique, feats (N,C_IN) float64 requiring grad)."""
    rows = []
    for b in range(B):
        flat = torch.randperm(S**3, generator=gen)[:N_PER_CLOUD]
        xyz = torch.stack([flat // (S * S), (flat // S) % S, flat % S], dim=1)
        rows.append(torch.cat([torch.full((N_PER_CLOUD, 1), b), xyz], dim=1))
    coords = torch.cat(rows).int()
    feats = torch.randn(len(coords), C_IN, generator=gen, dtype=torch.float64, requires_grad=True)
    return coords, feats


def to_dense(feats, coords, shape):
    """Sparse (N, C) features at coords -> dense (B, C, X, Y, Z), differentiable in feats."""
    c = coords.long()
    dense = torch.zeros(B, *shape, feats.shape[1], dtype=feats.dtype)
    dense = dense.index_put((c[:, 0], c[:, 1], c[:, 2], c[:, 3]), feats)
    return dense.permute(0, 4, 1, 2, 3)


def at_sites(dense, coords):
    c = coords.long()
    return dense.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1], c[:, 2], c[:, 3]]


def dense_weight(w):
    """spconv weight (out, kx, ky, kz, in) -> conv3d weight (out, in, kx, ky, kz)."""
    return w.permute(0, 4, 1, 2, 3)


def check_grads(sparse_out, dense_out_at_sites, leaves_sparse, leaves_dense, gen):
    g = torch.randn(sparse_out.shape, generator=gen, dtype=torch.float64)
    grads_s = torch.autograd.grad((sparse_out * g).sum(), leaves_sparse)
    grads_d = torch.autograd.grad((dense_out_at_sites * g).sum(), leaves_dense)
    for gs, gd in zip(grads_s, grads_d):
        assert gs.shape == gd.shape
        assert (gs - gd).abs().max().item() < TOL


def run_conv_case(conv, dense_fn, gen):
    conv = conv.double()
    for _ in range(REPEATS):
        coords, feats = random_cloud(gen)
        x = spconv.SparseConvTensor(feats, coords, [S, S, S], B)
        y = conv(x)
        w = conv.weight.detach().clone().requires_grad_(True)
        f = feats.detach().clone().requires_grad_(True)
        yd = at_sites(dense_fn(to_dense(f, coords, (S, S, S)), dense_weight(w)), y.indices)
        assert (y.features - yd).abs().max().item() < TOL
        check_grads(y.features, yd, (feats, conv.weight), (f, w), gen)
    return coords, y


def test_patch_is_applied_and_idempotent():
    assert patch_applied()
    apply_spconv_cpu_patch()
    apply_spconv_cpu_patch()
    assert patch_applied()
    import spconv.pytorch.ops as ops

    assert not isinstance(ops.SpconvOps._ppkt_original, type(ops.SpconvOps))  # no proxy of a proxy
    if not torch.cuda.is_available():
        assert ops.get_current_stream() == 0
        assert default_conv_algo() == spconv.ConvAlgo.Native


def test_scatter_add_and_gather_cpu_are_exact_and_use_only_len_idx_rows():
    from spconv.pytorch.cppcore import torch_tensor_to_tv

    import spconv.pytorch.ops as ops

    gen = torch.Generator().manual_seed(5)
    for n in [2000] * 8 + [6000] * 2:  # small blocks take the serial kernel, large ones index_add_
        out = torch.randn(n + 1000, 32, generator=gen, dtype=torch.float64)
        buf = torch.randn(n + 500, 32, generator=gen, dtype=torch.float64)  # rows >= n are stale
        idx = torch.randperm(n + 1000, generator=gen)[:n].int()
        expect = out.clone().index_add_(0, idx.long(), buf[:n])
        ops.SpconvOps.scatter_add_cpu(*(torch_tensor_to_tv(t) for t in (out, buf, idx)))
        assert torch.equal(out, expect)
        gathered = torch.zeros_like(buf)
        ops.SpconvOps.gather_cpu(*(torch_tensor_to_tv(t) for t in (gathered, out, idx)))
        assert torch.equal(gathered[:n], out[idx.long()]) and not gathered[n:].any()


def test_submconv3d_matches_dense():
    gen = torch.Generator().manual_seed(0)
    conv = spconv.SubMConv3d(C_IN, C_OUT, 3, bias=False, algo=default_conv_algo())
    coords, y = run_conv_case(conv, lambda d, w: F.conv3d(d, w, padding=1), gen)
    assert torch.equal(y.indices, coords)  # submanifold: same sites, same order


def test_sparseconv3d_stride2_matches_dense():
    gen = torch.Generator().manual_seed(1)
    conv = spconv.SparseConv3d(C_IN, C_OUT, 2, stride=2, bias=False, algo=default_conv_algo())
    coords, y = run_conv_case(conv, lambda d, w: F.conv3d(d, w, stride=2), gen)
    expect = torch.unique(torch.cat([coords[:, :1], coords[:, 1:] // 2], 1), dim=0)
    got = torch.unique(y.indices, dim=0)
    assert torch.equal(got, expect)


def test_sparseconv3d_k3_pad1_matches_dense():
    gen = torch.Generator().manual_seed(2)
    conv = spconv.SparseConv3d(C_IN, C_OUT, 3, stride=1, padding=1, bias=False, algo=default_conv_algo())
    coords, y = run_conv_case(conv, lambda d, w: F.conv3d(d, w, padding=1), gen)
    # output sites = every site whose 3x3x3 neighbourhood holds an input site
    occ = to_dense(torch.ones(len(coords), 1, dtype=torch.float64), coords, (S, S, S))
    reach = F.conv3d(occ, torch.ones(1, 1, 3, 3, 3, dtype=torch.float64), padding=1)[:, 0] > 0
    assert len(y.indices) == int(reach.sum())
    c = y.indices.long()
    assert bool(reach[c[:, 0], c[:, 1], c[:, 2], c[:, 3]].all())


def test_sparse_inverse_conv3d_matches_conv_transpose3d():
    gen = torch.Generator().manual_seed(3)
    down = spconv.SparseConv3d(C_IN, C_OUT, 2, stride=2, bias=False, indice_key="d", algo=default_conv_algo())
    up = spconv.SparseInverseConv3d(C_OUT, C_IN, 2, bias=False, indice_key="d", algo=default_conv_algo())
    down, up = down.double(), up.double()
    for _ in range(REPEATS):
        coords, feats = random_cloud(gen)
        x = spconv.SparseConvTensor(feats.detach(), coords, [S, S, S], B)
        mid = down(x)
        h = torch.randn(mid.features.shape, generator=gen, dtype=torch.float64, requires_grad=True)
        y = up(mid.replace_feature(h))
        assert torch.equal(y.indices, coords)  # inverse conv restores the original sites and order
        w = up.weight.detach().clone().requires_grad_(True)
        hd = h.detach().clone().requires_grad_(True)
        # inverse conv weight (out, kx, ky, kz, in) -> conv_transpose3d weight (in, out, kx, ky, kz)
        wd = w.permute(4, 0, 1, 2, 3)
        dense = F.conv_transpose3d(to_dense(hd, mid.indices, (S // 2,) * 3), wd, stride=2)
        yd = at_sites(dense, coords)
        assert (y.features - yd).abs().max().item() < TOL
        check_grads(y.features, yd, (h, up.weight), (hd, w), gen)


def test_sparse_tensors_do_not_log_the_fx_tracing_warning(caplog):
    """SparseConvTensor's metaclass calls torch.fx's is_fx_tracing(), which logs "is_fx_tracing will return true
    ..." once per process; ppkt.models.spconv_cpu drops that one message, so no command prints it."""
    import logging

    from torch.fx import _symbolic_trace

    _symbolic_trace.is_fx_tracing_warning.cache_clear()  # logged once per process: make this test see it
    caplog.set_level(logging.WARNING)
    coords = torch.tensor([[0, 1, 1, 1], [0, 2, 1, 1]], dtype=torch.int32)
    x = spconv.SparseConvTensor(torch.ones(2, C_IN, dtype=torch.float64), coords, [S, S, S], 1)
    conv = spconv.SubMConv3d(C_IN, C_OUT, 3, bias=False, algo=default_conv_algo()).double()
    assert conv(x).features.shape == (2, C_OUT)
    assert not [r for r in caplog.records if "is_fx_tracing" in r.getMessage()]
    _symbolic_trace.is_fx_tracing_warning.cache_clear()
    _symbolic_trace.log.warning("another torch.fx message")  # the filter drops that one message only
    assert [r.getMessage() for r in caplog.records] == ["another torch.fx message"]
