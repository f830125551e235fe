"""spconv on CPU (with ppkt's patch) must equal dense conv3d / conv_transpose3d in float64 to 1e-10, forward and
gradients, with 1 and 2 threads, on both CPU paths: "loop" (spconv's per-offset loop, scatter fixed) and "gemm"
(ppkt.models.spconv_gemm, in both of its strategies: per-pair products summed by embedding_bag, and im2col; with
tiny chunks, so that every layer spans many chunks and, with 2 threads, runs in both threads).

Without the patch these tests fail: backward raises (no NVIDIA driver) and the racy CPU scatter-add
makes forward values differ from dense convolution by O(0.1).
"""

import pytest
import torch
import torch.nn.functional as F

from ppkt.models import spconv_gemm
from ppkt.models.spconv_cpu import (
    apply_spconv_cpu_patch,
    cpu_conv_path,
    default_conv_algo,
    get_cpu_conv_path,
    patch_applied,
    set_cpu_conv_path,
    spconv,
)

S = 16  # grid side
B = 2  # clouds per batch
N_PER_CLOUD = 1200  # ~30% occupancy: >1000 pairs per kernel offset, where the unpatched race shows every run
C_IN, C_OUT = 8, 16
TOL = 1e-10
REPEATS = 3


# (CPU path, gemm strategy, threads)
PATHS = [(p, s, t) for p, s in [("loop", None), ("gemm", "pairs"), ("gemm", "im2col")] for t in (1, 2)]


@pytest.fixture(params=PATHS, ids=[f"{p}-{s}-{t}thr" if s else f"{p}-{t}thr" for p, s, t in PATHS])
def conv_path(request, monkeypatch):
    """Runs the test on one CPU path and thread count; checks that the gemm path really ran (or did not)."""
    path, strategy, threads = request.param
    calls = []
    forward, backward = spconv_gemm.conv_forward, spconv_gemm.conv_backward
    monkeypatch.setattr(spconv_gemm, "conv_forward", lambda *a, **k: calls.append("f") or forward(*a, **k))
    monkeypatch.setattr(spconv_gemm, "conv_backward", lambda *a, **k: calls.append("b") or backward(*a, **k))
    monkeypatch.setattr(spconv_gemm, "CHUNK_BYTES", 1 << 12)  # chunks of MIN_CHUNK_PAIRS pairs
    monkeypatch.setattr(spconv_gemm, "MIN_CHUNK_PAIRS", 600)
    monkeypatch.setattr(spconv_gemm, "IM2COL_BYTES", 1 << 15)  # chunks of ~20 rows
    monkeypatch.setattr(spconv_gemm, "IM2COL_MAX_C_IN", 1 << 20 if strategy == "im2col" else 0)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with cpu_conv_path(path):
            yield path
        assert torch.get_num_threads() == threads  # the gemm path's threaded chunks give the setting back
    finally:
        torch.set_num_threads(old_threads)
    backward_expected = not request.node.name.startswith("test_inference")
    assert ("f" in calls and ("b" in calls) == backward_expected) if path == "gemm" else not calls


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
    from spconv.pytorch.functional import SparseInverseConvFunction

    for wrapper in (ops.indice_conv, ops.indice_conv_backward, SparseInverseConvFunction.backward):
        assert not hasattr(wrapper._ppkt_original, "_ppkt_original")  # no wrapper of a wrapper
    if not torch.cuda.is_available():
        assert ops.get_current_stream() == 0
        assert default_conv_algo() == spconv.ConvAlgo.Native


@pytest.mark.usefixtures("two_threads")
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


def test_submconv3d_matches_dense(conv_path):
    gen = torch.Generator().manual_seed(0)
    conv = spconv.SubMConv3d(C_IN, C_OUT, 3, bias=False, algo=default_conv_algo())
    coords, y = run_conv_case(conv, lambda d, w: F.conv3d(d, w, padding=1), gen)
    assert torch.equal(y.indices, coords)  # submanifold: same sites, same order


def test_sparseconv3d_stride2_matches_dense(conv_path):
    gen = torch.Generator().manual_seed(1)
    conv = spconv.SparseConv3d(C_IN, C_OUT, 2, stride=2, bias=False, algo=default_conv_algo())
    coords, y = run_conv_case(conv, lambda d, w: F.conv3d(d, w, stride=2), gen)
    expect = torch.unique(torch.cat([coords[:, :1], coords[:, 1:] // 2], 1), dim=0)
    got = torch.unique(y.indices, dim=0)
    assert torch.equal(got, expect)


def test_sparseconv3d_k3_pad1_matches_dense(conv_path):
    gen = torch.Generator().manual_seed(2)
    conv = spconv.SparseConv3d(C_IN, C_OUT, 3, stride=1, padding=1, bias=False, algo=default_conv_algo())
    coords, y = run_conv_case(conv, lambda d, w: F.conv3d(d, w, padding=1), gen)
    # output sites = every site whose 3x3x3 neighbourhood holds an input site
    occ = to_dense(torch.ones(len(coords), 1, dtype=torch.float64), coords, (S, S, S))
    reach = F.conv3d(occ, torch.ones(1, 1, 3, 3, 3, dtype=torch.float64), padding=1)[:, 0] > 0
    assert len(y.indices) == int(reach.sum())
    c = y.indices.long()
    assert bool(reach[c[:, 0], c[:, 1], c[:, 2], c[:, 3]].all())


def test_sparse_inverse_conv3d_matches_conv_transpose3d(conv_path):
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


def test_stem_like_conv_without_input_grad_matches_dense(conv_path, monkeypatch):
    """SubM k=5 on 3 channels whose input needs no gradient (the SR-UNet stem on voxel colours): the gemm
    path skips the input gradient, and the weight gradient still equals dense conv3d's."""
    seen, backward = [], spconv_gemm.conv_backward
    spy = lambda *a, **k: seen.append(k["need_input_grad"]) or backward(*a, **k)  # noqa: E731
    monkeypatch.setattr(spconv_gemm, "conv_backward", spy)
    gen = torch.Generator().manual_seed(4)
    conv = spconv.SubMConv3d(3, 5, 5, bias=False, algo=default_conv_algo()).double()
    coords, _ = random_cloud(gen)
    feats = torch.randn(len(coords), 3, generator=gen, dtype=torch.float64)
    y = conv(spconv.SparseConvTensor(feats, coords, [S, S, S], B))
    w = conv.weight.detach().clone().requires_grad_(True)
    yd = at_sites(F.conv3d(to_dense(feats, coords, (S, S, S)), dense_weight(w), padding=2), coords)
    assert torch.equal(y.indices, coords) and (y.features - yd).abs().max().item() < TOL
    check_grads(y.features, yd, (conv.weight,), (w,), gen)
    assert seen == ([False] if conv_path == "gemm" else [])


def test_isolated_voxels_submconv_is_the_centre_product(conv_path):
    """No neighbour pairs at all (an empty rulebook but the centre): out = x @ W[centre], grads likewise."""
    gen = torch.Generator().manual_seed(6)
    coords = torch.tensor([[0, 1, 1, 1], [0, 5, 5, 5], [1, 1, 9, 1], [1, 12, 3, 14]], dtype=torch.int32)
    feats = torch.randn(4, C_IN, generator=gen, dtype=torch.float64, requires_grad=True)
    conv = spconv.SubMConv3d(C_IN, C_OUT, 3, bias=False, algo=default_conv_algo()).double()
    y = conv(spconv.SparseConvTensor(feats, coords, [S, S, S], B))
    w = conv.weight.detach().clone().requires_grad_(True)
    f = feats.detach().clone().requires_grad_(True)
    yd = f @ w[:, 1, 1, 1].T
    assert (y.features - yd).abs().max().item() < TOL
    check_grads(y.features, yd, (feats, conv.weight), (f, w), gen)


def test_rulebook_tables_are_built_once_per_shared_rulebook(monkeypatch):
    """Layers sharing an indice_key get the same indice_pairs tensor: one Rulebook and, for a submanifold
    rulebook, one sorted plan (the other side is its mirror); a down/up pair builds one plan per side."""
    built = []
    plan_cls = spconv_gemm._Plan
    monkeypatch.setattr(spconv_gemm, "_Plan", lambda *a: built.append(a[1]) or plan_cls(*a))
    monkeypatch.setattr(spconv_gemm, "IM2COL_MAX_C_IN", 0)
    gen = torch.Generator().manual_seed(7)
    coords, feats = random_cloud(gen)
    algo = default_conv_algo()
    subm = [spconv.SubMConv3d(C_IN, C_IN, 3, bias=False, indice_key="s", algo=algo).double() for _ in range(3)]
    down = spconv.SparseConv3d(C_IN, C_OUT, 2, stride=2, bias=False, indice_key="d", algo=algo).double()
    up = spconv.SparseInverseConv3d(C_OUT, C_IN, 2, bias=False, indice_key="d", algo=algo).double()
    with cpu_conv_path("gemm"):
        x = spconv.SparseConvTensor(feats, coords, [S, S, S], B)
        for layer in subm:
            x = layer(x)
        assert built == [1]  # forward: reduce onto the output side
        y = up(down(x))
        y.features.square().sum().backward()
    assert sorted(built) == [0, 1, 1]  # subm: one plan, mirrored for backward; down/up: one per side
    pairs = x.indice_dict["s"].indice_pairs
    assert pairs._ppkt_rulebook is spconv_gemm.rulebook(pairs, x.indice_dict["s"].indice_pair_num, True)


def test_runs_are_bitwise_deterministic(conv_path):
    """The same conv twice: equal outputs and gradients, bit for bit (threads sum their parts in order)."""
    gen = torch.Generator().manual_seed(9)
    coords, feats = random_cloud(gen)
    conv = spconv.SubMConv3d(C_IN, C_OUT, 3, bias=False, algo=default_conv_algo()).double()
    g = torch.randn(len(coords), C_OUT, generator=gen, dtype=torch.float64)
    runs = []
    for _ in range(2):
        y = conv(spconv.SparseConvTensor(feats, coords, [S, S, S], B)).features
        runs.append((y, *torch.autograd.grad((y * g).sum(), (feats, conv.weight))))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_inference_mode_forward_matches_dense(conv_path):
    """Under torch.inference_mode (outputs are inference tensors, also those written by pool threads)."""
    gen = torch.Generator().manual_seed(8)
    coords, feats = random_cloud(gen)
    conv = spconv.SubMConv3d(C_IN, C_OUT, 3, bias=False, algo=default_conv_algo()).double()
    with torch.inference_mode():
        y = conv(spconv.SparseConvTensor(feats.detach(), coords, [S, S, S], B))
    with torch.no_grad():
        yd = at_sites(F.conv3d(to_dense(feats, coords, (S, S, S)), dense_weight(conv.weight), padding=1), coords)
    assert (y.features - yd).abs().max().item() < TOL


def test_cpu_conv_path_switch(monkeypatch):
    import ppkt.models.spconv_cpu as mod

    assert get_cpu_conv_path() in ("gemm", "loop")
    with pytest.raises(ValueError, match="unknown CPU conv path"):
        set_cpu_conv_path("fast")
    with cpu_conv_path("loop"):
        assert get_cpu_conv_path() == "loop"
    monkeypatch.setenv("PPKT_SPCONV_CPU", "loop")
    assert mod._path_from_env() == "loop"
    monkeypatch.setenv("PPKT_SPCONV_CPU", "")
    assert mod._path_from_env() == "gemm"  # the default
    monkeypatch.setenv("PPKT_SPCONV_CPU", "cuda")
    with pytest.raises(ValueError, match="PPKT_SPCONV_CPU"):
        mod._path_from_env()


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


def test_rulebook_cache_does_not_keep_its_tensors_alive():
    """The rulebook cached on indice_pairs holds no reference back to it: once a forward/backward is done and
    its tensors are dropped, they are freed at once, without waiting for the garbage collector (a cycle
    through the cache made resident memory grow by hundreds of MiB over a few hundred training iterations)."""
    import gc
    import weakref

    gen = torch.Generator().manual_seed(3)
    coords, feats = random_cloud(gen)
    conv = spconv.SubMConv3d(C_IN, C_OUT, 3, bias=False, indice_key="s", algo=default_conv_algo()).double()
    gc.disable()
    try:
        with cpu_conv_path("gemm"):
            out = conv(spconv.SparseConvTensor(feats, coords, [S, S, S], B))
            out.features.square().sum().backward()
        pairs = out.indice_dict["s"].indice_pairs
        assert hasattr(pairs, "_ppkt_rulebook")
        alive = weakref.ref(pairs)
        del out, pairs
        assert alive() is None
    finally:
        gc.enable()
