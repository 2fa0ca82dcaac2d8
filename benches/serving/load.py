#!/usr/bin/env python3
"""Closed-loop load over the Open Inference Protocol with tritonclient.

C client threads, each with its own tritonclient client object, each sending
its next request as soon as the previous one is answered (a closed loop, like
perf_analyzer's --concurrency-range C). The input's name, datatype and shape
come from the model's metadata; variable dimensions become --batch (the first)
or 1, and the data are random FP32, sent as raw binary (gRPC
raw_input_contents; REST with Triton's binary tensor data extension), made
once per thread. Run it with the virtualenv that setup.sh makes:

    benches/serving/.venv/bin/python benches/serving/load.py \\
        --url 127.0.0.1:8001 --protocol grpc --model resnet50 --concurrency 4
    benches/serving/.venv/bin/python benches/serving/load.py \\
        --url 127.0.0.1:8000 --protocol http --model resnet50 --concurrency 1 --json

Requests answered during --warmup seconds are discarded; then, over
--duration seconds, it counts the responses that arrive, their latency (send
to answer, on the client), and the errors by message. The lines "load: window
open" and "load: window closed" on stderr mark that window. It reports responses/s,
p50/p90/p99/mean latency in milliseconds and the generator's own CPU time
over the measured window (getrusage: user + system of this process, all its
threads), as one line, or as one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import percentile  # noqa: E402

#: Lines on stderr when the measured window opens and closes.
WINDOW_OPEN = "load: window open"
WINDOW_CLOSED = "load: window closed"

NP_TYPES = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}


def client_module(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as mod
    else:
        import tritonclient.http as mod
    return mod


def input_spec(mod, url: str, model: str, protocol: str, batch: int):
    """(name, datatype, shape) of the model's first input, from its
    metadata, with variable dimensions resolved; and the output names."""
    client = mod.InferenceServerClient(url)
    try:
        meta = client.get_model_metadata(model)
    finally:
        client.close()
    if protocol == "grpc":
        inputs = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                  for t in meta.inputs]
        outputs = [t.name for t in meta.outputs]
    else:
        inputs, outputs = meta["inputs"], [t["name"] for t in meta["outputs"]]
    if len(inputs) != 1:
        raise SystemExit(f"load: {model} has {len(inputs)} inputs; one is supported")
    spec = inputs[0]
    shape = [int(d) for d in spec["shape"]]
    if shape and shape[0] == -1:
        shape[0] = batch
    shape = [1 if d < 0 else d for d in shape]
    if spec["datatype"] not in NP_TYPES:
        raise SystemExit(f"load: input datatype {spec['datatype']} is not supported")
    return spec["name"], spec["datatype"], shape, outputs


class Worker(threading.Thread):
    """One closed-loop client."""

    def __init__(self, index, mod, args, spec, start_at, measure_at, stop_at):
        super().__init__(name=f"client-{index}", daemon=True)
        self.mod, self.args = mod, args
        self.name_, self.dtype, self.shape, self.outputs = spec
        self.seed = index
        self.start_at, self.measure_at, self.stop_at = start_at, measure_at, stop_at
        self.latencies_ms: list[float] = []
        self.errors: dict[str, int] = {}
        self.warmup_responses = 0
        self.checked = False
        self.failure: str | None = None

    def run(self):
        try:
            self._run()
        except Exception as e:  # noqa: BLE001  (reported, not raised in a thread)
            self.failure = f"{type(e).__name__}: {e}"

    def _run(self):
        mod, args = self.mod, self.args
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal(self.shape).astype(NP_TYPES[self.dtype])
        client = mod.InferenceServerClient(args.url)
        inp = mod.InferInput(self.name_, self.shape, self.dtype)
        if args.protocol == "http":
            inp.set_data_from_numpy(x, binary_data=True)
            outputs = [mod.InferRequestedOutput(n, binary_data=True) for n in self.outputs]
        else:
            inp.set_data_from_numpy(x)
            outputs = [mod.InferRequestedOutput(n) for n in self.outputs]
        sleep_until(self.start_at)
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= self.stop_at:
                    break
                try:
                    result = client.infer(args.model, [inp], outputs=outputs)
                except Exception as e:  # noqa: BLE001  (counted by message)
                    t1 = time.perf_counter()
                    if t1 >= self.measure_at and t1 <= self.stop_at:
                        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                        self.errors[msg] = self.errors.get(msg, 0) + 1
                    time.sleep(0.01)  # a refusing server is not a busy loop
                    continue
                t1 = time.perf_counter()
                if not self.checked:
                    y = result.as_numpy(self.outputs[0])
                    if y is None or y.shape[0] != self.shape[0]:
                        raise RuntimeError(f"unexpected output {self.outputs[0]}: "
                                           f"{None if y is None else y.shape}")
                    self.checked = True
                if t1 < self.measure_at:
                    self.warmup_responses += 1
                elif t1 <= self.stop_at:
                    self.latencies_ms.append((t1 - t0) * 1e3)
        finally:
            client.close()


def sleep_until(t: float) -> None:
    while (left := t - time.perf_counter()) > 0:
        time.sleep(left)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(args) -> dict:
    mod = client_module(args.protocol)
    spec = input_spec(mod, args.url, args.model, args.protocol, args.batch)
    now = time.perf_counter()
    start_at = now + 0.5  # every client connected before the clock starts
    measure_at = start_at + args.warmup
    stop_at = measure_at + args.duration
    workers = [Worker(i, mod, args, spec, start_at, measure_at, stop_at)
               for i in range(args.concurrency)]
    for w in workers:
        w.start()
    sleep_until(measure_at)
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    # For a caller that reads the server's counters over exactly this window.
    print(WINDOW_OPEN, file=sys.stderr, flush=True)
    sleep_until(stop_at)
    cpu1, wall1 = cpu_seconds(), time.perf_counter()
    print(WINDOW_CLOSED, file=sys.stderr, flush=True)
    # The last requests are answered after the window; wait for them, bounded.
    for w in workers:
        w.join(timeout=args.timeout)
    failures = [w.failure for w in workers if w.failure]
    hung = [w.name for w in workers if w.is_alive()]
    lat = sorted(v for w in workers for v in w.latencies_ms)
    errors: dict[str, int] = {}
    for w in workers:
        for k, v in w.errors.items():
            errors[k] = errors.get(k, 0) + v
    window = wall1 - wall0
    out = {
        "url": args.url,
        "protocol": args.protocol,
        "model": args.model,
        "input": {"name": spec[0], "datatype": spec[1], "shape": spec[2]},
        "concurrency": args.concurrency,
        "batch": spec[2][0] if spec[2] else 1,
        "warmup_s": args.warmup,
        "duration_s": round(window, 3),
        "responses": len(lat),
        "responses_per_s": round(len(lat) / window, 3) if window > 0 else 0.0,
        "latency_ms": {
            "p50": round(percentile(lat, 0.50), 3),
            "p90": round(percentile(lat, 0.90), 3),
            "p99": round(percentile(lat, 0.99), 3),
            "mean": round(statistics.fmean(lat), 3) if lat else float("nan"),
            "max": round(lat[-1], 3) if lat else float("nan"),
        },
        "errors": sum(errors.values()),
        "errors_by_message": errors,
        "generator_cpu_s": round(cpu1 - cpu0, 3),
        "generator_cpus": round((cpu1 - cpu0) / window, 3) if window > 0 else 0.0,
        "generator_cpu_ms_per_response": round((cpu1 - cpu0) * 1e3 / len(lat), 3) if lat else None,
    }
    if failures:
        out["client_failures"] = failures
    if hung:
        out["clients_unfinished"] = hung
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="HOST:PORT of the server")
    ap.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    ap.add_argument("--model", required=True, help="the served model's name")
    ap.add_argument("--concurrency", type=int, default=1,
                    help="clients, each with one request in flight (default 1)")
    ap.add_argument("--duration", type=float, default=20.0,
                    help="measured seconds (default 20)")
    ap.add_argument("--warmup", type=float, default=5.0,
                    help="seconds of load first, not counted (default 5)")
    ap.add_argument("--batch", type=int, default=1,
                    help="the variable first dimension of the input (default 1)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="how long to wait for the last answers after the window (default 30)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    out = run(args)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        lat = out["latency_ms"]
        print(f"{args.protocol} {args.url} {args.model} c={args.concurrency} "
              f"batch={out['batch']}: {out['responses_per_s']:.2f} responses/s "
              f"({out['responses']} in {out['duration_s']:.1f} s), p50 {lat['p50']:.2f} ms, "
              f"p90 {lat['p90']:.2f} ms, p99 {lat['p99']:.2f} ms, {out['errors']} errors, "
              f"generator {out['generator_cpus']:.3f} CPUs "
              f"({out['generator_cpu_ms_per_response'] or 0:.2f} ms per response)")
        for msg, n in out["errors_by_message"].items():
            print(f"  {n} x {msg}")
        for f in out.get("client_failures", []):
            print(f"  client failed: {f}")
    return 1 if out.get("client_failures") or out.get("clients_unfinished") else 0


if __name__ == "__main__":
    sys.exit(main())
