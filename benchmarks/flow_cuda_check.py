"""One-shot CUDA check of the fused (Triton) TV-L1 path: correctness against the plain PyTorch
loop (CPU and CUDA) and throughput per batch size, on synthetic frames (no OpenCV / video needed).

    PYTHONUNBUFFERED=1 python benchmarks/flow_cuda_check.py [--out DIR] [--batches 32 64 128 256]

Frames: uniform noise smoothed by a 5x5 box filter twice (a smooth texture, values ~[60, 200]),
``nxt`` the same texture shifted by a known integer (dx, dy) per pair, so the flow is that shift
away from the borders. Prints mean endpoint error (EPE) between paths, the recovered shift, the
first-call time (Triton compilation) and pairs per second (best of ``--repeats`` after a warm-up,
``torch.cuda.synchronize`` around each call).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from extract.flow import tvl1  # noqa: E402
from extract.flow_triton import SYNC_EVERY, TRITON_VERSION  # noqa: E402

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


def timed(fn, repeats: int, *args, **kwargs) -> tuple[float, torch.Tensor]:
    """(best seconds of ``repeats`` calls of ``fn(*args, **kwargs)``, its last output)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        torch.cuda.synchronize()
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
    args = ap.parse_args()
    t_start = time.perf_counter()
    log_f = open(Path(args.out) / "flow_cuda_check.log", "w") if args.out else None

    def log(msg: str) -> None:
        print(msg, flush=True)
        if log_f:
            log_f.write(msg + "\n")
            log_f.flush()

    dev = torch.device("cuda")
    log(f"device {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
        f"triton {TRITON_VERSION}, cpu threads {torch.get_num_threads()}")

    # -- (a) correctness ---------------------------------------------------------------------
    fused_ok = True
    for size in args.sizes:
        w, h = map(int, size.split("x"))
        n = max(args.cpu_pairs, 8)
        prev, nxt, shift = synthetic_pairs(n, h, w, seed=1)
        try:
            t = time.perf_counter()
            fz = tvl1(prev.to(dev), nxt.to(dev), fused=True)
            torch.cuda.synchronize()
            first_call = time.perf_counter() - t
            t = time.perf_counter()
            fz = tvl1(prev.to(dev), nxt.to(dev), fused=True)
            torch.cuda.synchronize()
            log(f"[{size}] fused first call (incl. Triton compile) {first_call:.2f} s, "
                f"second call {time.perf_counter() - t:.3f} s")
        except Exception:  # noqa: BLE001 - report and go on with the old path
            log(traceback.format_exc())
            fused_ok = False
            fz = None
        old = tvl1(prev.to(dev), nxt.to(dev), fused=False)
        k = args.cpu_pairs
        t = time.perf_counter()
        cpu = tvl1(prev[:k], nxt[:k], fused=False)
        log(f"[{size}] CPU eager {k} pairs: {time.perf_counter() - t:.1f} s")
        inner = (slice(None), slice(None), slice(16, -16), slice(16, -16))
        rec = old[inner].mean(dim=(2, 3)).cpu()
        log(f"[{size}] true shift vs recovered (old CUDA, interior mean): "
            + " ".join(f"({s[0]:+.0f},{s[1]:+.0f})->({r[0]:+.2f},{r[1]:+.2f})" for s, r in zip(shift, rec)))
        log(f"[{size}] mean EPE old-CUDA vs CPU (per pair): {[f'{e:.2e}' for e in epe(old[:k], cpu)]}")
        if fz is not None:
            e_cpu, e_old = epe(fz[:k], cpu), epe(fz, old)
            log(f"[{size}] mean EPE fused vs CPU:      {[f'{e:.2e}' for e in e_cpu]}")
            log(f"[{size}] mean EPE fused vs old CUDA: {[f'{e:.2e}' for e in e_old]}")
            mx = (fz[:k].cpu() - cpu).norm(dim=1).amax().item()
            ok = bool(e_cpu.max() < 1e-3 and e_old.max() < 1e-3)
            log(f"[{size}] max single-pixel EPE fused vs CPU {mx:.2e}; check (< 1e-3 mean): {'PASS' if ok else 'FAIL'}")
            # batch = single pairs (per-pair stopping on the device)
            single = torch.cat([tvl1(prev[j:j + 1].to(dev), nxt[j:j + 1].to(dev), fused=True) for j in range(3)])
            log(f"[{size}] fused batch vs single pairs max |diff| {(single - fz[:3]).abs().max().item():.2e}")

    # -- (b) throughput ------------------------------------------------------------------------
    log(f"{'size':>8} {'batch':>5} {'old pairs/s':>12} {'fused pairs/s':>14} {'fused ms/batch':>15}")
    for size in args.sizes:
        w, h = map(int, size.split("x"))
        prev_all, nxt_all, _ = synthetic_pairs(max(args.batches), h, w, seed=2)
        prev_all, nxt_all = prev_all.to(dev), nxt_all.to(dev)
        for b in args.batches:
            if time.perf_counter() - t_start > args.budget_s:
                log(f"{size:>8} {b:>5} skipped (time budget)")
                continue
            a, c = prev_all[:b], nxt_all[:b]
            old_rate = float("nan")
            if b == 32:  # baseline on the same machine
                tvl1(a, c, fused=False)
                sec, _ = timed(tvl1, 1, a, c, fused=False)
                old_rate = b / sec
            fused_rate, ms = float("nan"), float("nan")
            if fused_ok:
                tvl1(a, c, fused=True)  # warm-up
                sec, _ = timed(tvl1, args.repeats, a, c, fused=True)
                fused_rate, ms = b / sec, sec * 1e3
            log(f"{size:>8} {b:>5} {old_rate:>12.1f} {fused_rate:>14.1f} {ms:>15.1f}")

    # sync interval sensitivity at one point
    if fused_ok and time.perf_counter() - t_start < args.budget_s:
        w, h = 224, 224
        a, c, _ = synthetic_pairs(64, h, w, seed=2)
        a, c = a.to(dev), c.to(dev)
        for k in sorted({4, SYNC_EVERY, 32}):
            tvl1(a, c, fused=True, sync_every=k)
            sec, _ = timed(tvl1, 2, a, c, fused=True, sync_every=k)
            log(f"224x224 batch 64, sync every {k}: {64 / sec:.1f} pairs/s")
    log(f"total {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
