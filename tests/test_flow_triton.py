"""The fused TV-L1 kernels (extract/flow_triton.py) against the plain PyTorch path, on the CPU under
Triton's interpreter (``TRITON_INTERPRET=1``, which numpy runs in float32 without FMA contraction).

The interpreter must be switched on before Triton is imported, so the kernels run in one child
process per module; it prints the measured differences as JSON and the tests below judge them.
The 5 x 5 median kernel that sorts (``tl.sort``) takes about half a minute per call in the
interpreter, so the runs that iterate use ``median_filtering=1`` or the min / max network median; the
sort kernel is checked on one small plane here and inside whole flows by the CUDA tests of
tests/test_flow.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

CHILD = textwrap.dedent(
    r"""
    import json, torch
    from extract import flow_triton as ft
    from extract.flow import centered_gradient, median_blur5, remap_cubic, tvl1

    assert ft.AVAILABLE
    out = {}
    g = torch.Generator().manual_seed(3)

    # 1. one warp's linearisation: Triton kernel vs remap_cubic + the PyTorch formulas, with flows
    #    that carry taps outside the image (constant border) and to non-integral positions
    N, h, w = 3, 19, 27
    i0 = torch.rand(N, h, w, generator=g) * 255
    i1 = torch.rand(N, h, w, generator=g) * 255
    u = torch.randn(N, 2, h, w, generator=g) * 4
    u[0, :, :3] += 30.0  # far outside: every tap reads the border's 0
    gx, gy = centered_gradient(i1)
    images = torch.stack([i1, gx, gy], dim=1)
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    warped = remap_cubic(images, xs + u[:, 0], ys + u[:, 1], border="constant")
    ix, iy = warped[:, 1], warped[:, 2]
    rho_c = warped[:, 0] - ix * u[:, 0] - iy * u[:, 1] - i0
    nig = (ix * ix + iy * iy).clamp_min(1e-30).reciprocal().neg()
    ref = torch.cat([rho_c[:, None], warped[:, 1:], nig[:, None]], dim=1)
    got = ft.linearise(images, i0, u)
    out["linearise_max_abs"] = (got - ref).abs().max().item()
    small = ft.linearise(images, i0, u, ft.Kernels(block=64, num_warps=2))
    out["linearise_block_64"] = (small - got).abs().max().item()
    out["linearise_rel"] = ((got - ref).abs() / ref.abs().clamp_min(1.0)).max().item()
    out["linearise_border_zero"] = bool((got[0, 1:3, :3] == 0).all())

    # 2. the iterations of one warp: tiled kernel (several tile shapes, sizes not multiples of
    #    them) vs the flat one. Pairs scaled so that they stop at different iterations (mean squared
    #    change per pixel vs the threshold 1e-5: ~2e-6 from the start; ~5e-5 falling to ~8e-6 by the
    #    fifth; above it throughout).
    N, h, w = 3, 13, 23
    g = torch.Generator().manual_seed(3)  # the draws the thresholds above were measured on
    coef = torch.randn(N, 4, h, w, generator=g) * torch.tensor([1.0, 30, 30, 0]).view(1, 4, 1, 1)
    coef[:, 3] = -1 / (coef[:, 1] ** 2 + coef[:, 2] ** 2)
    scale = torch.tensor([0.01, 0.05, 3.0]).view(N, 1, 1, 1)
    coef[:, :1] *= scale
    state = torch.randn(N, 6, h, w, generator=g) * scale * 0.1
    kw = dict(lt=0.045, theta=0.3, taut=0.25 / 0.3, inner_iterations=4, outer_iterations=3,
              median_filtering=1, sync_every=2, scaled_eps=1e-5 * h * w)
    before = state.clone()
    flat = ft.iterate(coef, state, kernels=ft.Kernels(), **kw)
    out["state_unchanged"] = bool(torch.equal(state, before))
    small = ft.iterate(coef, state, kernels=ft.Kernels(block=64, num_warps=8), **kw)
    out["flat_block_64"] = (small - flat).abs().max().item()
    out["tiled"] = {}
    for tile in [(2, 32), (32, 2), (4, 8), (16, 64)]:
        tiled = ft.iterate(coef, state, kernels=ft.Kernels(iteration="tiled", tile=tile), **kw)
        out["tiled"][str(tile)] = (tiled - flat).abs().max().item()
    # the same pairs run alone: a pair's result does not depend on its batch
    alone = torch.cat([ft.iterate(coef[k:k + 1], state[k:k + 1], kernels=ft.Kernels(iteration="tiled", tile=(4, 8)),
                                  **kw) for k in range(N)])
    out["tiled_alone"] = (alone - flat).abs().max().item()
    # which pairs stopped before the last iteration: their state differs from a run without stopping
    free = ft.iterate(coef, state, kernels=ft.Kernels(iteration="tiled"), **{**kw, "scaled_eps": -1.0})
    out["stopped_early"] = [bool((flat[k] - free[k]).abs().max() > 0) for k in range(N)]

    # 3. whole flows: every kernel choice vs the plain PyTorch loop
    base = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 30, 41, generator=g) * 255, 5, 1, 2)[:, 0]
    prev, nxt = base[:, 2:-2, :-4].contiguous(), base[:, :-4, 3:-1].contiguous()
    fkw = dict(nscales=2, warps=2, inner_iterations=3, outer_iterations=2, median_filtering=1)
    plain = tvl1(prev, nxt, fused=False, **fkw)
    out["flows"] = {}
    for k in [ft.Kernels(), ft.Kernels(warp="triton"), ft.Kernels(iteration="tiled", warp="triton", tile=(8, 16))]:
        f = tvl1(prev, nxt, fused=True, kernels=k, **fkw)
        out["flows"][f"{k.iteration}/{k.warp}"] = (f - plain).norm(dim=1).max().item()
    out["flow_magnitude"] = plain.norm(dim=1).mean().item()

    # 4. the 5 x 5 median: the min / max network and the sort kernel vs median_blur5 (exact medians,
    #    so equal to the bit), on values with many ties; the sort kernel on a small plane (the
    #    interpreter takes long over its tl.sort)
    v = torch.randint(0, 6, (2, 2, 11, 17), generator=g).float()
    v = v + torch.randn(v.shape, generator=g) * (torch.rand(v.shape, generator=g) < 0.5)
    out["median_network_equal"] = torch.equal(ft.median5(v, ft.Kernels(median="network")), median_blur5(v))
    small = v[:1, :, :6, :7].contiguous()
    out["median_sort_equal"] = torch.equal(ft.median5(small, ft.Kernels(median="sort")), median_blur5(small))
    # and inside whole flows, where the iterations read it
    fkw = dict(nscales=1, warps=1, inner_iterations=2, outer_iterations=2)
    plain = tvl1(prev, nxt, fused=False, **fkw)
    f = tvl1(prev, nxt, fused=True, kernels=ft.Kernels(median="network", iteration="tiled", tile=(8, 16)), **fkw)
    out["flow_median_network"] = (f - plain).norm(dim=1).max().item()
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def measured():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
    print(line)
    return json.loads(line[len("RESULT "):])


def test_triton_linearise_equals_remap_and_formulas(measured):
    """One kernel = remap_cubic (itself equal to cv2.remap INTER_CUBIC, tests/test_flow.py) followed by
    rho_c and -1/|grad|^2; in the interpreter (no FMA) the operation order makes it exact."""
    assert measured["linearise_max_abs"] <= 1e-4
    assert measured["linearise_rel"] <= 1e-6
    assert measured["linearise_border_zero"]
    assert measured["linearise_block_64"] == 0.0  # the program size changes nothing


def test_tiled_iterations_equal_flat_kernel(measured):
    """The 2-D tile kernel shares the primal update through tl.gather instead of recomputing it; its
    state after a warp equals the flat kernel's for every tile shape, with pairs stopping at
    different iterations, and a pair run alone equals the pair in its batch."""
    assert measured["stopped_early"] == [True, True, False]  # the stopping test is exercised
    assert measured["state_unchanged"]  # iterate returns a new state and leaves its input alone
    for tile, diff in measured["tiled"].items():
        assert diff <= 1e-5, (tile, diff)
    assert measured["tiled_alone"] <= 1e-5
    assert measured["flat_block_64"] <= 1e-5  # 5 programs a pair instead of 1: same state


def test_fused_kernel_choices_equal_plain_loop(measured):
    """Whole flows with each kernel choice equal the plain PyTorch loop to float rounding."""
    assert measured["flow_magnitude"] > 0.5  # a real flow, not zeros
    for name, epe in measured["flows"].items():
        assert epe <= 1e-4, (name, epe)


def test_median_network_equals_median_blur5(measured):
    """The min / max network median equals the CPU's exact median (itself equal to cv2.medianBlur,
    tests/test_flow.py) to the bit, with ties and replicated borders, as the sort kernel does; and
    flows that use it stay on the plain loop's."""
    assert measured["median_network_equal"]
    assert measured["median_sort_equal"]
    assert measured["flow_median_network"] <= 1e-4


def test_kernels_record_validates():
    from extract.flow_triton import Kernels

    assert Kernels() == Kernels(iteration="flat", warp="torch", tile=(16, 64))
    for bad in (dict(iteration="tile"), dict(warp="cuda"), dict(median="bitonic"), dict(tile=(12, 64)),
                dict(tile=(1, 64)), dict(block=1000), dict(block=8), dict(num_warps=3)):
        with pytest.raises(ValueError, match="Kernels"):
            Kernels(**bad)


def test_kernels_text_form_round_trips():
    """The benchmarks' --kernels text: parse(str(k)) == k, omitted fields keep the defaults, and a
    malformed text is one clear error."""
    from extract.flow_triton import Kernels

    for k in (Kernels(), Kernels(iteration="tiled", warp="triton", tile=(8, 32), num_warps=8),
              Kernels(block=256, num_warps=8), Kernels(median="network")):
        assert Kernels.parse(str(k)) == k
    assert Kernels.parse("flat") == Kernels()
    assert Kernels.parse("tiled/triton,tile=16x32,num_warps=8") == Kernels(
        iteration="tiled", warp="triton", tile=(16, 32), num_warps=8)
    for bad in ("flat/torch,tiles=8x8", "tiled/triton,tile=16", "flat/torch,block=big", "flat/cuda"):
        with pytest.raises(ValueError, match="Kernels"):
            Kernels.parse(bad)


def test_gpu_check_flow_script_rehearses_on_the_cpu(tmp_path):
    """benchmarks/flow_cuda_check.py --dry-run walks every step of the GPU check (correctness per
    kernel choice, kernel split, throughput table, sync sweep) on the CPU, so an error in the script
    shows here rather than in the few minutes of a lent GPU; each choice's correctness line passes."""
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "flow_cuda_check.py")
    kernels = ["flat/torch", "tiled/triton,median=network,tile=8x16,block=64,num_warps=2"]
    proc = subprocess.run([sys.executable, script, "--dry-run", "--out", str(tmp_path), "--kernels", *kernels],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "flow_cuda_check.log").read_text()
    for name in kernels:
        assert f"{name}: max single-pixel EPE vs CPU" in log and "FAILED" not in log
    assert log.count("check (< 1e-3 mean): PASS") == len(kernels)
    assert "kernel split" in log and "sync every 16" in log and log.rstrip().splitlines()[-1].startswith("total")
