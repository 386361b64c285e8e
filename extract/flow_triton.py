"""The fused CUDA path of :func:`extract.flow.tvl1`: Triton kernels and their launch loop.

One kernel launch per TV-L1 iteration (thresholding, primal and dual steps of a block of pixels of
one pair, with the squared change summed per tile), a 5 x 5 median kernel before every block of
inner iterations, and per-pair stopping decided on the device: the host only looks at the
"still iterating" flags every ``sync_every`` iterations, one period late, so the launch queue
stays full. Same iterations and stopping rule as the plain PyTorch loop of :mod:`extract.flow`;
results equal up to float rounding.

Triton is optional: :data:`AVAILABLE` says whether it is installed (``TRITON_INTERPRET=1`` runs
the kernels on the CPU, slowly, for tests).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AVAILABLE", "TRITON_VERSION", "SYNC_EVERY", "iterate"]

try:  # optional: only the CUDA fast path needs it (TRITON_INTERPRET=1 runs it on CPU, slowly)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None

_ITER_BLOCK = 1024  # pixels per program of the iteration kernel
_MEDIAN_BLOCK = 64  # pixels per program of the median kernel (x 32 window slots)
SYNC_EVERY = 16  # default iterations between looks at the device's "still iterating" flags

AVAILABLE = triton is not None
TRITON_VERSION: str | None = getattr(triton, "__version__", None)

if triton is not None:

    @triton.jit
    def _primal(s_ptr, usrc_ptr, coef_ptr, off, hw, valid, has_left, has_up, w, lt, theta):
        """u after the thresholding and primal steps at flat pixel offsets ``off`` (one pair):
        the old u (from usrc) and the new u, both components."""
        u0 = tl.load(usrc_ptr + off, mask=valid, other=0.0)
        u1 = tl.load(usrc_ptr + hw + off, mask=valid, other=0.0)
        rc = tl.load(coef_ptr + off, mask=valid, other=0.0)
        ix = tl.load(coef_ptr + hw + off, mask=valid, other=0.0)
        iy = tl.load(coef_ptr + 2 * hw + off, mask=valid, other=0.0)
        nig = tl.load(coef_ptr + 3 * hw + off, mask=valid, other=0.0)
        rho = (rc + ix * u0) + iy * u1
        step = tl.minimum(tl.maximum(rho * nig, -lt), lt)
        px0 = tl.load(s_ptr + 2 * hw + off, mask=valid, other=0.0)
        px1 = tl.load(s_ptr + 3 * hw + off, mask=valid, other=0.0)
        py0 = tl.load(s_ptr + 4 * hw + off, mask=valid, other=0.0)
        py1 = tl.load(s_ptr + 5 * hw + off, mask=valid, other=0.0)
        left = valid & has_left
        up = valid & has_up
        pxl0 = tl.load(s_ptr + 2 * hw + off - 1, mask=left, other=0.0)
        pxl1 = tl.load(s_ptr + 3 * hw + off - 1, mask=left, other=0.0)
        pyu0 = tl.load(s_ptr + 4 * hw + off - w, mask=up, other=0.0)
        pyu1 = tl.load(s_ptr + 5 * hw + off - w, mask=up, other=0.0)
        n0 = (((u0 + step * ix) + theta * px0) + theta * py0) - theta * pxl0 - theta * pyu0
        n1 = (((u1 + step * iy) + theta * px1) + theta * py1) - theta * pxl1 - theta * pyu1
        return u0, u1, n0, n1, px0, px1, py0, py1

    @triton.jit
    def _tvl1_iteration_kernel(
        s_in, s_out, usrc, usrc_stride, coef, part_in, part_out, alive_out,
        h, w, n_tiles, eps, lt, theta, taut,
        BLOCK: tl.constexpr, TILES_P2: tl.constexpr,
    ):
        """One TV-L1 iteration for one block of pixels of one pair (grid: tiles x pairs).

        State ``s`` is (N, 6, h, w): u1, u2, p1 (x parts), p2 (y parts); read from ``s_in``,
        written to ``s_out``. ``usrc`` holds the u to start from (``s_in`` or its median).
        A pair iterates while the sum of its previous iteration's squared change (partial sums
        per tile in ``part_in``) is above ``eps``; once stopped, it copies its state once and
        then only marks its partial sums with -1 (both buffers then hold the final state).
        """
        t = tl.program_id(0)
        n = tl.program_id(1).to(tl.int64)
        hw = h * w
        ks = tl.arange(0, TILES_P2)
        parts = tl.load(part_in + n * TILES_P2 + ks, mask=ks < n_tiles, other=0.0)
        tot = tl.sum(parts, axis=0)
        alive = tot > eps  # eps = -inf on a warp's first iteration
        if t == 0:
            tl.store(alive_out + n, alive.to(tl.int32))
        pix = t * BLOCK + tl.arange(0, BLOCK)
        valid = pix < hw
        base = n * 6 * hw
        if alive:
            y = pix // w
            x = pix - y * w
            has_right = x + 1 < w
            has_down = y + 1 < h
            sp = s_in + base
            up_ = usrc + n * usrc_stride
            cp = coef + n * 4 * hw
            u0, u1, n0, n1, px0, px1, py0, py1 = _primal(sp, up_, cp, pix, hw, valid, x > 0, y > 0, w, lt, theta)
            r_ok = valid & has_right
            d_ok = valid & has_down
            _, _, r0, r1, _, _, _, _ = _primal(sp, up_, cp, pix + 1, hw, r_ok, x >= 0, y > 0, w, lt, theta)
            _, _, d0, d1, _, _, _, _ = _primal(sp, up_, cp, pix + w, hw, d_ok, x > 0, y >= 0, w, lt, theta)
            e0 = n0 - u0
            e1 = n1 - u1
            err = tl.sum(tl.where(valid, e0 * e0 + e1 * e1, 0.0), axis=0)
            tl.store(part_out + n * TILES_P2 + t, err)
            dx0 = tl.where(has_right, r0 - n0, 0.0)
            dx1 = tl.where(has_right, r1 - n1, 0.0)
            dy0 = tl.where(has_down, d0 - n0, 0.0)
            dy1 = tl.where(has_down, d1 - n1, 0.0)
            g0 = tl.sqrt_rn(dx0 * dx0 + dy0 * dy0) * taut + 1.0
            g1 = tl.sqrt_rn(dx1 * dx1 + dy1 * dy1) * taut + 1.0
            op = s_out + base
            tl.store(op + pix, n0, mask=valid)
            tl.store(op + hw + pix, n1, mask=valid)
            tl.store(op + 2 * hw + pix, tl.fdiv(px0 + taut * dx0, g0, ieee_rounding=True), mask=valid)
            tl.store(op + 3 * hw + pix, tl.fdiv(px1 + taut * dx1, g1, ieee_rounding=True), mask=valid)
            tl.store(op + 4 * hw + pix, tl.fdiv(py0 + taut * dy0, g0, ieee_rounding=True), mask=valid)
            tl.store(op + 5 * hw + pix, tl.fdiv(py1 + taut * dy1, g1, ieee_rounding=True), mask=valid)
        else:
            if tot >= 0:  # stopped at this iteration: carry the final state into s_out
                for c in tl.static_range(6):
                    v = tl.load(s_in + base + c * hw + pix, mask=valid)
                    tl.store(s_out + base + c * hw + pix, v, mask=valid)
            tl.store(part_out + n * TILES_P2 + t, -1.0)

    @triton.jit
    def _median5_kernel(src, src_stride, dst, alive, h, w, BLOCK: tl.constexpr):
        """5 x 5 median (replicated border) of u1, u2 of the pairs still iterating
        (grid: tiles x 2N planes); ``dst`` is (N, 2, h, w)."""
        t = tl.program_id(0)
        plane = tl.program_id(1).to(tl.int64)
        n = plane // 2
        c = plane - 2 * n
        if tl.load(alive + n) != 0:
            hw = h * w
            pix = t * BLOCK + tl.arange(0, BLOCK)
            valid = pix < hw
            y = pix // w
            x = pix - y * w
            k = tl.arange(0, 32)
            dy = k // 5 - 2
            dx = k - (k // 5) * 5 - 2
            yy = tl.minimum(tl.maximum(y[:, None] + dy[None, :], 0), h - 1)
            xx = tl.minimum(tl.maximum(x[:, None] + dx[None, :], 0), w - 1)
            m = valid[:, None] & (k < 25)[None, :]
            v = tl.load(src + n * src_stride + c * hw + yy * w + xx, mask=m, other=float("inf"))
            v = tl.sort(v, dim=1)
            med = tl.sum(tl.where((k == 12)[None, :], v, 0.0), axis=1)
            tl.store(dst + plane * hw + pix, med, mask=valid)


def iterate(rho_c: Tensor, ig: Tensor, neg_inv_grad: Tensor, state: Tensor, *, lt: float, theta: float,
            taut: float, scaled_eps: float, inner_iterations: int, outer_iterations: int,
            median_filtering: int, sync_every: int = SYNC_EVERY) -> Tensor:
    """The iterations of one warp, fused: one kernel launch per iteration, per-pair stopping
    decided on the device, the host looking at the flags only every ``sync_every`` iterations.
    Same iterations and stopping rule as the plain loop of :mod:`extract.flow`.

    Args:
        rho_c (float32 Tensor[N, h, w]): constant part of the linearised data term,
            ``I1(x + u0) - grad I1 . u0 - I0``.
        ig (float32 Tensor[N, 2, h, w]): the warped gradient of I1 (x, y).
        neg_inv_grad (float32 Tensor[N, h, w]): ``-1 / |grad I1|^2``.
        state (float32 Tensor[N, 6, h, w]): the flow u (2 channels), then the x parts and the y
            parts of its dual variables (2 each), at the start.
        lt, theta, taut: ``lambda * theta``, theta, ``tau / theta``.
        scaled_eps: a pair stops once its squared flow change summed over pixels is at most this.
        inner_iterations, outer_iterations: at most ``outer * inner`` iterations; the median
            filter (``median_filtering`` 5, or 1 for none) runs before each block of ``inner``.
        sync_every: iterations between host looks at the stop flags (>= 1).

    Returns:
        float32 Tensor[N, 6, h, w]: the updated state (a new tensor).
    """
    if not AVAILABLE:
        raise RuntimeError("the fused TV-L1 iterations need Triton")
    if sync_every < 1:
        raise ValueError(f"sync_every must be >= 1, got {sync_every}")
    N, _, h, w = state.shape
    hw = h * w
    coef = torch.cat([rho_c[:, None], ig, neg_inv_grad[:, None]], dim=1).contiguous()
    n_tiles = triton.cdiv(hw, _ITER_BLOCK)
    tiles_p2 = triton.next_power_of_2(n_tiles)
    bufs = [state.contiguous(), torch.empty_like(state)]
    parts = [torch.zeros(N, tiles_p2, device=state.device) for _ in range(2)]
    alive = torch.ones(N, dtype=torch.int32, device=state.device)
    med = torch.empty(N, 2, h, w, device=state.device) if median_filtering > 1 else None
    grid = (n_tiles, N)
    cur = 0
    pending = None  # (event, pinned flags) of the previous look, checked one look later
    total = outer_iterations * inner_iterations
    for it in range(total):
        src, src_stride = bufs[cur], 6 * hw
        if med is not None and it % inner_iterations == 0:
            _median5_kernel[(triton.cdiv(hw, _MEDIAN_BLOCK), 2 * N)](
                bufs[cur], 6 * hw, med, alive, h, w, BLOCK=_MEDIAN_BLOCK)
            src, src_stride = med, 2 * hw
        _tvl1_iteration_kernel[grid](
            bufs[cur], bufs[1 - cur], src, src_stride, coef, parts[(it + 1) % 2], parts[it % 2], alive,
            h, w, n_tiles, scaled_eps if it else float("-inf"), lt, theta, taut,
            BLOCK=_ITER_BLOCK, TILES_P2=tiles_p2)
        cur = 1 - cur
        if (it + 1) % sync_every == 0 and it + 1 < total:
            # alive = the pairs that iterated in the last launch; none -> all have stopped and
            # the last launches only copied. Looked at one period late, to keep the queue full.
            if state.device.type == "cuda":
                flags = torch.empty(N, dtype=torch.int32, pin_memory=True)
                flags.copy_(alive, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            else:
                flags, event = alive.clone(), None
            if pending is not None:
                if pending[0] is not None:
                    pending[0].synchronize()
                if not bool(pending[1].any()):
                    break
            pending = (event, flags)
    return bufs[cur]
