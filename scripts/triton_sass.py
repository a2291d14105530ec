"""Count the machine instructions of the Triton depthwise forward per autotune config, no GPU.

Triton's bundled ``ptxas`` compiles each config of the forward's dense autotune tables for
``sm_90`` (Hopper), and ``cuobjdump`` lists the SASS. Per config: registers, static instructions
per thread in the whole kernel and in the body of its loop over kernel rows (``kh``: the span of
the backward branch, what runs once per kernel row), the FFMA and HMMA in the kernel, the useful
multiply-adds per thread per kernel row (output positions x channels x taps in a row over the
program's threads; the tensor-core path's band zeros not counted) and the loop body's
instructions per useful multiply-add. A static count, not a timing: it bounds an issue-bound
kernel (``docs/triton_plan.md``). Kernel rows longer than 32 taps are not unrolled whole, so the
count is for one loop body of 4 taps there: sizes up to 32 only.

    python scripts/triton_sass.py --kernel-size 17 --dtype bf16

The input gradient runs the same kernel; the kernel gradient is not counted here.
"""

from __future__ import annotations

import argparse
import collections
import inspect
import logging
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from dcls.algorithms import triton as dw_triton

_logger = logging.getLogger("triton_sass")

DTYPES = ("bf16", "fp16", "fp32")


def _tool(name: str) -> Path:
    return Path(dw_triton.triton.__file__).parent / "backends" / "nvidia" / "bin" / name


def compile_for_hopper(fn, constexprs: dict, dtype: str, num_warps: int, num_stages: int):
    """``fn`` compiled to a cubin for sm_90 with Triton's bundled ptxas: no GPU needed. Pointers,
    strides and the channel count are marked 16-divisible, as the JIT marks them for ConvNeXt's
    shapes."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    signature, attrs = {}, {}
    for i, name in enumerate(inspect.signature(fn).parameters):
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        pointer = {"tap_ptr": "*i32", "count_ptr": "*i32", "part_ptr": "*fp32"}
        signature[name] = pointer.get(name, f"*{dtype}") if name.endswith("_ptr") else "i32"
        if name.endswith("_ptr") or name.startswith("s") or name in ("W_STRIDE", "C_OUT"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    source = ASTSource(JITFunction(fn), signature, constexprs, attrs)
    options = {"num_warps": num_warps, "num_stages": num_stages}
    return dw_triton.triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


def _cuobjdump(cubin: bytes, flag: str) -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        command = [str(_tool("cuobjdump")), flag, str(path)]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"cuobjdump {flag} failed: {done.stderr.strip()}")
    return done.stdout


def resource_usage(cubin: bytes) -> dict[str, int]:
    """``{"registers": ..., "local_bytes": ...}`` per thread (local memory: register spills)."""
    usage = _cuobjdump(cubin, "-res-usage")
    found = re.search(r"REG:(\d+).*?LOCAL:(\d+)", usage)
    if not found:
        raise RuntimeError(f"no resource usage in cuobjdump's output: {usage!r}")
    return {"registers": int(found[1]), "local_bytes": int(found[2])}


_SASS_LINE = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)([^;]*)")


def loop_body_instructions(sass: str) -> int:
    """Instructions in the widest loop of ``sass`` (``cuobjdump -sass`` text): from a backward
    branch's target to the branch. The forward's loop over kernel rows, for a dense config
    (its other loops are unrolled); 0 without a loop."""
    instructions = [
        (int(m[1], 16), m[2], m[3]) for m in map(_SASS_LINE.match, sass.splitlines()) if m
    ]
    widest = 0
    for address, opcode, operands in instructions:
        target = re.search(r"0x([0-9a-f]+)", operands) if opcode == "BRA" else None
        if target and int(target[1], 16) < address:
            start = int(target[1], 16)
            widest = max(widest, sum(start <= a <= address for a, _, _ in instructions))
    return widest


def sass_histogram(cubin: bytes) -> collections.Counter:
    """Static count of each SASS opcode (``IMAD.U32`` counts as ``IMAD``), predicates ignored."""
    counts: collections.Counter = collections.Counter()
    for line in _cuobjdump(cubin, "-sass").splitlines():
        match = _SASS_LINE.match(line)
        if match:
            counts[match[2]] += 1
    return counts


def forward_constexprs(meta: dict, channels_last: bool, kernel_size: int) -> dict:
    """The forward's compile-time arguments for a square ``kernel_size`` kernel, no bias."""
    unit = {"sxc": 1, "syc": 1} if channels_last else {"sxw": 1, "syw": 1}
    return {
        "KD": 1, "KH": kernel_size, "KW": kernel_size, "M": 1, "R": 1, "HAS_BIAS": False,
        "TAP_LIST": False, "CHANNELS_LAST": channels_last, "ACC": dw_triton.tl.float32,
        "DOT_F32": False, "PRECISION": "tf32", "UNROLL_KW": dw_triton._kw_unroll(kernel_size),
        **unit, **meta,
    }  # fmt: skip


def config_rows(kernel_size: int, dtype: str) -> list[dict]:
    """One row per config of the forward's dense autotune tables (both layouts, FMA and
    tensor cores)."""
    dw_triton._kernels(False)  # (makes the reduction's combiner compilable if need be)
    rows = []
    for channels_last in (True, False):
        for meta, warps, stages in dw_triton._config_table("conv", channels_last, False, True):
            kernel = compile_for_hopper(
                dw_triton._conv_kernel,
                forward_constexprs(meta, channels_last, kernel_size),
                dtype,
                warps,
                stages,
            )
            counts = sass_histogram(kernel.asm["cubin"])
            loop = loop_body_instructions(_cuobjdump(kernel.asm["cubin"], "-sass"))
            useful = meta["BLOCK_H"] * meta["BLOCK_W"] * meta["BLOCK_C"] * kernel_size
            useful /= 32 * warps
            rows.append(
                {
                    "layout": "NHWC" if channels_last else "NCHW",
                    "path": "DOT" if meta["DOT"] else "FMA",
                    "config": dw_triton._describe_config(
                        dw_triton.triton.Config(meta, num_warps=warps, num_stages=stages)
                    ),
                    **resource_usage(kernel.asm["cubin"]),
                    "instructions": sum(counts.values()),
                    "loop": loop,
                    "FFMA": counts["FFMA"],
                    "HMMA": counts["HMMA"],
                    "useful": useful,
                    "per_useful": loop / useful,
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| layout | config | registers | spills (bytes) | SASS instructions (kernel / row loop) "
        "| FFMA | HMMA | useful MACs / thread / kernel row | row loop's instructions per useful "
        "MAC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layout']} | {r['config']} | {r['registers']} | {r['local_bytes']} | "
            f"{r['instructions']} / {r['loop']} | {r['FFMA']} | {r['HMMA']} | {r['useful']:.0f} | "
            f"{r['per_useful']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel-size", type=int, default=17, help="square kernel (default 17)")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16")
    args = parser.parse_args(argv)
    if not 1 <= args.kernel_size <= dw_triton._MAX_UNROLLED_KW:
        parser.error(
            f"--kernel-size must be in [1, {dw_triton._MAX_UNROLLED_KW}] (longer rows are not "
            f"unrolled whole), got {args.kernel_size}"
        )
    if dw_triton.triton is None:
        parser.error("triton is not installed (it comes with torch's Linux wheels)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _logger.info(
        "Triton forward, %dx%d kernel, %s, sm_90 (static SASS counts, not timings)\n\n%s",
        args.kernel_size,
        args.kernel_size,
        args.dtype,
        markdown(config_rows(args.kernel_size, args.dtype)),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
