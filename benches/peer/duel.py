#!/usr/bin/env python3
"""odin against onnxruntime, interleaved in one run: the README's peer table.

Each round times every model in onnxruntime (in this process) and then in
odin (``odin profile``, a child process), one right after the other on the
same CPUs, so a noisy spell on the shared machine hits both engines alike.
Each side keeps its fastest round; the table also gives the range of the
per-round ratios, which says how much the noise moved the comparison.

    python3 benches/peer/duel.py                          # one core, six models
    python3 benches/peer/duel.py --imported               # + the ONNX files
    python3 benches/peer/duel.py --cpus 0-1 --models resnet50   # a PE of two CPUs
    python3 benches/peer/duel.py --precision bf16         # odin with bf16 weights

With ``--cpus`` naming several CPUs, onnxruntime gets as many intra-op
threads and odin runs as one PE of those CPUs (``odin profile --cpus``:
one worker pinned to each, as a pipeline stage has).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (sibling module)
import models  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_list(text: str) -> list[int]:
    """``"1"``, ``"0-1"`` or ``"0,2"`` as a sorted list of CPUs."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return sorted(cpus)


def odin_profile(binary: str, model: str, cpus: str, runs: int, warmup: int,
                 precision: str) -> dict:
    flag = ["--cpus", cpus] if len(cpu_list(cpus)) > 1 else ["--cpu", cpus]
    cmd = [binary, "profile", "--model", model, "--json", "--runs", str(runs),
           "--warmup", str(warmup), "--precision", precision, *flag]
    res = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
    if res.stderr.strip():
        print(f"    odin: {res.stderr.strip()}", file=sys.stderr)
    start = res.stdout.index("{")
    return json.loads(res.stdout[start:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=models.NAMES, default=list(models.NAMES))
    ap.add_argument("--runs", type=int, default=20, help="timed runs per model and round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--cpus", default="1", help="CPUs, e.g. 1 or 0-1 (default 1)")
    ap.add_argument("--imported", action="store_true",
                    help="also time odin on .fixtures/peer/NAME.onnx (scripts/fixtures.py peer)")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                    help="odin's weights (onnxruntime stays f32)")
    ap.add_argument("--odin", help="odin binary (default: cargo build --release, then "
                                   "target/release/odin)")
    ap.add_argument("--json", metavar="FILE", help="also write every measurement here")
    args = ap.parse_args(argv)

    cpus = cpu_list(args.cpus)
    threads = len(cpus)
    binary = args.odin
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
        binary = os.path.join(target, "release", "odin")

    def options() -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return so

    bench.session_options = options
    os.sched_setaffinity(0, set(cpus))
    files = {}
    if args.imported:
        for name in args.models:
            path = os.path.join(REPO, ".fixtures", "peer", f"{name}.onnx")
            if not os.path.isfile(path):
                ap.error(f"{path} is missing: run `.venv/bin/python scripts/fixtures.py peer`")
            files[name] = path

    rows = {name: {"ort": [], "odin": [], "imported": []} for name in args.models}
    load_before = bench.loadavg()
    for r in range(args.rounds):
        for name in args.models:
            # One model's session at a time: vgg16's weights alone are 0.5 GB.
            sub = bench.Subject(name, 1, args.warmup, False)
            ort_ms = sub.time(args.runs)
            gmacs = sub.gmacs
            del sub
            p = odin_profile(binary, name, args.cpus, args.runs, args.warmup, args.precision)
            rows[name]["gmacs"] = gmacs
            rows[name]["ort"].append(ort_ms)
            rows[name]["odin"].append(p["total_ms"])
            rows[name]["odin_isa"] = p.get("isa")
            rows[name]["odin_precision"] = p.get("precision")
            line = f"round {r + 1}/{args.rounds} {name}: onnxruntime {ort_ms:.2f} ms, " \
                   f"odin {p['total_ms']:.2f} ms"
            if name in files:
                q = odin_profile(binary, files[name], args.cpus, args.runs, args.warmup,
                                 args.precision)
                rows[name]["imported"].append(q["total_ms"])
                line += f", imported {q['total_ms']:.2f} ms"
            print(line, file=sys.stderr)
    load_after = bench.loadavg()

    imported = bool(files)
    head = ["model", "GFLOPs", "odin ms"] + (["odin (imported) ms"] if imported else []) \
        + ["onnxruntime ms", "ratio"] + (["ratio (imported)"] if imported else []) \
        + ["per-round ratios"]
    print("| " + " | ".join(head) + " |")
    print("| --- |" + " ---: |" * (len(head) - 2) + " --- |")
    for name in args.models:
        row = rows[name]
        o, t = min(row["odin"]), min(row["ort"])
        cells = [name, f"{2 * row['gmacs']:.2f}", f"{o:.2f}"]
        if imported:
            cells.append(f"{min(row['imported']):.2f}")
        cells += [f"{t:.2f}", f"{t / o:.2f}"]
        if imported:
            cells.append(f"{t / min(row['imported']):.2f}")
        per_round = [b / a for a, b in zip(row["odin"], row["ort"])]
        cells.append(f"{min(per_round):.2f}-{max(per_round):.2f} "
                     f"(median {statistics.median(per_round):.2f})")
        print("| " + " | ".join(cells) + " |")
    print()
    print(f"{bench.cpu_model()}, CPUs {args.cpus} ({threads} thread(s) each side), "
          f"onnxruntime {ort.__version__} (CPUExecutionProvider, ORT_ENABLE_ALL), "
          f"odin {rows[args.models[0]].get('odin_isa')} kernels, {args.precision} weights; "
          f"median of {args.runs} runs, best of {args.rounds} interleaved rounds; "
          f"ratio = odin images/s / onnxruntime images/s; "
          f"loadavg {load_before[0]:.2f} -> {load_after[0]:.2f}.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": bench.cpu_model(), "cpus": args.cpus,
                       "onnxruntime": ort.__version__, "precision": args.precision,
                       "runs": args.runs, "rounds": args.rounds,
                       "loadavg": {"before": load_before, "after": load_after},
                       "models": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
