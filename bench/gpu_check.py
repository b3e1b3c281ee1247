"""``make gpu-check``: check and time the Triton kernels on a CUDA GPU in one command, in about 8 minutes.

    make gpu-check                          # or: python3 -m bench.gpu_check [--budget SECONDS]

Without CUDA (or without torch) it says so and exits 0. With CUDA (made for one H200 with Triton 3.6 and torch 2.11,
from a cold compile cache), in order, saving as it goes:

1. the native kernel tests (``pytest -m gpu tests/kernels``: every test that runs a kernel on the ``cuda`` device of
   ``tests/kernels/triton_checks.py``, the new kernels' included) with one autotune configuration per kernel
   (``LM_PRIMER_AUTOTUNE=0``, see ``kernels/_common.py``), spread over pytest-xdist workers; at the same time, one
   process per autotune configuration index compiles that configuration of every kernel at the benchmark shapes,
   so that step 2's autotuning finds its binaries in the cache (``TRITON_CACHE_DIR=build/triton-cache``);
2. the autotuned bf16 kernels at benchmark shapes against float32 PyTorch on the same bf16 inputs, beside PyTorch's
   own bf16 error there (gate: ours <= 2 x torch's + one bf16 epsilon, as in ``tests/kernels/triton_checks.py``):
   attention, LayerNorm and the FFN, then today's decoder's (grouped-query attention, RMSNorm, RoPE, the SwiGLU
   gate, ``ACCURACY_MODERN``);
3. the benchmark subset ``bench.kernels.PROFILES["check"]``, rewriting ``bench/results/kernels.json`` after every row
   and stopping new rows at the budget's end;
4. the ratios against issue 15's targets, printed and written with everything else to
   ``bench/results/gpu_check.json``; the figure ``figures/bench_kernels.png`` last, so that a plotting error cannot
   cost any JSON.

Exit status: 0 when every test and accuracy check passed (targets missed are reported, not failures), 1 otherwise.
"""
import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "build" / "gpu-check"
CACHE = ROOT / "build" / "triton-cache"
CHECK_JSON = RESULTS / "gpu_check.json"
KERNELS_JSON = RESULTS / "kernels.json"
# attention blocks, head dims and sequence buckets, FFN widths: what steps 2 and 3 launch (see PROFILES["check"])
WARM_ATTENTION = [dict(N=n, d=d, causal=c) for d in (64, 128) for n in (1024, 4096, 16384) for c in (False, True)]
ACCURACY_ATTENTION = [dict(B=4, H=32, N=4096, d=d, causal=c) for d in (64, 128) for c in (False, True)]
ACCURACY_LAYERNORM = [dict(M=4096, N=1024), dict(M=4096, N=8192)]
ACCURACY_FFN = [dict(M=8192, d=1024)]
# today's decoder: the shapes of bench/kernels_modern.py (Llama 3 8B's heads and FFN width)
ACCURACY_MODERN = {"gqa": [dict(B=4, H=32, H_kv=8, N=4096, d=128, causal=True)], "rmsnorm": [dict(M=4096, N=4096)],
                   "rope": [dict(B=4, H=32, H_kv=8, T=4096, d=128)], "swiglu": [dict(M=4096, F=14336)]}


def _log(msg):
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _save(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _env(**extra):
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(CACHE), PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    env.pop("LM_PRIMER_AUTOTUNE", None)
    env.update(extra)
    return env


def _cuda_or_reason():
    """None when torch sees a CUDA device, else the sentence that says why there is nothing to check."""
    try:
        import torch
    except ImportError:
        return "torch is not installed for this Python, so there is no CUDA device to check the kernels on"
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__})"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Phases that run in child processes (python -m bench.gpu_check --phase ...)

def _phase_warm():
    """Run every autotuned kernel once at the shapes of steps 2 and 3 with the configuration LM_PRIMER_AUTOTUNE
    pins: compiling it into the shared cache is the point. Fewer heads and batch rows, but the same sequence buckets
    and the same specialisation of every integer argument (Triton compiles apart values equal to 1 and multiples of
    16: H = 16 here, 32 there, both multiples of 16), so that the binaries are the ones steps 2 and 3 ask for."""
    import torch

    import kernels
    from kernels.ffn import _gemm

    dev = torch.device("cuda")
    for case in WARM_ATTENTION:
        for dtype in (torch.bfloat16,):
            q, k, v = (torch.randn(1, 16, case["N"], case["d"], device=dev, dtype=dtype, requires_grad=True)
                       for _ in range(3))
            o = kernels.flash_attention(q, k, v, causal=case["causal"])
            torch.autograd.grad(o, (q, k, v), torch.randn_like(o))
    for d in (1024, 4096):                                             # the FFN rows and the bare GEMM
        x = torch.randn(8192, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
        W1 = torch.randn(d, 4 * d, device=dev, dtype=torch.bfloat16, requires_grad=True)
        b1 = torch.zeros(4 * d, device=dev, dtype=torch.bfloat16, requires_grad=True)
        W2 = torch.randn(4 * d, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
        b2 = torch.zeros(d, device=dev, dtype=torch.bfloat16, requires_grad=True)
        y = kernels.fused_ffn(x, W1, b1, W2, b2, activation="gelu_tanh")
        torch.autograd.grad(y, (x, W1, b1, W2, b2), torch.randn_like(y))
        _gemm(x.detach(), W1.detach(), "ieee")
    for precision in ("ieee", "tf32x3"):                               # the float32 rows
        q, k, v = (torch.randn(1, 16, 2048, 64, device=dev, requires_grad=True) for _ in range(3))
        o = kernels.flash_attention(q, k, v, causal=True, fp32_precision=precision)
        torch.autograd.grad(o, (q, k, v), torch.randn_like(o))
        x = torch.randn(4096, 1024, device=dev, requires_grad=True)
        params = [torch.randn(1024, 4096, device=dev, requires_grad=True), torch.zeros(4096, device=dev,
                  requires_grad=True), torch.randn(4096, 1024, device=dev, requires_grad=True),
                  torch.zeros(1024, device=dev, requires_grad=True)]
        y = kernels.fused_ffn(x, *params, activation="gelu_tanh", fp32_precision=precision)
        torch.autograd.grad(y, [x, *params], torch.randn_like(y))
    torch.cuda.synchronize()


def _errors(got, ref):
    """(max-abs error / max |ref|, rms error / rms ref) of a tensor against a float32 reference."""
    got, ref = got.float(), ref.float()
    diff = (got - ref).abs()
    return (float(diff.max() / ref.abs().max().clamp_min(1e-30)),
            float(diff.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)))


def _compare(names, case, ours, torch_bf16, ref, eps):
    rows = []
    for part, g, t, r in zip(names, ours, torch_bf16, ref):
        e_ours, e_torch = _errors(g, r), _errors(t, r)
        rows.append(dict(case, tensor=part, ours_max=e_ours[0], ours_rms=e_ours[1], torch_max=e_torch[0],
                         torch_rms=e_torch[1], ok=bool(e_ours[0] <= 2 * e_torch[0] + eps)))
    return rows


def _grads(fn, inputs, dout):
    """(output, *gradients of <output, dout> with respect to ``inputs``), on fresh leaves."""
    import torch

    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    return (out.detach(), *torch.autograd.grad(out, inputs, dout.to(out.dtype)))


def _accuracy_modern(dev, dtype, eps, cases=ACCURACY_MODERN):
    """Today's decoder's kernels in ``dtype`` against torch in float32 on the same inputs, beside torch in ``dtype``:
    the rows of :func:`_accuracy` (run on CPU tensors in the interpreter by the tests, with small ``cases``)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import kernels
    from kernels.rope import rope_tables

    rows = []
    for c in cases["gqa"]:
        B, H, H_kv, N, d = c["B"], c["H"], c["H_kv"], c["N"], c["d"]
        q, do = (torch.randn(B, H, N, d, device=dev, dtype=dtype) for _ in range(2))
        k, v = (torch.randn(B, H_kv, N, d, device=dev, dtype=dtype) for _ in range(2))

        def sdpa(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=c["causal"], enable_gqa=True)

        ours = _grads(lambda q, k, v: kernels.flash_attention(q, k, v, causal=c["causal"]), (q, k, v), do)
        theirs = _grads(sdpa, (q, k, v), do)
        ref = [torch.empty(t.shape, device=dev, dtype=torch.float32) for t in ours]
        G = H // H_kv
        for g in range(0, H_kv, 2):         # float32 math attention, 2 K/V heads (their 2 G query heads) at a time
            sq, skv = (slice(None), slice(g * G, (g + 2) * G)), (slice(None), slice(g, g + 2))
            with sdpa_kernel(SDPBackend.MATH):
                part = _grads(sdpa, (q[sq].float(), k[skv].float(), v[skv].float()), do[sq].float())
            for r, p, sl in zip(ref, part, (sq, sq, skv, skv)):
                r[sl] = p
        rows += _compare(("o", "dq", "dk", "dv"), dict(op="gqa", **c), ours, theirs, ref, eps)
    for c in cases["rmsnorm"]:
        x = torch.randn(c["M"], c["N"], device=dev, dtype=dtype) * 2 + 0.5
        w, dy = torch.randn(c["N"], device=dev, dtype=dtype), torch.randn_like(x)

        def eager(x, w):
            return F.rms_norm(x, (c["N"],), w, 1e-6)

        rows += _compare(("y", "dx", "dgamma"), dict(op="rmsnorm", **c), _grads(
            lambda x, w: kernels.rms_norm(x, w, 1e-6), (x, w), dy), _grads(eager, (x, w), dy),
            _grads(eager, (x.float(), w.float()), dy.float()), eps)
    for c in cases["rope"]:
        B, H, H_kv, T, d = c["B"], c["H"], c["H_kv"], c["T"], c["d"]
        q, k = torch.randn(B, H, T, d, device=dev, dtype=dtype), torch.randn(B, H_kv, T, d, device=dev, dtype=dtype)
        pos = torch.arange(T, device=dev)
        half_cos, half_sin = rope_tables(pos[None], d, 500000.0)          # float32 (1, T, d/2)
        cos, sin = (torch.cat([t, t], dim=-1) for t in (half_cos, half_sin))
        dout = torch.randn((B * (H + H_kv) * T * d,), device=dev, dtype=dtype)

        def flat(pair):
            return torch.cat([pair[0].reshape(-1), pair[1].reshape(-1)])

        def rotate_half(x):
            x1, x2 = x.chunk(2, dim=-1)
            return torch.cat((-x2, x1), dim=-1)

        def hf(q, k):                       # Hugging Face's apply_rotary_pos_emb, its tables in the inputs' dtype
            c, s_ = cos.to(q.dtype), sin.to(q.dtype)
            return flat((q * c + rotate_half(q) * s_, k * c + rotate_half(k) * s_))

        rows += _compare(("qk", "dq", "dk"), dict(op="rope", **c), _grads(
            lambda q, k: flat(kernels.rope(q, k, pos, 500000.0)), (q, k), dout), _grads(hf, (q, k), dout),
            _grads(hf, (q.float(), k.float()), dout.float()), eps)
    for c in cases["swiglu"]:
        a, b, dh = (torch.randn(c["M"], c["F"], device=dev, dtype=dtype) for _ in range(3))

        def eager(a, b):
            return F.silu(a) * b

        rows += _compare(("h", "da", "db"), dict(op="swiglu", **c), _grads(kernels.swiglu_gate, (a, b), dh),
                         _grads(eager, (a, b), dh), _grads(eager, (a.float(), b.float()), dh.float()), eps)
    return rows


def _accuracy():
    """The autotuned bf16 kernels at benchmark shapes vs float32 torch on the same inputs, beside torch's bf16."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import kernels

    dev, bf16 = torch.device("cuda"), torch.bfloat16
    eps = torch.finfo(bf16).eps
    torch.manual_seed(0)
    rows = []

    for c in ACCURACY_ATTENTION:
        q, k, v, do = (torch.randn(c["B"], c["H"], c["N"], c["d"], device=dev, dtype=bf16) for _ in range(4))
        ours = _grads(lambda q, k, v: kernels.flash_attention(q, k, v, causal=c["causal"]), (q, k, v), do)

        def flash(q, k, v):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=c["causal"])

        theirs = _grads(flash, (q, k, v), do)
        ref = [torch.empty(t.shape, device=dev, dtype=torch.float32) for t in ours]
        for h in range(0, c["H"], 8):                # float32 math attention, 8 heads at a time (bounded memory)
            sl = (slice(None), slice(h, h + 8))

            def math_attn(q, k, v):
                with sdpa_kernel(SDPBackend.MATH):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=c["causal"])

            part = _grads(math_attn, (q[sl].float(), k[sl].float(), v[sl].float()), do[sl].float())
            for r, p in zip(ref, part):
                r[sl] = p
        rows += _compare(("o", "dq", "dk", "dv"), dict(op="attention", **c), ours, theirs, ref, eps)
        del q, k, v, do, ours, theirs, ref
        torch.cuda.empty_cache()
    for c in ACCURACY_LAYERNORM:
        x = torch.randn(c["M"], c["N"], device=dev, dtype=bf16) * 2 + 0.5
        w, b = torch.randn(c["N"], device=dev, dtype=bf16), torch.randn(c["N"], device=dev, dtype=bf16)
        dy = torch.randn_like(x)
        ours = _grads(kernels.layer_norm, (x, w, b), dy)
        theirs = _grads(lambda x, w, b: F.layer_norm(x, (c["N"],), w, b), (x, w, b), dy)
        ref = _grads(lambda x, w, b: F.layer_norm(x, (c["N"],), w, b), (x.float(), w.float(), b.float()), dy.float())
        rows += _compare(("y", "dx", "dgamma", "dbeta"), dict(op="layernorm", **c), ours, theirs, ref, eps)
    for c in ACCURACY_FFN:
        d, M = c["d"], c["M"]
        x = torch.randn(M, d, device=dev, dtype=bf16)
        W1, W2 = torch.randn(d, 4 * d, device=dev, dtype=bf16) / d**0.5, torch.randn(4 * d, d, device=dev,
                                                                                      dtype=bf16) / (4 * d)**0.5
        b1, b2 = torch.randn(4 * d, device=dev, dtype=bf16) * 0.1, torch.randn(d, device=dev, dtype=bf16) * 0.1
        dy = torch.randn(M, d, device=dev, dtype=bf16)

        def eager(x, W1, b1, W2, b2):
            return F.linear(F.gelu(F.linear(x, W1.t(), b1), approximate="tanh"), W2.t(), b2)

        ours = _grads(lambda *t: kernels.fused_ffn(*t, activation="gelu_tanh"), (x, W1, b1, W2, b2), dy)
        theirs = _grads(eager, (x, W1, b1, W2, b2), dy)
        ref = _grads(eager, tuple(t.float() for t in (x, W1, b1, W2, b2)), dy.float())
        rows += _compare(("y", "dx", "dW1", "db1", "dW2", "db2"), dict(op="ffn", **c), ours, theirs, ref, eps)
    return rows + _accuracy_modern(dev, bf16, eps)


def _phase_measure(out, deadline):
    """Step 2 (accuracy) then step 3 (benchmark), in one process so the autotuning of step 2 serves step 3."""
    import bench.kernels as bk
    from bench.run import machine

    acc = {"gate": "max|ours - fp32| / max|fp32| <= 2 x torch bf16's + bf16 eps", "rows": []}
    try:
        acc["rows"] = _accuracy()
    except Exception as e:  # noqa: BLE001 -- report it and still benchmark
        acc["error"] = f"{type(e).__name__}: {e}"
    _save(out, acc)
    for r in acc["rows"]:
        print(f"accuracy {r['op']:<9} {r['tensor']:<6} " + " ".join(f"{k}={r[k]}" for k in ("H_kv", "N", "T", "d",
                                                                                            "causal", "M", "F")
                                                              if k in r)
              + f": ours {r['ours_max']:.2e} (rms {r['ours_rms']:.2e}), torch bf16 {r['torch_max']:.2e} "
                f"(rms {r['torch_rms']:.2e}) {'ok' if r['ok'] else 'FAIL'}", flush=True)
    t0 = time.time()
    record = {"module": "kernels", "quick": False, "profile": "check", "machine": machine(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "wall_s": None, "results": {}}

    def save(res):
        record["results"] = res
        record["wall_s"] = round(time.time() - t0, 1)
        _save(KERNELS_JSON, record)

    bk.run(profile="check", save=save, deadline=time.monotonic() + (deadline - time.time()), draw=False)


# ---------------------------------------------------------------------------------------------------------------
# The parent: starts the phases, merges their results, prints the verdict, draws the figure last.

def _start(cmd, env, log):
    """Start ``cmd`` in its own process group (pytest-xdist's workers included), output to ``log``."""
    with open(log, "w") as f:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(proc, timeout):
    """The exit status of ``proc``, or 124 after killing its whole process group at the time-out."""
    try:
        return proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return 124


def _run(cmd, env, timeout, log):
    """Run ``cmd`` with output to ``log``; its exit status, 124 on time-out."""
    return _wait(_start(cmd, env, log), timeout)


def _junit(path):
    if not path.exists():
        return {"error": "no JUnit report (pytest did not finish)"}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} | {"failed": failed}


def _versions():
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(0)}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _n_configs():
    """The most autotune configurations any kernel has: one warm-up process per configuration index."""
    from kernels import attention, ffn

    return max(len(t) for t in (attention._FWD, attention._DKDV, attention._DQ, ffn._GEMM))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for the whole check (default 470)")
    ap.add_argument("--phase", choices=["warm", "measure"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phase == "warm":
        _phase_warm()
        return 0
    if args.phase == "measure":
        _phase_measure(Path(args.out), args.deadline)
        return 0

    reason = _cuda_or_reason()
    if reason is not None:
        print(f"make gpu-check: {reason}. Nothing to check here: the kernels' correctness on this machine is "
              "`make test` (Triton's interpreter); run `make gpu-check` on a machine with a CUDA GPU.", flush=True)
        return 0
    start = time.time()
    end = start + args.budget
    WORK.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    os.environ.update(TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(CACHE))
    sys.path.insert(0, str(ROOT))
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "versions": _versions(), "budget_s": args.budget,
              "phases": {}}
    _save(CHECK_JSON, report)
    _log(f"{report['versions']}")

    # 1. tests (one config per kernel) and, beside them, one warm-up process per configuration index
    cpus = os.cpu_count() or 2
    n_warm = _n_configs()
    workers = max(1, min(8, cpus - n_warm))
    junit = WORK / "tests.xml"
    junit.unlink(missing_ok=True)
    _log(f"step 1: native kernel tests on {workers} xdist workers (LM_PRIMER_AUTOTUNE=0), and {n_warm} processes "
         "compiling one autotune configuration each")
    t1 = time.time()
    xdist = ["-n", str(workers)] if importlib.util.find_spec("xdist") else []
    test_cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", *xdist, "tests/kernels", f"--junitxml={junit}",
                "-p", "no:cacheprovider"]
    warm = [_start([sys.executable, "-m", "bench.gpu_check", "--phase", "warm"], _env(LM_PRIMER_AUTOTUNE=str(i)),
                   WORK / f"warm{i}.log") for i in range(n_warm)]
    test_rc = _run(test_cmd, _env(LM_PRIMER_AUTOTUNE="0"), 0.45 * args.budget, WORK / "tests.log")
    warm_rc = [_wait(p, start + 0.5 * args.budget - time.time()) for p in warm]
    tests = _junit(junit) | {"exit": test_rc, "seconds": round(time.time() - t1, 1), "log": str(WORK / "tests.log")}
    report["phases"]["tests"] = tests
    report["phases"]["warm"] = {"exit": warm_rc, "logs": str(WORK / "warm*.log")}
    _save(CHECK_JSON, report)
    print((WORK / "tests.log").read_text()[-3000:], flush=True)
    _log(f"step 1 done in {tests['seconds']} s: {tests}; warm-up exits {warm_rc}")

    # 2 + 3. accuracy at benchmark shapes, then the benchmark subset, until the budget's end
    _log("steps 2 and 3: autotuned bf16 accuracy against float32 torch, then the benchmark subset")
    t2 = time.time()
    acc_json = WORK / "accuracy.json"
    acc_json.unlink(missing_ok=True)
    measure_rc = _run([sys.executable, "-m", "bench.gpu_check", "--phase", "measure", "--out", str(acc_json),
                       "--deadline", str(end - 45)], _env(), max(30.0, end - 15 - time.time()), WORK / "measure.log")
    print((WORK / "measure.log").read_text()[-6000:], flush=True)
    accuracy = json.loads(acc_json.read_text()) if acc_json.exists() else {"error": "the accuracy step did not finish"}
    report["phases"]["accuracy"] = accuracy
    report["phases"]["measure"] = {"exit": measure_rc, "seconds": round(time.time() - t2, 1),
                                   "log": str(WORK / "measure.log")}
    # only a file that step 3 rewrote: never the one a checkout brought
    fresh = KERNELS_JSON.exists() and KERNELS_JSON.stat().st_mtime >= start
    bench = json.loads(KERNELS_JSON.read_text())["results"] if fresh else {}
    report["ratios"] = bench.get("ratios", {})
    report["not_run"] = bench.get("not_run", [])
    report["wall_s"] = round(time.time() - start, 1)
    _save(CHECK_JSON, report)

    # 4. the verdict, then the figure
    print("\n== make gpu-check: results against issue 15's targets ==", flush=True)
    for name, r in report["ratios"].items():
        vals = ", ".join(f"{k}: {v:.2f}" for k, v in r["values"].items())
        print(f"{'MET   ' if r['met'] else 'MISSED'} {name}: worst {r['worst']:.2f} (target "
              f"{'<' if name == 'ffn_peak_vs_torch' else '>='} {r['target']}) [{vals}]", flush=True)
    bad_acc = [r for r in accuracy.get("rows", []) if not r["ok"]]
    failed = bool(tests.get("failures") or tests.get("errors") or "error" in tests or test_rc not in (0,)
                  or bad_acc or "error" in accuracy)
    print(f"tests: {tests.get('tests')} run, {tests.get('failures')} failed, {tests.get('errors')} errors "
          f"(exit {test_rc}{'; ' + tests['error'] if 'error' in tests else ''}); accuracy: "
          f"{len(accuracy.get('rows', [])) - len(bad_acc)} of {len(accuracy.get('rows', []))} within the gate"
          f"{' (' + accuracy['error'] + ')' if 'error' in accuracy else ''}; benchmark rows not run for time: "
          f"{report['not_run'] or 'none'}; warm-up exits {warm_rc}; {report['wall_s']} s in all", flush=True)
    for name in tests.get("failed", []):
        print(f"  failed test: {name}", flush=True)
    if bench.get("attention") or bench.get("layernorm") or bench.get("ffn"):
        try:
            import bench.kernels as bk

            bk.figure(bench)
            bench["figure"] = str(bk.FIGURE.relative_to(ROOT))
            record = json.loads(KERNELS_JSON.read_text())
            record["results"] = bench
            _save(KERNELS_JSON, record)
            _log(f"figure: {bench['figure']}")
        except Exception as e:  # noqa: BLE001 -- the JSON is already safe; say what the figure lacked
            _log(f"figure not drawn: {type(e).__name__}: {e}")
    written = [CHECK_JSON] + ([KERNELS_JSON] if fresh else [])
    _log(f"wrote {', '.join(str(p.relative_to(ROOT)) for p in written)}; logs in {WORK.relative_to(ROOT)}/")
    _log("FAILED: see the failed tests or accuracy rows above" if failed else
         "passed: every native test and accuracy check (the targets above are measurements, not pass/fail)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
