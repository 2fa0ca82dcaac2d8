#!/usr/bin/env python3
"""Single-core onnxruntime timings of odin's six models, for odin's README.

Builds each model with ``models.py`` (same topology, folded batch norms, seeded
random weights), opens it in onnxruntime's CPU execution provider with one
intra-op and one inter-op thread, sequential execution and every graph
optimisation (``ORT_ENABLE_ALL``), pins the process to one CPU, warms up, and
times ``--runs`` inferences of one 1x3x224x224 image.

    python3 benches/peer/bench.py                    # table
    python3 benches/peer/bench.py --json > peer.json # for compare.py
    python3 benches/peer/bench.py --models resnet50 --runs 50 --cpu 0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402  (sibling module, found via the path above)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (what odin's profile reports)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


OPT_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}

#: Graph optimisation level; ``--opt-level`` changes it for diagnostics only.
OPT_LEVEL = "all"


def session_options() -> ort.SessionOptions:
    """One thread, sequential execution, all graph optimisations (unless
    ``--opt-level`` says otherwise)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = OPT_LEVELS[OPT_LEVEL]
    # With one thread there is no pool to spin; say so explicitly anyway.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def optimized_ops(model_bytes: bytes) -> dict:
    """Op types (domain-qualified) of the graph after ORT's optimisations,
    to show what ORT actually runs (fusions, NCHWc layout)."""
    import tempfile

    import onnx

    so = session_options()
    so.log_severity_level = 3  # silence "optimized model is hardware specific"
    with tempfile.TemporaryDirectory() as tmp:
        so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        opt = onnx.load(so.optimized_model_filepath, load_external_data=False)
    counts: dict = {}
    for n in opt.graph.node:
        key = f"{n.domain + '.' if n.domain else ''}{n.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


class Subject:
    """One model open in an onnxruntime session, warmed up and checked."""

    def __init__(self, name: str, seed: int, warmup: int, show_ops: bool):
        model = models.build(name, seed)
        self.name = name
        self.gmacs = models.macs(model) / 1e9
        assert abs(self.gmacs - models.TORCHVISION_GMACS[name]) <= 0.005 + 1e-9, (
            name, self.gmacs)
        data = model.SerializeToString()
        del model
        self.ops = optimized_ops(data) if show_ops else None
        self.sess = ort.InferenceSession(data, session_options(),
                                         providers=["CPUExecutionProvider"])
        del data
        x = np.random.default_rng(3).standard_normal(models.INPUT_SHAPE).astype(np.float32)
        self.feed = {models.INPUT_NAME: x}
        for _ in range(max(warmup, 1)):
            (y,) = self.sess.run(None, self.feed)
        # Random weights must still give sane activations (no inf/NaN blow-ups
        # that would make the timing meaningless).
        assert y.shape == (1, models.CLASSES) and np.isfinite(y).all(), name
        self.logit_std = float(y.std())
        self.round_medians: list[float] = []
        self.times: list[float] = []

    def time(self, runs: int) -> float:
        """Times ``runs`` inferences; returns (and records) their median in ms."""
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.sess.run(None, self.feed)
            times.append((time.perf_counter() - t0) * 1e3)
        self.times += times
        self.round_medians.append(statistics.median(times))
        return self.round_medians[-1]

    def result(self) -> dict:
        # One round: the plain median.  Several: the least disturbed round's
        # median (the machine is shared; a busy neighbour slows whole rounds).
        median = min(self.round_medians)
        r = {
            "model": self.name,
            "gmacs": round(self.gmacs, 4),
            "median_ms": round(median, 3),
            "min_ms": round(min(self.times), 3),
            "images_per_s": round(1e3 / median, 3),
        }
        if len(self.round_medians) > 1:
            r["round_medians_ms"] = [round(m, 3) for m in self.round_medians]
        if self.ops is not None:
            r["optimized_ops"] = self.ops
        return r


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=models.NAMES, default=list(models.NAMES))
    ap.add_argument("--runs", type=int, default=20, help="timed runs per model (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the timing this many times, interleaving models, and "
                         "report the lowest round median (default 1: plain median)")
    ap.add_argument("--cpu", type=int, default=1, help="CPU to pin to (default 1)")
    ap.add_argument("--seed", type=int, default=1, help="weight seed (default 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    ap.add_argument("--opt-level", choices=OPT_LEVELS, default="all",
                    help="ORT graph optimisation level (default all; others are "
                         "for diagnosing what the optimisations are worth)")
    ap.add_argument("--show-ops", action="store_true",
                    help="list the op types of ORT's optimised graph per model")
    args = ap.parse_args(argv)
    global OPT_LEVEL
    OPT_LEVEL = args.opt_level

    # Pin before the session exists so its (single) threads inherit the mask.
    os.sched_setaffinity(0, {args.cpu})
    load_before = loadavg()
    subjects = [Subject(name, args.seed, args.warmup, args.show_ops) for name in args.models]
    for r in range(args.rounds):
        for sub in subjects:  # interleaved, so a noisy spell hits one round of each
            m = sub.time(args.runs)
            print(f"  round {r + 1}/{args.rounds} {sub.name}: median {m:.2f} ms over "
                  f"{args.runs} runs (logit std {sub.logit_std:.3g})", file=sys.stderr)
    results = [sub.result() for sub in subjects]
    load_after = loadavg()

    if args.json:
        out = {
            "onnxruntime": ort.__version__,
            "cpu": cpu_model(),
            "provider": "CPUExecutionProvider",
            "graph_optimization_level": OPT_LEVELS[args.opt_level].name,
            "threads": {"intra_op": 1, "inter_op": 1},
            "pinned_cpu": args.cpu,
            "runs": args.runs,
            "rounds": args.rounds,
            "loadavg": {"before": load_before, "after": load_after},
            "models": results,
        }
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0

    print(f"onnxruntime {ort.__version__}, CPUExecutionProvider, "
          f"{OPT_LEVELS[args.opt_level].name}, "
          f"1 thread pinned to CPU {args.cpu} ({cpu_model()}), "
          f"{args.rounds} x {args.runs} runs, loadavg {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"{'model':<13} {'GMACs':>7} {'median ms':>10} {'min ms':>9} "
          f"{'images/s':>9} {'GFLOP/s':>8}")
    for r in results:
        gflops = 2 * r["gmacs"] * r["images_per_s"]
        print(f"{r['model']:<13} {r['gmacs']:>7.3f} {r['median_ms']:>10.2f} "
              f"{r['min_ms']:>9.2f} {r['images_per_s']:>9.2f} {gflops:>8.1f}")
        if "optimized_ops" in r:
            ops = ", ".join(f"{k} x{v}" for k, v in r["optimized_ops"].items())
            print(f"    optimised graph: {ops}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
