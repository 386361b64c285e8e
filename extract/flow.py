"""TV-L1 optical flow in PyTorch, matching OpenCV's ``cv2.optflow.DualTVL1OpticalFlow``.

The solver is the duality-based TV-L1 scheme of Zach, Pock and Bischof (2007), in the form
detailed by Sánchez, Meinhardt-Llopis and Facciolo ("TV-L1 Optical Flow Estimation", IPOL 2013),
with the discretisation, pyramid and stopping rule of OpenCV's implementation, so that
:func:`tvl1` reproduces :func:`opencv_tvl1` to a small fraction of a pixel on real frames.

Everything is batched over frame pairs and written with plain tensor operations, so the same
code runs on CPU and CUDA. Pairs stop iterating independently (masks), so a batch gives the
same flow as running each pair alone. On CUDA, where Triton is installed, the iterations of each
warp run as fused kernels instead (:mod:`extract.flow_triton`; same iterations, same stopping
rule, results equal up to float rounding).

Conventions: images are ``(N, H, W)`` float32 grayscale in [0, 255] (8-bit values, as OpenCV
uses them); flow is ``(N, 2, H, W)`` float32 in pixels, channel 0 the x (column) displacement
and channel 1 the y (row) displacement, such that ``prev[y, x] ~ nxt[y + v, x + u]``.

    >>> flow = tvl1(prev, nxt)                      # OpenCV's defaults
    >>> flow = tvl1(prev, nxt, warps=3, nscales=3)  # keyword arguments override them
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from extract import flow_triton

__all__ = [
    "tvl1",
    "opencv_tvl1",
    "rgb_to_gray",
    "pyramid_sizes",
    "resize_linear",
    "remap_cubic",
    "centered_gradient",
    "forward_gradient",
    "divergence",
    "median_blur5",
]

_CUBIC_A = -0.75  # Keys' parameter used by OpenCV's INTER_CUBIC

CPU_CHUNK = 1
"""Pairs :func:`tvl1` solves together on the CPU by default. On a 2-core machine chunks of 1, 2 and 4 pairs were
level and a whole batch the slowest (``benchmarks/flow.py --chunks``); the extractor's flow stream ran 3.7x faster
with 1 than with its batches of 128 pairs (``benchmarks/flow_extract_cpu.py``; benchmarks/flow_notes.md)."""


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def rgb_to_gray(rgb: Tensor) -> Tensor:
    """Grayscale exactly as ``cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)`` on 8-bit images.

    OpenCV 5 rounds ``0.299 R + 0.587 G + 0.114 B`` in 15-bit fixed point with weights
    (9798, 19235, 3735) / 2^15, found to match it exactly on all tested colours (OpenCV 4 used
    14 bits, (4899, 9617, 1868), which differs by one level on about 0.3 % of colours).

    Args:
        rgb (uint8 Tensor[..., 3]): RGB channels last.

    Returns:
        float32 Tensor[...] with integer values in [0, 255].
    """
    if rgb.dtype != torch.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8 [..., 3], got {rgb.dtype} {tuple(rgb.shape)}")
    c = rgb.to(torch.int32)
    y = (c[..., 0] * 9798 + c[..., 1] * 19235 + c[..., 2] * 3735 + (1 << 14)) >> 15
    return y.to(torch.float32)


def pyramid_sizes(height: int, width: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """(height, width) of each pyramid level, finest first, as OpenCV builds them.

    Each level is the previous one resized by ``scale_step`` with sizes rounded to the nearest
    integer; the pyramid stops early once a side would drop below 16 pixels.
    """
    sizes = [(height, width)]
    for _ in range(1, nscales):
        h, w = sizes[-1]
        h, w = _round_half_even(h * scale_step), _round_half_even(w * scale_step)
        if h < 16 or w < 16:
            break
        sizes.append((h, w))
    return sizes


def _round_half_even(x: float) -> int:
    return int(round(x))  # cvRound/saturate_cast: round half to even, like Python


def _linear_taps(n_in: int, n_out: int, scale: float, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices (i0, i1) and weight of i1 for one axis of cv2.resize INTER_LINEAR.

    Output pixel ``d`` samples source position ``(d + 0.5) * scale - 0.5`` (pixel centres
    aligned); positions left of 0 or right of ``n_in - 1`` are clamped to the edge pixel.
    Computed in float64 like OpenCV, the fractional weight then rounded to float32.
    """
    s = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    i0 = np.floor(s)
    f = s - i0
    i0 = i0.astype(np.int64)
    low, high = i0 < 0, i0 >= n_in - 1
    f[low | high] = 0.0
    i0[low] = 0
    i0[high] = n_in - 1
    i1 = np.minimum(i0 + 1, n_in - 1)
    as_t = lambda a, dt: torch.as_tensor(a, dtype=dt, device=device)  # noqa: E731
    return as_t(i0, torch.long), as_t(i1, torch.long), as_t(f.astype(np.float32), torch.float32)


def resize_linear(x: Tensor, size: tuple[int, int], scale: tuple[float, float] | None = None) -> Tensor:
    """Bilinear resize equal to ``cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)``.

    No antialiasing (OpenCV applies none), pixel-centre alignment, replicated borders.

    Args:
        x (float32 Tensor[..., H, W]): images.
        size: output (height, width).
        scale: source pixels per output pixel (y, x); defaults to ``(H / h, W / w)``. OpenCV
            uses ``1 / fy, 1 / fx`` when called with factors, which can differ slightly from
            the size ratio after rounding (``cv2.resize(x, None, fx=0.8, fy=0.8)`` is
            ``resize_linear(x, size, (1.25, 1.25))``).

    Returns:
        float32 Tensor[..., h, w].
    """
    h, w = size
    H, W = x.shape[-2:]
    sy, sx = scale if scale is not None else (H / h, W / w)
    y0, y1, fy = _linear_taps(H, h, sy, x.device)
    x0, x1, fx = _linear_taps(W, w, sx, x.device)
    rows = x.index_select(-1, x0) * (1 - fx) + x.index_select(-1, x1) * fx
    fy = fy[:, None]
    return rows.index_select(-2, y0) * (1 - fy) + rows.index_select(-2, y1) * fy


def _cubic_weights(t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Keys' cubic convolution weights (a = -0.75) of the taps at offsets -1, 0, 1, 2 for a
    fractional position ``t`` in [0, 1)."""
    a = _CUBIC_A
    t1 = t + 1
    w0 = ((a * t1 - 5 * a) * t1 + 8 * a) * t1 - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    s = 1 - t
    w2 = ((a + 2) * s - (a + 3)) * s * s + 1
    w3 = 1 - w0 - w1 - w2
    return w0, w1, w2, w3


def remap_cubic(img: Tensor, map_x: Tensor, map_y: Tensor, border: str = "replicate") -> Tensor:
    """Bicubic sampling equal to ``cv2.remap(img, map_x, map_y, cv2.INTER_CUBIC, borderMode=...)``.

    Keys' kernel with a = -0.75 over the 4 x 4 neighbourhood; coordinates are used at full float
    precision (OpenCV >= 4.11 no longer quantises them to 1/32 pixel).

    Args:
        img (float32 Tensor[N, C, H, W]): images; all C channels share the map.
        map_x, map_y (float32 Tensor[N, h, w]): source column / row of each output pixel.
        border: ``"replicate"`` (taps clamped to the edge, BORDER_REPLICATE) or ``"constant"``
            (taps outside the image read 0, BORDER_CONSTANT).

    Returns:
        float32 Tensor[N, C, h, w].
    """
    N, C, H, W = img.shape
    x0 = torch.floor(map_x)
    y0 = torch.floor(map_y)
    wx = _cubic_weights(map_x - x0)
    wy = _cubic_weights(map_y - y0)
    # integer base coordinates, kept in a range where index arithmetic cannot overflow
    x0 = x0.clamp(-4, W + 4).to(torch.long)
    y0 = y0.clamp(-4, H + 4).to(torch.long)
    flat = img.reshape(N, C, H * W)
    out = torch.zeros((N, C) + map_x.shape[1:], dtype=img.dtype, device=img.device)
    for i in range(4):
        yi = y0 + (i - 1)
        row = yi.clamp(0, H - 1) * W
        row_ok = (yi >= 0) & (yi < H)
        acc = None
        for j in range(4):
            xj = x0 + (j - 1)
            idx = (row + xj.clamp(0, W - 1)).reshape(N, 1, -1).expand(N, C, -1)
            v = flat.gather(2, idx).reshape(out.shape)
            if border == "constant":
                v = v * ((xj >= 0) & (xj < W) & row_ok).unsqueeze(1)
            elif border != "replicate":
                raise ValueError(f"unknown border {border!r}")
            term = v * wx[j].unsqueeze(1)
            acc = term if acc is None else acc + term
        out += acc * wy[i].unsqueeze(1)
    return out


def centered_gradient(img: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences ``(I[x+1] - I[x-1]) / 2`` with replicated borders (one-sided half
    differences on the first / last column and row), as OpenCV's TV-L1.

    Args:
        img (float32 Tensor[..., H, W]).

    Returns:
        (gx, gy): float32 Tensors[..., H, W], intensity per pixel along x (columns) and y (rows).
    """
    *lead, H, W = img.shape
    p = F.pad(img.reshape(-1, 1, H, W), (1, 1, 1, 1), mode="replicate").reshape(*lead, H + 2, W + 2)
    gx = 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2])
    gy = 0.5 * (p[..., 2:, 1:-1] - p[..., :-2, 1:-1])
    return gx, gy


def forward_gradient(u: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences ``u[x+1] - u[x]``, zero on the last column (x) and last row (y).

    Args:
        u (float32 Tensor[..., H, W]).

    Returns:
        (ux, uy): float32 Tensors[..., H, W].
    """
    ux = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1, 0, 0))
    uy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    return ux, uy


def divergence(p1: Tensor, p2: Tensor) -> Tensor:
    """Backward-difference divergence ``p1[x] - p1[x-1] + p2[y] - p2[y-1]`` with
    ``p[-1] = 0`` (OpenCV's TV-L1 discretisation).

    For fields whose last column of ``p1`` and last row of ``p2`` are zero (always the case for
    the dual variables of TV-L1) this is minus the adjoint of :func:`forward_gradient`:
    ``<forward_gradient(u), p> = -<u, divergence(p)>``.

    Args:
        p1, p2 (float32 Tensor[..., H, W]): x and y components.

    Returns:
        float32 Tensor[..., H, W].
    """
    return p1 - F.pad(p1[..., :, :-1], (1, 0, 0, 0)) + p2 - F.pad(p2[..., :-1, :], (0, 0, 1, 0))


def _batcher_network(n: int) -> list[tuple[int, int]]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort for ``n`` inputs (the
    network for the next power of two, minus comparators touching the padding)."""
    m = 1 << max(n - 1, 0).bit_length()
    comps = []
    p = 1
    while p < m:
        k = p
        while k >= 1:
            for j in range(k % p, m - k, 2 * k):
                for i in range(min(k, m - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        comps.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return [(a, b) for a, b in comps if b < n]


@functools.cache
def _selection_network(n: int, outputs: tuple[int, ...]) -> tuple[tuple[int, int, bool, bool], ...]:
    """Batcher's sorting network for ``n`` inputs pruned to the comparators that the order
    statistics ``outputs`` depend on, as (i, j, need_min, need_max)."""
    need, kept = set(outputs), []
    for a, b in reversed(_batcher_network(n)):
        if a in need or b in need:
            kept.append((a, b, a in need, b in need))
            need |= {a, b}
    return tuple(reversed(kept))


def _select(values: list[Tensor], outputs: tuple[int, ...]) -> list[Tensor]:
    """Order statistics ``outputs`` (0 = smallest) of the elementwise values, by a network of
    ``torch.minimum`` / ``torch.maximum``."""
    x = list(values)
    for a, b, need_min, need_max in _selection_network(len(x), outputs):
        xa, xb = x[a], x[b]
        if need_min:
            x[a] = torch.minimum(xa, xb)
        if need_max:
            x[b] = torch.maximum(xa, xb)
    return [x[k] for k in outputs]


# In a 5 x 5 window whose columns and then rows are sorted, entry (i, j) has at least
# (i+1)(j+1) - 1 entries below it and (5-i)(5-j) - 1 above; the 6 entries with more than 12 above
# and the 6 with more than 12 below cannot be the median, which is the median of the other 13.
_MEDIAN5_CANDIDATES = ((3, 4), (2, 3, 4), (1, 2, 3), (0, 1, 2), (0, 1))


def median_blur5(u: Tensor) -> Tensor:
    """5 x 5 median with replicated borders, equal to ``cv2.medianBlur(u, 5)`` on float32.

    Sorts each 5-pixel column once (shared by the 5 windows that contain it), partially sorts
    the rows of the column-sorted window, then takes the median of the 13 remaining candidates;
    about 150 elementwise min / max operations in all, no per-pixel sort.

    Args:
        u (float32 Tensor[..., H, W]).

    Returns:
        float32 Tensor[..., H, W].
    """
    shape = u.shape
    H, W = shape[-2:]
    p = F.pad(u.reshape(-1, 1, H, W), (2, 2, 2, 2), mode="replicate")[:, 0]
    cols = _select([p[:, i:i + H] for i in range(5)], (0, 1, 2, 3, 4))
    candidates = []
    for rank, wanted in enumerate(_MEDIAN5_CANDIDATES):
        candidates += _select([cols[rank][..., j:j + W] for j in range(5)], wanted)
    return _select(candidates, (6,))[0].reshape(shape)


# --------------------------------------------------------------------------------------------
# Solver
# --------------------------------------------------------------------------------------------


def _solve_scale(
    i0: Tensor,
    i1: Tensor,
    u: Tensor,
    *,
    tau: float,
    lambd: float,
    theta: float,
    warps: int,
    epsilon: float,
    inner_iterations: int,
    outer_iterations: int,
    median_filtering: int,
    fused: bool = False,
    sync_every: int = flow_triton.SYNC_EVERY,
    kernels: flow_triton.Kernels = flow_triton.Kernels(),
) -> Tensor:
    """Refine the flow at one pyramid level.

    Args:
        i0, i1 (float32 Tensor[N, h, w]): the two images at this level.
        u (float32 Tensor[N, 2, h, w]): initial flow, pixels at this level.

    Returns:
        float32 Tensor[N, 2, h, w]: the refined flow.

    Each warp re-linearises the data term around the current flow, then iterates until a pair's
    squared flow change ``sum |u_k - u_{k-1}|^2`` drops to ``epsilon^2 * h * w`` or after
    ``outer * inner`` iterations, median-filtering the flow before every ``inner`` iterations.
    Pairs that have converged leave the working set (boolean-mask compaction), so a pair's
    result does not depend on the rest of its batch. The dual variables persist across warps.
    ``fused`` runs the iterations as one Triton kernel each (:func:`extract.flow_triton.iterate`,
    the host looking at the stop flags every ``sync_every`` iterations; ``kernels`` picks the
    iteration kernel and whether the warp is one Triton kernel too): the same iterations and
    stopping rule, results equal up to float rounding.
    """
    N, h, w = i0.shape
    device = i0.device
    gx, gy = centered_gradient(i1)
    images = torch.stack([i1, gx, gy], dim=1)  # warped together: (N, 3, h, w)
    ys = torch.arange(h, device=device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, w)
    px_all = torch.zeros(N, 2, h, w, device=device)  # x parts of the duals of (u1, u2)
    py_all = torch.zeros(N, 2, h, w, device=device)  # y parts
    lt = lambd * theta
    taut = tau / theta
    scaled_eps = epsilon * epsilon * h * w
    u = u.clone()
    state = None  # fused path: (N, 6, h, w) = (u, px, py)
    for _ in range(warps):
        if fused and kernels.warp == "triton":
            coef = flow_triton.linearise(images, i0, u, kernels)  # the warp and formulas below, one kernel
        else:
            warped = remap_cubic(images, xs + u[:, 0], ys + u[:, 1], border="constant")
            i1w, ig = warped[:, 0], warped[:, 1:].contiguous()  # ig: warped (Ix, Iy), (N, 2, h, w)
            ix, iy = ig[:, 0], ig[:, 1]
            rho_c = i1w - ix * u[:, 0] - iy * u[:, 1] - i0
            # -1 / |grad I1|^2. OpenCV takes a zero step where |grad I1|^2 <= FLT_EPSILON and
            # |rho| <= lt |grad I1|^2; here that step is clamp(-rho / |grad I1|^2), which moves the
            # flow by at most lt * sqrt(FLT_EPSILON) ~ 2e-5 px there.
            neg_inv_grad = (ix * ix + iy * iy).clamp_min_(1e-30).reciprocal_().neg_()
            if fused:
                coef = torch.cat([rho_c[:, None], ig, neg_inv_grad[:, None]], dim=1)
        if fused:
            state = torch.cat([u, px_all, py_all], dim=1) if state is None else state
            state = flow_triton.iterate(
                coef, state, lt=lt, theta=theta, taut=taut, scaled_eps=scaled_eps,
                inner_iterations=inner_iterations, outer_iterations=outer_iterations,
                median_filtering=median_filtering, sync_every=sync_every, kernels=kernels)
            u = state[:, :2]
            continue

        # working set: the pairs still iterating, and their state
        idx = torch.arange(N, device=device)
        uw, px, py = u, px_all, py_all
        dx = torch.zeros_like(u)  # forward differences of u; last column / row stay 0
        dy = torch.zeros_like(u)
        for it in range(outer_iterations * inner_iterations):
            if median_filtering > 1 and it % inner_iterations == 0:
                uw = median_blur5(uw)
            # thresholding step: v = u + clamp(-rho / |grad I1|^2, -lt, lt) * grad I1
            rho = torch.addcmul(rho_c, ix, uw[:, 0]).addcmul_(iy, uw[:, 1])
            step = rho.mul_(neg_inv_grad).clamp_(-lt, lt)
            un = torch.addcmul(uw, step.unsqueeze(1), ig)
            # primal step: u = v + theta * div p
            un.add_(px, alpha=theta).add_(py, alpha=theta)
            un[..., :, 1:].sub_(px[..., :, :-1], alpha=theta)
            un[..., 1:, :].sub_(py[..., :-1, :], alpha=theta)
            err = (un - uw).square_().sum(dim=(1, 2, 3))
            uw = un
            # dual step: p = (p + taut * grad u) / (1 + taut * |grad u|)
            torch.sub(uw[..., :, 1:], uw[..., :, :-1], out=dx[..., :, :-1])
            torch.sub(uw[..., 1:, :], uw[..., :-1, :], out=dy[..., :-1, :])
            ng = torch.hypot(dx, dy).mul_(taut).add_(1)
            px = px.add_(dx, alpha=taut).div_(ng)
            py = py.add_(dy, alpha=taut).div_(ng)

            going = err > scaled_eps
            if not bool(going.all()):
                done = ~going
                u[idx[done]] = uw[done]
                if px is not px_all:  # else already updated in place
                    px_all[idx[done]] = px[done]
                    py_all[idx[done]] = py[done]
                if not bool(going.any()):
                    break
                idx = idx[going]
                uw, px, py, dx, dy = uw[going], px[going], py[going], dx[going], dy[going]
                rho_c, ig, neg_inv_grad = rho_c[going], ig[going], neg_inv_grad[going]
                ix, iy = ig[:, 0], ig[:, 1]
        else:
            u[idx] = uw
            if px is not px_all:
                px_all[idx] = px
                py_all[idx] = py
    return u.contiguous()


def tvl1(
    prev: Tensor,
    nxt: Tensor,
    *,
    tau: float = 0.25,
    lambd: float = 0.15,
    theta: float = 0.3,
    nscales: int = 5,
    scale_step: float = 0.8,
    warps: int = 5,
    epsilon: float = 0.01,
    inner_iterations: int = 30,
    outer_iterations: int = 10,
    median_filtering: int = 5,
    gamma: float = 0.0,
    fused: bool | None = None,
    sync_every: int = flow_triton.SYNC_EVERY,
    kernels: flow_triton.Kernels = flow_triton.Kernels(),
    chunk: int | None = None,
) -> Tensor:
    """Dense TV-L1 optical flow from ``prev`` to ``nxt`` for a batch of frame pairs.

    Defaults are those of ``cv2.optflow.DualTVL1OpticalFlow_create()``.

    Args:
        prev, nxt (float32 Tensor[N, H, W]): grayscale frames, values in [0, 255] (the scale
            matters: ``lambd`` weighs intensity differences in 8-bit units).
        tau: time step of the dual (numerical, <= 0.25 for stability).
        lambd: weight of the data term; smaller gives smoother flow.
        theta: coupling between the two primal variables.
        nscales: number of pyramid levels (fewer when a side would fall under 16 pixels).
        scale_step: size ratio between consecutive levels.
        warps: warpings (re-linearisations of the data term) per level.
        epsilon: stopping threshold: a pair stops when the mean over pixels of the squared
            flow change of one iteration, ``|u_k - u_{k-1}|^2``, is at most ``epsilon^2`` px^2.
        inner_iterations, outer_iterations: at most ``outer * inner`` iterations per warp; the
            median filter runs before each block of ``inner`` iterations.
        median_filtering: median filter size; 5 (OpenCV's default) or 1 (off).
        gamma: only 0 (no illumination term) is supported.
        fused: run each iteration as one Triton kernel with the stopping test on the device
            (:func:`extract.flow_triton.iterate`; same iterations, results equal up to float rounding).
            Default: on for CUDA inputs when Triton is installed, off otherwise (the plain
            PyTorch loop). True on CPU needs ``TRITON_INTERPRET=1`` (slow; for tests).
        sync_every: fused path: iterations between the host's looks at the per-pair stop flags
            (default 16; fewer looks keep the GPU's queue fuller, more stop sooner).
        kernels: fused path: which Triton kernels run (:class:`extract.flow_triton.Kernels`; the
            default is the one timed on a GPU, the others give the same flow up to float rounding).
        chunk: pairs solved together; a larger batch is solved ``chunk`` pairs at a time (each pair's flow
            is the same either way). Default: :data:`CPU_CHUNK` for the plain loop on the CPU, where a batch's
            working set (about 10 MB a pair at 340x256) leaves the caches; all of them otherwise.

    Returns:
        float32 Tensor[N, 2, H, W]: flow in pixels, (x, y), on the inputs' device.
    """
    if gamma != 0:
        raise NotImplementedError("gamma != 0 (illumination variation term) is not implemented")
    if median_filtering not in (1, 5):
        raise NotImplementedError("only median_filtering 5 (OpenCV's default) or 1 (off)")
    if prev.shape != nxt.shape or prev.dim() != 3:
        raise ValueError(f"expected two (N, H, W) tensors, got {tuple(prev.shape)} and {tuple(nxt.shape)}")
    i0 = prev.to(torch.float32)
    i1 = nxt.to(torch.float32)
    if fused is None:
        fused = flow_triton.AVAILABLE and i0.is_cuda
    elif fused and not flow_triton.AVAILABLE:
        raise RuntimeError("fused=True needs Triton")
    if chunk is None:
        chunk = CPU_CHUNK if i0.device.type == "cpu" and not fused else max(len(i0), 1)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if len(i0) > chunk:
        solve = functools.partial(
            tvl1, tau=tau, lambd=lambd, theta=theta, nscales=nscales, scale_step=scale_step, warps=warps,
            epsilon=epsilon, inner_iterations=inner_iterations, outer_iterations=outer_iterations,
            median_filtering=median_filtering, gamma=gamma, fused=fused, sync_every=sync_every, kernels=kernels,
            chunk=chunk)
        return torch.cat([solve(a, b) for a, b in zip(i0.split(chunk), i1.split(chunk))])
    N, H, W = i0.shape
    sizes = pyramid_sizes(H, W, nscales, scale_step)
    pyr0, pyr1 = [i0], [i1]
    for size in sizes[1:]:
        both = resize_linear(torch.stack([pyr0[-1], pyr1[-1]]), size, (1 / scale_step, 1 / scale_step))
        pyr0.append(both[0])
        pyr1.append(both[1])
    u = torch.zeros(N, 2, *sizes[-1], device=i0.device)
    for s in range(len(sizes) - 1, -1, -1):
        u = _solve_scale(
            pyr0[s], pyr1[s], u, tau=tau, lambd=lambd, theta=theta, warps=warps, epsilon=epsilon,
            inner_iterations=inner_iterations, outer_iterations=outer_iterations,
            median_filtering=median_filtering, fused=fused, sync_every=sync_every, kernels=kernels)
        if s > 0:
            u = resize_linear(u, sizes[s - 1]) * (1 / scale_step)
    return u


def opencv_tvl1(prev: np.ndarray | Tensor, nxt: np.ndarray | Tensor, **params: float) -> np.ndarray | Tensor:
    """Reference backend: ``cv2.optflow.DualTVL1OpticalFlow_create(**params).calc`` per pair.

    Args:
        prev, nxt (array or Tensor [N, H, W] or [H, W]): grayscale frames; uint8, or float in
            [0, 255] (rounded to uint8 when integral, otherwise passed as float / 255, which
            OpenCV scales back by 255).
        params: overrides with OpenCV's setter names in snake case (``tau``, ``lambda_``,
            ``theta``, ``scales_number``, ``scale_step``, ``warpings_number``, ``epsilon``,
            ``inner_iterations``, ``outer_iterations``, ``median_filtering``, ``gamma``).

    Returns:
        float32 flow [N, 2, H, W] (or [2, H, W] for single frames), a Tensor on the inputs'
        device when given Tensors, else a numpy array.
    """
    import cv2  # optional dependency, imported on use

    is_tensor = isinstance(prev, Tensor)
    device = prev.device if is_tensor else None
    a = prev.detach().cpu().numpy() if is_tensor else np.asarray(prev)
    b = nxt.detach().cpu().numpy() if isinstance(nxt, Tensor) else np.asarray(nxt)
    single = a.ndim == 2
    if single:
        a, b = a[None], b[None]
    algo = cv2.optflow.DualTVL1OpticalFlow_create()
    for name, value in params.items():
        setter = "set" + "".join(part.capitalize() for part in name.rstrip("_").split("_"))
        getattr(algo, setter)(value)
    out = np.empty((a.shape[0], 2) + a.shape[1:], np.float32)
    for k in range(a.shape[0]):
        flow = algo.calc(_to_cv(a[k]), _to_cv(b[k]), None)
        out[k] = flow.transpose(2, 0, 1)
    if single:
        out = out[0]
    return torch.from_numpy(out).to(device) if is_tensor else out


def _to_cv(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    img = img.astype(np.float32)
    if np.all(img == np.round(img)) and img.min() >= 0 and img.max() <= 255:
        return img.astype(np.uint8)
    return img / 255.0
