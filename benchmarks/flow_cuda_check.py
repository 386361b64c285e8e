"""One-shot CUDA check of the fused (Triton) TV-L1 path: correctness of each kernel choice against
the plain PyTorch loop (CPU and CUDA), throughput per batch size and kernel choice, and the time of
each kernel alone, on synthetic frames (no OpenCV / video needed).

    PYTHONUNBUFFERED=1 python benchmarks/flow_cuda_check.py [--out DIR] [--batches 32 64 128 256]
        [--kernels flat/torch flat/triton,block=256,num_warps=8 tiled/triton,tile=16x32,num_warps=8]

A kernel choice is ``ITERATION/WARP[,tile=ROWSxCOLS][,block=N][,num_warps=N]``
(:meth:`extract.flow_triton.Kernels.parse`).
``--dry-run`` runs every step on the CPU under Triton's interpreter with tiny frames and few
iterations (about a minute), to check the script before spending GPU time on it; its figures mean
nothing.

Frames: uniform noise smoothed by a 5x5 box filter twice (a smooth texture, values ~[60, 200]),
``nxt`` the same texture shifted by a known integer (dx, dy) per pair, so the flow is that shift
away from the borders. Prints mean endpoint error (EPE) between paths, the recovered shift, the
first-call time (Triton compilation) and pairs per second (best of ``--repeats`` after a warm-up,
``torch.cuda.synchronize`` around each call).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DRY_RUN = "--dry-run" in sys.argv
if DRY_RUN:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before Triton is imported

from extract import flow_triton  # noqa: E402
from extract.flow import centered_gradient, remap_cubic, tvl1  # noqa: E402
from extract.flow_triton import SYNC_EVERY, TRITON_VERSION, Kernels  # noqa: E402

# OpenCV's defaults; a dry run takes one scale, one warp, 2 x 2 iterations and no median (the
# interpreter spends half a minute on one median call)
flow = tvl1 if not DRY_RUN else functools.partial(
    tvl1, nscales=1, warps=1, inner_iterations=2, outer_iterations=2, median_filtering=1)


def sync() -> None:
    """Wait for the GPU's queue (nothing to wait for in a dry run)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()

SHIFTS = [(1, 0), (0, 1), (1, 1), (2, -1), (-1, 2), (3, 1), (0, 0), (-2, -2)]


def synthetic_pairs(n: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prev, nxt, true shift (n, 2)) with prev[y, x] = nxt[y + dy, x + dx]."""
    g = torch.Generator().manual_seed(seed)
    m = 8
    base = torch.rand(n, 1, h + 2 * m, w + 2 * m, generator=g) * 255
    for _ in range(2):
        base = F.avg_pool2d(base, 5, 1, 2, count_include_pad=False)
    base = ((base - base.mean()) * 3 + 128).clamp(0, 255)[:, 0]
    prev, nxt, shift = [], [], []
    for k in range(n):
        dx, dy = SHIFTS[k % len(SHIFTS)]
        prev.append(base[k, m:m + h, m:m + w])
        nxt.append(base[k, m - dy:m - dy + h, m - dx:m - dx + w])
        shift.append((dx, dy))
    return torch.stack(prev).contiguous(), torch.stack(nxt).contiguous(), torch.tensor(shift, dtype=torch.float32)


def epe(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean endpoint error per pair."""
    return (a.float().cpu() - b.float().cpu()).norm(dim=1).mean(dim=(1, 2))


def event_ms(fn, repeats: int = 10) -> float:
    """Mean milliseconds of ``fn()`` on the GPU over ``repeats`` calls after one warm-up (CUDA events)."""
    fn()
    if not torch.cuda.is_available():  # dry run
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t) * 1e3 / repeats
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    sync()
    return start.elapsed_time(end) / repeats


def kernel_split(log, dev: torch.device, variants: dict[str, Kernels], n: int, size: int) -> None:
    """Milliseconds of each piece of one warp at full resolution (batch ``n``, ``size`` squared):
    the warp + linearisation (PyTorch ops vs one Triton kernel), one iteration per iteration kernel,
    and one 5 x 5 median, so the next optimisation goes where the time is."""
    prev, nxt, _ = synthetic_pairs(n, size, size, seed=3)
    i0, i1 = prev.to(dev), nxt.to(dev)
    u = torch.randn(n, 2, size, size, device=dev)
    gx, gy = centered_gradient(i1)
    images = torch.stack([i1, gx, gy], dim=1)
    ys = torch.arange(size, device=dev, dtype=torch.float32).view(1, size, 1)
    xs = torch.arange(size, device=dev, dtype=torch.float32).view(1, 1, size)

    def torch_warp():
        warped = remap_cubic(images, xs + u[:, 0], ys + u[:, 1], border="constant")
        ix, iy = warped[:, 1], warped[:, 2]
        rho_c = warped[:, 0] - ix * u[:, 0] - iy * u[:, 1] - i0
        nig = (ix * ix + iy * iy).clamp_min_(1e-30).reciprocal_().neg_()
        return torch.cat([rho_c[:, None], warped[:, 1:], nig[:, None]], dim=1)

    log(f"kernel split at {size}x{size}, batch {n} (ms per call):")
    log(f"  warp + linearise, PyTorch ops: {event_ms(torch_warp):8.2f}")
    for k in {(k.block, k.num_warps): k for k in variants.values()}.values():
        ms = event_ms(functools.partial(flow_triton.linearise, images, i0, u, k))
        log(f"  warp + linearise, Triton, block {k.block}, {k.num_warps} warps: {ms:8.2f}")
    coef = flow_triton.linearise(images, i0, u)
    state = torch.zeros(n, 6, size, size, device=dev)
    its = 2 if DRY_RUN else 20
    iteration_kernels = {}  # one entry per distinct iteration kernel
    for k in variants.values():
        shape = f"tile {k.tile[0]}x{k.tile[1]}" if k.iteration == "tiled" else f"block {k.block}"
        iteration_kernels[f"{k.iteration}, {shape}, {k.num_warps} warps, median {k.median}"] = k
    for label, k in iteration_kernels.items():
        run = functools.partial(flow_triton.iterate, coef, state, lt=0.045, theta=0.3, taut=0.25 / 0.3,
                                scaled_eps=-1.0, kernels=k)
        it_ms = event_ms(functools.partial(run, inner_iterations=its, outer_iterations=1, median_filtering=1), 3)
        it_ms /= its
        med_ms = event_ms(functools.partial(run, inner_iterations=1, outer_iterations=its,
                                            median_filtering=1 if DRY_RUN else 5), 3) / its - it_ms
        log(f"  one iteration, {label}: {it_ms:8.3f}   one median (by difference): {med_ms:8.3f}")


def timed(fn, repeats: int, *args, **kwargs) -> tuple[float, torch.Tensor]:
    """(best seconds of ``repeats`` calls of ``fn(*args, **kwargs)``, its last output)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        sync()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--batches", nargs="+", type=int, default=[32, 64, 128, 256])
    ap.add_argument("--sizes", nargs="+", default=["224x224", "340x256"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cpu-pairs", type=int, default=4)
    ap.add_argument("--budget-s", type=float, default=130, help="skip remaining timings after this")
    ap.add_argument("--dry-run", action="store_true", help="CPU, Triton interpreter, tiny frames: check the script")
    ap.add_argument("--kernels", nargs="+", default=["flat/torch", "flat/triton", "tiled/triton"],
                    help="fused kernel choices ITERATION/WARP[,tile=RxC][,block=N][,num_warps=N] "
                         "(the first is the reference)")
    args = ap.parse_args()
    variants = {name: Kernels.parse(name) for name in args.kernels}
    t_start = time.perf_counter()
    log_f = open(Path(args.out) / "flow_cuda_check.log", "w") if args.out else None

    def log(msg: str) -> None:
        print(msg, flush=True)
        if log_f:
            log_f.write(msg + "\n")
            log_f.flush()

    if args.dry_run:
        args.sizes, args.batches, args.cpu_pairs, args.repeats = ["24x20"], [2, 32], 2, 1
    dev = torch.device("cpu" if args.dry_run else "cuda")
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "CPU (dry run)"
    log(f"device {name}, torch {torch.__version__}, "
        f"triton {TRITON_VERSION}, cpu threads {torch.get_num_threads()}")

    # -- (a) correctness ---------------------------------------------------------------------
    ok_variants = dict(variants)  # the choices that ran without error
    for size in args.sizes:
        w, h = map(int, size.split("x"))
        n = max(args.cpu_pairs, 8)
        prev, nxt, shift = synthetic_pairs(n, h, w, seed=1)
        old = flow(prev.to(dev), nxt.to(dev), fused=False)
        k = args.cpu_pairs
        t = time.perf_counter()
        cpu = flow(prev[:k], nxt[:k], fused=False)
        log(f"[{size}] CPU eager {k} pairs: {time.perf_counter() - t:.1f} s")
        m = min(16, h // 4, w // 4)  # away from the border, where the shift is not the flow
        inner = (slice(None), slice(None), slice(m, -m), slice(m, -m))
        rec = old[inner].mean(dim=(2, 3)).cpu()
        log(f"[{size}] true shift vs recovered (old CUDA, interior mean): "
            + " ".join(f"({s[0]:+.0f},{s[1]:+.0f})->({r[0]:+.2f},{r[1]:+.2f})" for s, r in zip(shift, rec)))
        log(f"[{size}] mean EPE old-CUDA vs CPU (per pair): {[f'{e:.2e}' for e in epe(old[:k], cpu)]}")
        for name, kern in list(ok_variants.items()):
            try:
                t = time.perf_counter()
                fz = flow(prev.to(dev), nxt.to(dev), fused=True, kernels=kern)
                sync()
                first_call = time.perf_counter() - t
                t = time.perf_counter()
                fz = flow(prev.to(dev), nxt.to(dev), fused=True, kernels=kern)
                sync()
                log(f"[{size}] {name}: first call (incl. Triton compile) {first_call:.2f} s, "
                    f"second call {time.perf_counter() - t:.3f} s")
            except Exception:  # noqa: BLE001 - report and go on with the other choices
                log(f"[{size}] {name} FAILED:\n{traceback.format_exc()}")
                del ok_variants[name]
                continue
            e_cpu, e_old = epe(fz[:k], cpu), epe(fz, old)
            log(f"[{size}] {name}: mean EPE vs CPU      {[f'{e:.2e}' for e in e_cpu]}")
            log(f"[{size}] {name}: mean EPE vs old CUDA {[f'{e:.2e}' for e in e_old]}")
            mx = (fz[:k].cpu() - cpu).norm(dim=1).amax().item()
            ok = bool(e_cpu.max() < 1e-3 and e_old.max() < 1e-3)
            log(f"[{size}] {name}: max single-pixel EPE vs CPU {mx:.2e}; check (< 1e-3 mean): "
                f"{'PASS' if ok else 'FAIL (see flow_notes: a flipped stop iteration drifts by up to 1e-2)'}")
            # batch = single pairs (per-pair stopping on the device)
            single = torch.cat([flow(prev[j:j + 1].to(dev), nxt[j:j + 1].to(dev), fused=True, kernels=kern)
                                for j in range(3)])
            log(f"[{size}] {name}: batch vs single pairs max |diff| {(single - fz[:3]).abs().max().item():.2e}")

    # -- (b) the time of each piece, then throughput -------------------------------------------
    if ok_variants:
        try:
            kernel_split(log, dev, ok_variants, *((2, 24) if DRY_RUN else (256, 224)))
        except Exception:  # noqa: BLE001 - a diagnostic; the throughput table matters more
            log(f"kernel split FAILED:\n{traceback.format_exc()}")
    names = list(ok_variants)
    log(f"{'size':>8} {'batch':>5} {'old pairs/s':>12} " + " ".join(f"{n + ' pairs/s':>22}" for n in names))
    for b in sorted(args.batches, key=lambda b: (b != 256, b)):  # batch 256 first: the headline figure
        for size in args.sizes:
            if time.perf_counter() - t_start > args.budget_s:
                log(f"{size:>8} {b:>5} skipped (time budget)")
                continue
            w, h = map(int, size.split("x"))
            a, c, _ = synthetic_pairs(b, h, w, seed=2)
            a, c = a.to(dev), c.to(dev)
            old_rate = float("nan")
            if b == 32:  # baseline on the same machine
                flow(a, c, fused=False)
                sec, _ = timed(flow, 1, a, c, fused=False)
                old_rate = b / sec
            rates = []
            for name in names:
                try:
                    flow(a, c, fused=True, kernels=ok_variants[name])  # warm-up
                    sec, _ = timed(flow, args.repeats, a, c, fused=True, kernels=ok_variants[name])
                    rates.append(f"{b / sec:>10.1f} ({sec * 1e3:6.0f} ms)")
                except Exception as exc:  # noqa: BLE001 - one failed cell must not lose the table
                    log(f"{size} batch {b} {name} FAILED: {type(exc).__name__}: {exc}")
                    rates.append("error")
            log(f"{size:>8} {b:>5} {old_rate:>12.1f} " + " ".join(f"{r:>22}" for r in rates))

    # sync interval sensitivity at one point, with the first kernel choice
    if names and time.perf_counter() - t_start < args.budget_s:
        (w, h), b = ((24, 20), 2) if args.dry_run else ((224, 224), 64)
        a, c, _ = synthetic_pairs(b, h, w, seed=2)
        a, c = a.to(dev), c.to(dev)
        kern = ok_variants[names[0]]
        for k in sorted({4, SYNC_EVERY, 32}):
            flow(a, c, fused=True, sync_every=k, kernels=kern)
            sec, _ = timed(flow, 2, a, c, fused=True, sync_every=k, kernels=kern)
            log(f"{w}x{h} batch {b}, {names[0]}, sync every {k}: {b / sec:.1f} pairs/s")
    log(f"total {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
