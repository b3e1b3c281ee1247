"""Compile every Triton kernel ahead of time for an H100/H200 (sm_90), with no GPU, and report what the GPU would get.

    python tests/kernels/aot_sm90.py              # every kept autotune configuration, bf16/fp16/fp32 (minutes)
    python tests/kernels/aot_sm90.py --quick      # the first kept configuration of each kernel, bf16 (seconds)
    PYTHONPATH=/path/to/triton-3.6-site:. python tests/kernels/aot_sm90.py   # with the GPU machine's Triton

The interpreter (``make test``) never runs Triton's compiler, so a kernel can pass every interpreter test and still
fail to compile, overflow shared memory or spill registers on a GPU. This script builds each kernel variant the way a
launch would (``triton.compile`` on an ``ASTSource`` for ``GPUTarget("cuda", 90, 32)``, the bundled ``ptxas``),
with the pruning that autotuning applies, and prints per variant: shared memory, registers, spilled bytes, whether
the dots use Hopper's wgmma. It exits 1 if any variant fails to compile, if a configuration that pruning keeps needs
more shared memory than sm_90 has (227 KiB), or if a bf16/fp16 variant spills registers (``--allow-spills`` reports
spills without failing; float32 variants, exact on CUDA cores or tf32x3, are reported only: the first is the checking
path, and tf32x3 at d = 128 has no tile that fits without spilling; LayerNorm's backward holds whole rows and spills
from N = 8192 whatever its warp count, see ``kernels/layernorm.py``).
The specialisation is a launch's on contiguous tensors: unit strides are constants, pointers and other strides are
16-divisible. Needs ``TRITON_INTERPRET`` unset or 0 (it is set to 0 here before ``kernels`` is imported).
"""
import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"
os.environ.setdefault("LM_PRIMER_AUTOTUNE", "all")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SM90_SHARED = 232448          # bytes of shared memory one block may use on sm_90 (227 KiB)
DTYPES = {"bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}


def _tl_dtype(name):
    import triton.language as tl

    return {"bf16": tl.bfloat16, "fp16": tl.float16, "fp32": tl.float32}[name]


def _kernels():
    import kernels.attention as attention
    import kernels.ffn as ffn
    import kernels.layernorm as layernorm
    from kernels import _common

    for module in (attention, ffn):
        module.max_shared_mem = lambda: SM90_SHARED          # what the prune functions ask a live GPU for
    return attention, ffn, layernorm, _common


def _signature(fn, pointers, constants, floats=()):
    """Triton's (signature, constexprs, attrs) for ``fn``: pointers as given, floats fp32, other runtime ints i32;
    ``constants`` (constexprs, and unit strides a launch on contiguous tensors specialises to 1)."""
    constants = {k: v for k, v in constants.items() if k in fn.arg_names}
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constants:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = "*" + pointers[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in floats:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name.startswith("stride"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    missing = [n for n, p in zip(fn.arg_names, fn.params) if p.is_constexpr and n not in constants]
    if missing:
        raise ValueError(f"{fn.__name__}: no value for constexpr {missing}")
    return sig, constants, attrs


def _cases(quick):
    """(kernel name, description, builder) for every variant; the builder returns (jit fn, sig, consts, attrs,
    num_warps, num_stages, shared-memory estimate or None)."""
    import triton

    attention, ffn, layernorm, common = _kernels()
    dtypes = ["bf16"] if quick else ["bf16", "fp16", "fp32"]
    cases = []

    # --- attention: every kept config at each head dim, causal or not, each dtype (fp32 in both precisions) ---
    unit = {n: 1 for n in ("stride_qd", "stride_kd", "stride_vd", "stride_dod")}
    for kname, kernel in (("fwd", attention._attn_fwd_kernel), ("dkdv", attention._attn_bwd_dkdv_kernel),
                          ("dq", attention._attn_bwd_dq_kernel)):
        fn = kernel.fn
        for dt, D, causal in itertools.product(dtypes, (64,) if quick else attention.HEAD_DIMS,
                                               (True,) if quick else (False, True)):
            for precision in (("ieee", "tf32x3") if dt == "fp32" else ("ieee",)):
                const = dict(D=D, CAUSAL=causal, IN_DTYPE=_tl_dtype(dt), DOT_DTYPE=_tl_dtype(dt),
                             PRECISION=precision, **unit)
                meta = {"fwd": attention._FWD_META, "dkdv": attention._DKDV_META, "dq": attention._DQ_META}[kname]
                kept = attention._prune(kname, meta)(kernel.configs, {}, T_Q_BUCKET=4096, T_K_BUCKET=4096, **const)
                for cfg in kept[:1] if quick else kept:
                    pointers = {n: dt for n in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV")}
                    pointers.update(LSE="fp32", DELTA="fp32")
                    consts = {**const, **cfg.kwargs}
                    est = attention._tile_bytes(kname, cfg, D, 4 if dt == "fp32" else 2) * (
                        1.5 if precision == "tf32x3" else 1)
                    desc = (f"attention {kname} {dt} {precision} D={D} causal={causal} "
                            f"BM={cfg.kwargs['BLOCK_M']} BN={cfg.kwargs['BLOCK_N']} w={cfg.num_warps} "
                            f"s={cfg.num_stages}")
                    cases.append((desc, fn, pointers, consts, ("qk_scale", "sm_scale"), cfg.num_warps,
                                  cfg.num_stages, est))
    fn = attention._attn_bwd_preprocess_kernel
    for dt, D in itertools.product(dtypes, (64,) if quick else attention.HEAD_DIMS):
        cases.append((f"attention preprocess {dt} D={D}", fn, {"O": dt, "DO": dt, "DELTA": "fp32"},
                      dict(D=D, BLOCK_M=64, stride_dod=1), (), 4, 3, None))

    # --- LayerNorm: each warp count the row-length rule picks, each dtype ---
    for dt, n in itertools.product(dtypes, (1024,) if quick else (1024, 4096, 8192, 16384, 32768)):
        if n * (4 if dt == "fp32" else 2) > layernorm._MAX_ROW_BYTES:
            continue
        block = triton.next_power_of_2(n)
        w = w_bwd = layernorm._num_warps(block)
        ptr = {"X": dt, "Y": dt, "W": dt, "B": dt, "Mean": "fp32", "Rstd": "fp32"}
        cases.append((f"layernorm fwd {dt} N={n} warps={w}", layernorm._layer_norm_fwd_kernel, ptr,
                      dict(BLOCK_N=block, stride_xn=1, stride_w=1, stride_b=1), ("eps",), w, 3, None))
        ptr = {"X": dt, "DY": dt, "DX": dt, "W": dt, "Mean": "fp32", "Rstd": "fp32", "Partial": "fp32"}
        cases.append((f"layernorm bwd dx {dt} N={n} warps={w_bwd}", layernorm._layer_norm_bwd_dx_kernel, ptr,
                      dict(BLOCK_N=block, stride_xn=1, stride_dyn=1, stride_w=1), (), w_bwd, 3, None))
    for dt, block_n in itertools.product(["fp32"] + dtypes, (8,) if quick else (8, 32, 128)):
        cases.append((f"column_sum {dt} BLOCK_N={block_n}", common._column_sum_kernel, {"X": dt, "OUT": dt},
                      dict(BLOCK_R=4096 // block_n, BLOCK_N=block_n, stride_n=1), (), 4, 3, None))

    # --- FFN: every kept GEMM config for each epilogue the FFN launches, each dtype ---
    launches = [("bias+act", ffn._BIAS_ACT, False), ("bias", ffn._BIAS, False), ("plain", ffn._PLAIN, False),
                ("times act' + colsum", ffn._TIMES_ACT_GRAD, True)]
    kernel = ffn._gemm_kernel
    for dt, (ename, epilogue, colsum) in itertools.product(dtypes, launches[-1:] if quick else launches):
        for precision in (("ieee", "tf32x3") if dt == "fp32" else ("ieee",)):
            const = dict(EPILOGUE=epilogue, ACT=ffn.ACTIVATIONS["gelu_tanh"], COLSUM=colsum, DOT_DTYPE=_tl_dtype(dt),
                         PRECISION=precision, stride_ak=1, stride_bn=1, stride_zn=1)
            kept = ffn._prune_gemm(kernel.configs, {}, M_BUCKET=8192, N_BUCKET=4096, K_BUCKET=4096, **const)
            for cfg in kept[:1] if quick else kept:
                k = cfg.kwargs
                est = cfg.num_stages * (4 if dt == "fp32" else 2) * k["BLOCK_K"] * (k["BLOCK_M"] + k["BLOCK_N"]) * (
                    1.5 if precision == "tf32x3" else 1)
                desc = (f"ffn gemm {ename} {dt} {precision} BM={k['BLOCK_M']} BN={k['BLOCK_N']} BK={k['BLOCK_K']} "
                        f"w={cfg.num_warps} s={cfg.num_stages}")
                ptr = {"A": dt, "B": dt, "C": dt, "Bias": dt, "Z": dt, "Colsum": "fp32"}
                cases.append((desc, kernel.fn, ptr, {**const, **k}, (), cfg.num_warps, cfg.num_stages, est))
    for dt in dtypes:
        cases.append((f"ffn act {dt}", ffn._act_kernel, {"Z": dt, "H": dt}, dict(ACT=2, BLOCK=1024), (), 4, 3, None))
    return cases


def _resource_usage(cubin):
    """(registers, spilled bytes) from cuobjdump's resource report of a cubin (Triton's bundled cuobjdump)."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    reg = re.search(r"REG:(\d+)", out)
    stack = re.search(r"STACK:(\d+)", out)
    local = re.search(r"LOCAL:(\d+)", out)
    return (int(reg.group(1)) if reg else -1,
            max(int(stack.group(1)) if stack else 0, int(local.group(1)) if local else 0))


_WORKER_CASES = []


def _init_worker(quick, match):
    """Each worker builds the case list itself: Triton's kernel objects do not pickle, their indices do."""
    _WORKER_CASES[:] = [c for c in _cases(quick) if match in c[0]]


def _compile_index(i):
    return _compile(_WORKER_CASES[i])


def _compile(case):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    desc, fn, pointers, constants, floats, warps, stages, estimate = case
    t0 = time.perf_counter()
    try:
        sig, consts, attrs = _signature(fn, pointers, constants, floats)
        src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
    except Exception as e:  # noqa: BLE001 -- every failure is a finding to report
        return dict(desc=desc, error=f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e) else ''}")
    regs, spill = _resource_usage(k.asm["cubin"])
    return dict(desc=desc, shared=k.metadata.shared, estimate=estimate, regs=regs, spill=spill,
                wgmma="wgmma" in k.asm["ptx"], seconds=time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the first kept configuration of each kernel, bf16 only")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    ap.add_argument("--allow-spills", action="store_true", help="report register spills without failing")
    ap.add_argument("--match", default="", help="only variants whose description contains this")
    args = ap.parse_args(argv)
    import triton

    cases = [c for c in _cases(args.quick) if args.match in c[0]]
    print(f"Triton {triton.__version__}: compiling {len(cases)} kernel variants for sm_90 with {args.jobs} jobs",
          flush=True)
    t0 = time.perf_counter()
    failures = []
    with ProcessPoolExecutor(args.jobs, initializer=_init_worker, initargs=(args.quick, args.match)) as pool:
        for r in pool.map(_compile_index, range(len(cases))):
            if "error" in r:
                failures.append(f"{r['desc']}: {r['error']}")
                print(f"FAIL {r['desc']}: {r['error']}", flush=True)
                continue
            est = f" (estimate {r['estimate']})" if r["estimate"] is not None else ""
            flags = []
            if r["shared"] > SM90_SHARED:
                flags.append("SHARED MEMORY OVER 227 KiB")
            if r["spill"]:
                flags.append(f"SPILLS {r['spill']} B")
            print(f"{'ok  ' if not flags else 'BAD '} {r['desc']}: shared {r['shared']}{est}, regs {r['regs']}, "
                  f"spill {r['spill']}, wgmma {r['wgmma']}, {r['seconds']:.1f} s {' '.join(flags)}", flush=True)
            # fp32 (exact on CUDA cores, or tf32x3) and LayerNorm's long rows: spills reported, not failed
            report_only = " fp32 " in r["desc"] or r["desc"].startswith("layernorm")
            if r["shared"] > SM90_SHARED or (r["spill"] and not args.allow_spills and not report_only):
                failures.append(f"{r['desc']}: {' '.join(flags)}")
    print(f"{len(cases) - len(failures)} of {len(cases)} variants compiled within sm_90's limits "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)
    for f in failures:
        print("  failed:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
