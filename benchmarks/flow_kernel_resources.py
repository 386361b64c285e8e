"""Registers, spills and resident warps of the fused TV-L1 kernels, compiled ahead of time for a GPU
that is not here: Triton compiles for the target (``--arch``, default sm_90 = H100/H200) and the
``ptxas`` and ``cuobjdump`` that ship in its wheel report each kernel's resources. No GPU needed.

    python benchmarks/flow_kernel_resources.py [--arch 90] [--kernels flat/torch flat/triton,block=256,num_warps=8 ...]

A kernel choice is written ``ITERATION/WARP[,tile=ROWSxCOLS][,block=N][,num_warps=N]``
(:meth:`extract.flow_triton.Kernels.parse`).

Resident warps per SM (of 64 on sm_80 to sm_90) come from the registers alone, rounded as the
hardware allocates them (8 per thread, 32 threads a warp, 65536 per SM, at most 32 programs per
SM); shared memory (what Triton allocates a program; the tiled kernel's ``tl.gather`` takes 4 bytes
a tile pixel) is small for all these kernels. Few resident warps leave a memory-bound stencil little
to hide its latency with; spilled registers (``stack`` bytes) go to local memory.
Instructions per pixel: the static SASS count of the kernel (these kernels have no loops at run
time; both sides of each branch are counted) times the threads of a program over the pixels it
writes; a rough measure of work, not a time.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

try:
    import triton  # noqa: E402
except ModuleNotFoundError:
    sys.exit("flow_kernel_resources: needs Triton (pip install triton; a CUDA build of torch brings it), "
             "not installed here")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from extract import flow_triton as ft  # noqa: E402

INTS = {"h", "w", "n_tiles", "tiles_x", "usrc_stride", "src_stride"}
FLOATS = {"eps", "lt", "theta", "taut"}
INT_POINTERS = {"alive", "alive_out"}
SASS_INSTRUCTION = re.compile(r"/\*[0-9a-f]{4,}\*/\s+[@!A-Z]")  # "/*0040*/  SHF.R.U64 ..." lines
DEFAULT_CHOICES = [
    "flat/torch",
    "flat/torch,block=512,num_warps=8",
    "flat/torch,block=256,num_warps=8",
    "flat/triton,block=256,num_warps=8",
    "tiled/triton",
    "tiled/triton,tile=16x64,num_warps=8",
    "tiled/triton,tile=16x32,num_warps=8",
    "tiled/triton,tile=8x32,num_warps=4",
    "flat/torch,median=network",
]


def signature(kernel) -> dict[str, str]:
    """Triton types of a kernel's parameters, in order (upper-case names are compile-time constants)."""
    out = {}
    for name in inspect.signature(kernel.fn).parameters:
        if name.isupper():
            out[name] = "constexpr"
        elif name in INTS:
            out[name] = "i32"
        elif name in FLOATS:
            out[name] = "fp32"
        else:
            out[name] = "*i32" if name in INT_POINTERS else "*fp32"
    return out


def resources(launch: ft.Launch, arch: int) -> dict:
    """Compile the launch's kernel for sm_``arch`` and read its resource usage and its static
    instruction count (SASS, both sides of every branch) per pixel written from the cubin."""
    kernel, num_warps = launch.kernel, launch.num_warps
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature(kernel), constexprs=launch.constexprs),
                              target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        text = subprocess.run([str(tool), "--dump-resource-usage", cubin], capture_output=True, text=True,
                              check=True).stdout
        sass = subprocess.run([str(tool), "-sass", cubin], capture_output=True, text=True, check=True).stdout
    instructions = len(SASS_INSTRUCTION.findall(sass))
    line = next(s for s in text.splitlines() if "REG:" in s)
    usage = dict(item.split(":", 1) for item in line.split() if ":" in item)
    regs = int(usage["REG"])
    warps_by_regs = 65536 // (-(-regs // 8) * 8 * 32)
    programs = min(warps_by_regs // num_warps, 32)
    # shared memory: what Triton allocates per program (cuobjdump's SHARED is a fixed 1 KB reserve)
    return {"regs": regs, "stack": int(usage["STACK"]), "shared": compiled.metadata.shared,
            "warps_per_sm": min(programs * num_warps, 64),
            "instructions_per_pixel": instructions * 32 * num_warps / launch.pixels}


def label(name: str, k: ft.Kernels) -> str:
    if name == "iteration":
        return f"iteration tiled {k.tile[0]}x{k.tile[1]}" if k.iteration == "tiled" else f"iteration flat {k.block}"
    return f"median 5x5, {k.median}" if name == "median" else f"warp {k.block}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x 10 (80 A100, 90 H100/H200)")
    ap.add_argument("--size", default="224x224", help="frame size WxH (sets the partial-sum array)")
    ap.add_argument("--kernels", nargs="+", default=DEFAULT_CHOICES)
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    print(f"Triton {triton.__version__}, sm_{args.arch}, {w}x{h}")
    print(f"{'kernel':<28} {'warps':>5} {'regs':>5} {'stack B':>7} {'shared B':>8} {'resident warps/SM':>18} "
          f"{'instructions/px':>16}")
    rows = {}  # (label, warps) -> launch, each distinct kernel once
    for text in args.kernels:
        k = ft.Kernels.parse(text)
        for name, launch in ft.plan(k, h, w, 1).items():
            rows.setdefault((label(name, k), launch.num_warps), launch)
    for (name, num_warps), launch in sorted(rows.items(), key=lambda item: item[0][0].startswith("median")):
        r = resources(launch, args.arch)
        print(f"{name:<28} {num_warps:>5} {r['regs']:>5} {r['stack']:>7} {r['shared']:>8} {r['warps_per_sm']:>18} "
              f"{r['instructions_per_pixel']:>16.0f}")


if __name__ == "__main__":
    main()
