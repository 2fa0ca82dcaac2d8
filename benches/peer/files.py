#!/usr/bin/env python3
"""odin against onnxruntime on any ONNX files, one pinned core each.

For every file: onnxruntime (CPUExecutionProvider, one intra- and one
inter-op thread, sequential, ORT_ENABLE_ALL) times ``--runs`` inferences of a
random input in this process, pinned to ``--cpu``; then ``odin profile
--model FILE --json --runs K --cpu C`` times the same number of forward
passes. Files and engines are interleaved over ``--rounds`` rounds and each
engine keeps its lowest round median, so a noisy spell on the shared machine
hits one round of each rather than every round of one.

    python3 benches/peer/files.py .fixtures/opennsfw/open-nsfw.onnx \\
        tests/fixtures/onnx/light/*.onnx --rounds 3
    python3 benches/peer/files.py m.onnx --input-shape 1,3,224,224 --json

The odin binary is ``target/release/odin`` (built first with ``cargo build
--release`` unless ``--no-build``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ODIN = os.path.join(ROOT, "target", "release", "odin")


def session(path: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def input_of(sess: ort.InferenceSession, shape: list[int] | None) -> dict:
    inp = sess.get_inputs()[0]
    dims = shape or [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    x = np.random.default_rng(1).uniform(-1, 1, dims).astype(np.float32)
    return {inp.name: x}


def time_ort(sess, feed, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def time_odin(path: str, runs: int, warmup: int, cpu: int, shape) -> dict:
    cmd = [ODIN, "profile", "--model", path, "--json", "--runs", str(runs),
           "--warmup", str(warmup), "--cpu", str(cpu)]
    if shape:
        cmd += ["--input-shape", ",".join(map(str, shape))]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"odin profile {path} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="ONNX files")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per round (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default 1)")
    ap.add_argument("--cpu", type=int, default=1, help="CPU to pin both engines to (default 1)")
    ap.add_argument("--input-shape", help="input dimensions for every file, e.g. 1,3,224,224")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build --release")
    args = ap.parse_args(argv)
    shape = [int(d) for d in args.input_shape.split(",")] if args.input_shape else None
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    os.sched_setaffinity(0, {args.cpu})
    sessions = {f: session(f) for f in args.files}
    feeds = {f: input_of(s, shape) for f, s in sessions.items()}
    best: dict[str, dict] = {f: {"ort_ms": float("inf"), "odin_ms": float("inf")} for f in args.files}
    load0 = os.getloadavg()
    for _ in range(args.rounds):
        for f in args.files:
            o = time_ort(sessions[f], feeds[f], args.runs, args.warmup)
            p = time_odin(f, args.runs, args.warmup, args.cpu, shape)
            b = best[f]
            b["ort_ms"] = min(b["ort_ms"], o)
            b["odin_ms"] = min(b["odin_ms"], p["total_ms"])
            b["units"] = len(p["units"])
            b["gflop"] = sum(u["flops"] for u in p["units"]) / 1e9
    rows = [{"file": f, **b, "ratio": b["ort_ms"] / b["odin_ms"]} for f, b in best.items()]
    if args.json:
        print(json.dumps({"onnxruntime": ort.__version__, "cpu": args.cpu, "runs": args.runs,
                          "rounds": args.rounds, "loadavg": {"before": load0, "after": os.getloadavg()},
                          "models": rows}, indent=1))
        return 0
    print(f"onnxruntime {ort.__version__}, one thread each on CPU {args.cpu}, "
          f"best of {args.rounds} round medians of {args.runs} runs")
    print()
    print("| model | units | GFLOP | onnxruntime ms | odin ms | odin / onnxruntime (images/s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = os.path.splitext(os.path.basename(r["file"]))[0]
        print(f"| {name} | {r['units']} | {r['gflop']:.2f} | {r['ort_ms']:.2f} | "
              f"{r['odin_ms']:.2f} | {r['ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
