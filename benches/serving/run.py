#!/usr/bin/env python3
"""Serving benchmark: odin against onnxruntime behind KServe, over the Open
Inference Protocol, quiet and with an antagonist, for odin's README.

For each round and each scenario (quiet; antagonist = `stress-ng --cpu 1
--taskset 1` on CPU 1, started before the scenario's measurements and killed
after them) it measures, on one ONNX model (default resnet50):

* odin serving: `odin run --model M --grpc ... --http ...`, ready when
  `GET /v2/health/ready` answers 200; load.py over gRPC at --concurrency
  (default 4), then perf_analyzer at the same concurrency; SIGTERM.
* odin's server overhead: a fresh `odin run` server with --json-summary,
  load.py over gRPC at concurrency 1; the client's p50 minus the p50 of the
  frame latency odin itself recorded in that run (`latency_ms.p50`); and, from
  odin's metrics read as load.py's window opens and closes, the client's mean
  and odin's mean request duration each minus odin's mean frame latency over
  that window. The same again with perf_analyzer at concurrency 1 as the
  client, in another fresh odin.
* odin closed loop: `odin run --model M --duration D --json-summary F`, no
  server: its `throughput_fps` is what the serving throughput is compared with.
* the peer: peer.py (onnxruntime, 2 intra-op threads, behind KServe's
  ModelServer), load.py over gRPC at --concurrency and at 1. perf_analyzer
  cannot drive it (KServe has no ModelConfig); the run records its error.

It prints the date, CPU model and kernel, a markdown table (scenario, server,
load, responses/s, p50 ms, p99 ms, the generator's CPU use) and the ratios the
goals of odin's serving issue are stated in; --json prints all of it, every
round included, as one JSON object instead.

    bash benches/serving/setup.sh                          # once
    python3 benches/serving/run.py                         # 3 rounds, table
    python3 benches/serving/run.py --rounds 1 --duration 10 --warmup 3
    python3 benches/serving/run.py --odin /path/to/odin --json > serving.json
    python3 benches/serving/run.py --skip odin odin-c1 odin-closed --scenarios quiet  # peer only
    python3 benches/serving/run.py --report serving.json   # the table of a saved --json

With several rounds the scenarios are interleaved (round 1 quiet, round 1
antagonist, round 2 quiet, ...) and the servers alternate which goes first, so
a noisy spell on the shared machine hits one round of each; each row of the
table is the round with the most responses/s (--aggregate best, as the peer
benchmark keeps its least disturbed round) or the per-metric median over the
rounds (--aggregate median).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SCENARIOS = ("quiet", "antagonist")
ANTAGONIST = ["stress-ng", "--cpu", "1", "--taskset", "1", "--quiet"]


#: Every child process of this run (set in main).
KIDS: "Children"


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: stop measuring, clean up, exit."""


def _on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


# -- child processes ---------------------------------------------------------

class Children:
    """Every process this run starts, each in its own process group, so that
    it and whatever it spawned can be ended together, and are, on any exit."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self.live: list[subprocess.Popen] = []
        self.count = 0

    def start(self, argv, tag: str, env=None, stdout_file: str | None = None) -> subprocess.Popen:
        """Starts argv with its output in a log file (stdout alone in
        stdout_file when given)."""
        self.count += 1
        log = os.path.join(self.log_dir, f"{self.count:03d}-{tag}.log")
        env = dict(os.environ if env is None else env)
        for key in ("no_proxy", "NO_PROXY"):  # loopback traffic never goes through a proxy
            env[key] = ",".join(x for x in ("127.0.0.1,localhost", env.get(key)) if x)
        f = open(log, "wb")
        out = open(stdout_file, "wb") if stdout_file else f
        try:
            p = subprocess.Popen(argv, stdout=out, stderr=f, stdin=subprocess.DEVNULL,
                                 env=env, start_new_session=True)
        finally:
            f.close()
            out.close()
        p.log = log  # type: ignore[attr-defined]
        p.tag = tag  # type: ignore[attr-defined]
        self.live.append(p)
        return p

    def run(self, argv, tag: str, timeout: float, env=None,
            marks: dict | None = None) -> tuple[int | None, str, str]:
        """Runs argv to completion (SIGTERM, then SIGKILL, after timeout);
        returns its exit code (None: timed out), stdout and stderr. marks
        maps lines to watch for on its stderr to what to call when each
        appears (polled every 20 ms)."""
        stdout_file = os.path.join(self.log_dir, f"{self.count + 1:03d}-{tag}.out")
        p = self.start(argv, tag, env=env, stdout_file=stdout_file)
        pending = {k: f for k, f in (marks or {}).items() if f is not None}
        deadline = time.monotonic() + timeout
        code = None
        while pending and p.poll() is None and time.monotonic() < deadline:
            with open(p.log, errors="replace") as f:
                seen = f.read()
            for line in [k for k in pending if k in seen]:
                pending.pop(line)()
            time.sleep(0.02)
        try:
            code = p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            code = None
        self.stop(p, timeout=10)
        with open(stdout_file, errors="replace") as f:
            out = f.read()
        with open(p.log, errors="replace") as f:
            err = f.read()
        return code, out, err

    def stop(self, p: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Sends sig to p's process group, waits up to timeout, then SIGKILLs
        the group. Returns p's exit code (negative: killed by a signal)."""
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Anything left in the group (the leader may have exited first).
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if p.poll() is None:
            p.wait(timeout=10)
        if p in self.live:
            self.live.remove(p)
        return p.returncode

    def stop_all(self):
        for p in list(reversed(self.live)):
            try:
                self.stop(p, timeout=10)
            except Exception as e:  # noqa: BLE001  (keep stopping the others)
                print(f"run: could not stop {p.tag} ({p.pid}): {e}", file=sys.stderr)


def tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()[-4000:].decode(errors="replace")
        return "\n".join(data.strip().splitlines()[-lines:])
    except OSError:
        return ""


#: Loopback only: never through an http_proxy from the environment.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_ready(p: subprocess.Popen, url: str, timeout: float) -> str | None:
    """Polls url until it answers 200. Returns None, or why it never did."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if p.poll() is not None:
            return f"exited with {p.returncode} before it was ready: {tail(p.log, 3)[-300:]}"
        try:
            with NO_PROXY.open(url, timeout=2) as r:
                if r.status == 200:
                    return None
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = str(getattr(e, "reason", e))
        time.sleep(0.25)
    return f"not ready after {timeout:.0f} s ({last})"


# -- measurements ------------------------------------------------------------

def run_load(args, port: int, model: str, concurrency: int, duration: float,
             at_open=None, at_close=None) -> dict:
    """load.py over gRPC; at_open() and at_close() are called when its
    measured window opens and closes (as it says on stderr)."""
    argv = [common.venv_python(), os.path.join(common.HERE, "load.py"),
            "--url", f"127.0.0.1:{port}", "--protocol", "grpc", "--model", model,
            "--concurrency", str(concurrency), "--duration", str(duration),
            "--warmup", str(args.warmup), "--batch", "1", "--json"]
    timeout = duration + args.warmup + 120
    if at_open is None and at_close is None:
        code, stdout, stderr = KIDS.run(argv, f"load-c{concurrency}", timeout=timeout)
    else:
        code, stdout, stderr = KIDS.run(argv, f"load-c{concurrency}", timeout=timeout,
                                        marks={"load: window open": at_open,
                                               "load: window closed": at_close})
    try:
        out = json.loads(stdout)
    except json.JSONDecodeError:
        return {"error": f"load.py exited {code}: {(stderr or stdout).strip()[-600:]}"}
    if code != 0:
        out["error"] = "; ".join(out.get("client_failures", []) + out.get("clients_unfinished", [])) \
            or f"load.py exited {code}"
    return out


def run_perf_analyzer(args, port: int, model: str, log_dir: str, protocol: str = "grpc",
                      concurrency: int | None = None) -> dict:
    """perf_analyzer at concurrency (default --concurrency); throughput and
    p50/p99 from its CSV (microseconds there, milliseconds here)."""
    concurrency = concurrency or args.concurrency
    fd, csv_path = tempfile.mkstemp(prefix="pa-", suffix=".csv", dir=log_dir)
    os.close(fd)
    os.unlink(csv_path)
    argv = [common.perf_analyzer_path(), "-m", model, "-u", f"127.0.0.1:{port}", "-i", protocol,
            "--concurrency-range", str(concurrency),
            "--measurement-interval", str(args.pa_interval_ms),
            "--max-trials", str(args.pa_max_trials), "-s", str(args.pa_stability),
            "-f", csv_path]
    if not os.access(argv[0], os.X_OK):
        return {"error": f"no {argv[0]}: run benches/serving/setup.sh"}
    code, stdout, stderr = KIDS.run(argv, f"perf_analyzer-{protocol}", env=common.perf_analyzer_env(),
                                    timeout=args.pa_max_trials * args.pa_interval_ms / 1000 * 3 + 120)
    if code is None:
        return {"error": "perf_analyzer timed out"}
    text = (stdout + stderr).strip()
    out: dict = {"protocol": protocol, "exit_code": code}
    if not os.path.exists(csv_path):
        err = [ln for ln in text.splitlines() if "rror" in ln or "ailed" in ln]
        out["error"] = (err[0] if err else text[-400:]).strip()
        return out
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    row = next((x for x in rows if x.get("Concurrency") == str(concurrency)), rows[0] if rows else None)
    if row is None:
        out["error"] = "perf_analyzer wrote an empty CSV"
        return out
    out.update({
        "concurrency": int(row["Concurrency"]),
        "responses_per_s": round(float(row["Inferences/Second"]), 3),
        "latency_ms": {k: round(float(row[f"{k} latency"]) / 1e3, 3)
                       for k in ("p50", "p90", "p95", "p99") if f"{k} latency" in row},
        "csv": row,
    })
    if "Avg latency" in row:
        out["latency_ms"]["mean"] = round(float(row["Avg latency"]) / 1e3, 3)
    if code != 0:
        out["warning"] = next((ln for ln in text.splitlines() if "table" not in ln and ln.strip()), "")
    return out


def read_summary(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


#: odin's YAML for every run here: its metrics on a free port (printed in its
#: startup line), so that another odin on the machine's default 9464 does not
#: take them.
ODIN_CONFIG = "metrics:\n  enabled: true\n  listen: 127.0.0.1:0\n"


def scrape_metrics(p: subprocess.Popen) -> dict | None:
    """odin's Prometheus metrics (sums and counts, not buckets; labels
    dropped), from the address its startup line gives."""
    try:
        with open(p.log, "rb") as f:
            head = f.read(20000).decode(errors="replace")
    except OSError:
        return None
    m = re.search(r"metrics on (http://[^\s,]+/metrics)", head)
    if not m:
        return None
    try:
        with NO_PROXY.open(m.group(1), timeout=5) as r:
            text = r.read().decode(errors="replace")
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or "_bucket" in line or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name.split("{", 1)[0]] = float(value)
        except ValueError:
            pass
    return out


def mean_ms(metrics: dict, name: str) -> float | None:
    n = metrics.get(f"{name}_count")
    return round(metrics[f"{name}_sum"] / n * 1e3, 3) if n else None


def odin_server(args, kids: Children, log_dir: str, tag: str, summary: str | None = None):
    grpc, http = common.free_port(), common.free_port()
    while http == grpc:
        http = common.free_port()
    argv = [args.odin, "run", "--config", args.odin_config, "--model", args.model,
            "--grpc", f"127.0.0.1:{grpc}", "--http", f"127.0.0.1:{http}"]
    if summary:
        argv += ["--json-summary", summary]
    p = kids.start(argv, tag)
    err = wait_ready(p, f"http://127.0.0.1:{http}/v2/health/ready", args.ready_timeout)
    return p, grpc, http, err


def measure_odin(args, kids, log_dir, model_name, scenario, r) -> dict:
    out: dict = {}
    t0 = time.monotonic()
    p, grpc, _http, err = odin_server(args, kids, log_dir, f"odin-{scenario}-r{r}")
    out["startup_s"] = round(time.monotonic() - t0, 1)
    if err:
        kids.stop(p)
        out["error"] = f"odin server: {err}"
        return out
    try:
        out["load"] = run_load(args, grpc, model_name, args.concurrency, args.duration)
        if not args.no_perf_analyzer:
            out["perf_analyzer"] = run_perf_analyzer(args, grpc, model_name, log_dir)
    finally:
        out["exit_code"] = kids.stop(p, timeout=60)
    return out


def measure_odin_overhead(args, kids, log_dir, model_name, scenario, r, tool="load.py") -> dict:
    """One odin server with --json-summary, one client at concurrency 1
    (load.py, or perf_analyzer), SIGTERM: the client's p50 against the frame
    p50 in odin's summary of that run, and odin's own request and frame
    means from its metrics."""
    tag = "c1" if tool == "load.py" else "c1-pa"
    summary = os.path.join(log_dir, f"odin-{tag}-{scenario}-r{r}.json")
    p, grpc, _http, err = odin_server(args, kids, log_dir, f"odin-{tag}-{scenario}-r{r}", summary)
    if err:
        kids.stop(p)
        return {"error": f"odin server: {err}"}
    out: dict = {}
    metrics = None
    window: dict = {}
    key = "load" if tool == "load.py" else "perf_analyzer"
    try:
        if tool == "load.py":
            out[key] = run_load(args, grpc, model_name, 1, args.c1_duration,
                                at_open=lambda: window.update(open=scrape_metrics(p)),
                                at_close=lambda: window.update(closed=scrape_metrics(p)))
        else:
            out[key] = run_perf_analyzer(args, grpc, model_name, log_dir, concurrency=1)
        metrics = scrape_metrics(p)
    finally:
        out["exit_code"] = kids.stop(p, timeout=60)
    # Server-side means, request duration (arrival to response written)
    # against frame latency (admission into the pipeline to completion): the
    # client's own work is in neither. Over load.py's measured window when
    # the counters were read at its edges, else over the whole run.
    if window.get("open") and window.get("closed"):
        metrics = {k: v - window["open"].get(k, 0.0) for k, v in window["closed"].items()}
        out["server_metrics_over"] = "load.py's measured window"
    elif metrics:
        out["server_metrics_over"] = "the whole run"
    if metrics:
        request = mean_ms(metrics, "odin_inference_request_duration_seconds")
        frame = mean_ms(metrics, "odin_frame_latency_seconds")
        out["server_metrics_ms"] = {
            "requests": metrics.get("odin_inference_request_duration_seconds_count"),
            "request_mean": request, "frame_mean": frame,
            "queue_mean": mean_ms(metrics, "odin_inference_queue_duration_seconds"),
            "compute_mean": mean_ms(metrics, "odin_inference_compute_duration_seconds")}
        if request is not None and frame is not None:
            out["server_overhead_mean_ms"] = round(request - frame, 3)
        client_mean = (out[key] or {}).get("latency_ms", {}).get("mean")
        if tool == "load.py" and client_mean is not None and frame is not None \
                and out["server_metrics_over"] != "the whole run":
            out["overhead_mean_ms"] = round(client_mean - frame, 3)
    s = read_summary(summary)
    if s is None:
        out["error"] = "odin wrote no --json-summary in server mode"
        return out
    out["odin_summary"] = {"frames": s.get("frames"), "throughput_fps": s.get("throughput_fps"),
                           "latency_ms": s.get("latency_ms")}
    client_p50 = (out[key] or {}).get("latency_ms", {}).get("p50")
    frame_p50 = (s.get("latency_ms") or {}).get("p50")
    if client_p50 is not None and frame_p50:
        out["overhead_p50_ms"] = round(client_p50 - frame_p50, 3)
    return out


def measure_odin_closed(args, kids, log_dir, scenario, r) -> dict:
    summary = os.path.join(log_dir, f"odin-closed-{scenario}-r{r}.json")
    p = kids.start([args.odin, "run", "--config", args.odin_config, "--model", args.model,
                    "--duration", str(args.closed_duration), "--json-summary", summary],
                   f"odin-closed-{scenario}-r{r}")
    try:
        p.wait(timeout=args.closed_duration + args.ready_timeout + 60)
    except subprocess.TimeoutExpired:
        pass
    code = kids.stop(p)
    s = read_summary(summary)
    if s is None:
        return {"error": f"odin run exited {code} without a summary: {tail(p.log)}"}
    return {"exit_code": code, "frames": s.get("frames"), "duration_s": s.get("duration_s"),
            "throughput_fps": s.get("throughput_fps"), "latency_ms": s.get("latency_ms")}


def peer_argv(args, http: int, grpc: int) -> list[str]:
    argv = [common.venv_python(), os.path.join(common.HERE, "peer.py"), "--model", args.model,
            "--http-port", str(http), "--grpc-port", str(grpc), "--threads", str(args.peer_threads)]
    return argv + (["--model-config"] if args.peer_pa_http else [])


def measure_peer(args, kids, log_dir, model_name, scenario, r, probe_pa: bool) -> dict:
    out: dict = {}
    grpc, http = common.free_port(), common.free_port()
    while http == grpc:
        http = common.free_port()
    t0 = time.monotonic()
    p = kids.start(peer_argv(args, http, grpc), f"peer-{scenario}-r{r}")
    err = wait_ready(p, f"http://127.0.0.1:{http}/v2/health/ready", args.ready_timeout)
    out["startup_s"] = round(time.monotonic() - t0, 1)
    if err:
        kids.stop(p)
        out["error"] = f"peer: {err}"
        return out
    try:
        out["load"] = run_load(args, grpc, model_name, args.concurrency, args.duration)
        out["load_c1"] = run_load(args, grpc, model_name, 1, args.c1_duration)
        if probe_pa and not args.no_perf_analyzer:
            out["perf_analyzer"] = run_perf_analyzer(args, grpc, model_name, log_dir)
        if args.peer_pa_http and not args.no_perf_analyzer:
            out["perf_analyzer_http"] = run_perf_analyzer(args, http, model_name, log_dir, "http")
    finally:
        out["exit_code"] = kids.stop(p, timeout=30)
    return out


# -- aggregation and report --------------------------------------------------

def pick(rounds: list[dict], how: str) -> dict | None:
    """One figure set from several rounds of one measurement (dicts with
    responses_per_s and latency_ms): the round with the most responses/s, or
    per-metric medians."""
    ok = [x for x in rounds if x and "responses_per_s" in x and x.get("responses_per_s")]
    if not ok:
        return None
    if how == "best":
        best = max(ok, key=lambda x: x["responses_per_s"])
        keep = {"responses_per_s": best["responses_per_s"],
                "latency_ms": {k: v for k, v in best.get("latency_ms", {}).items()
                               if k in ("p50", "p90", "p99", "mean")}}
        if "generator_cpus" in best:
            keep["generator_cpus"] = best["generator_cpus"]
        return keep
    med = {"responses_per_s": statistics.median(x["responses_per_s"] for x in ok),
           "latency_ms": {k: statistics.median(x["latency_ms"][k] for x in ok)
                          for k in ("p50", "p99") if all(k in x.get("latency_ms", {}) for x in ok)}}
    gens = [x["generator_cpus"] for x in ok if "generator_cpus" in x]
    if gens:
        med["generator_cpus"] = statistics.median(gens)
    return med


def closed_as_row(x: dict) -> dict | None:
    if not x or x.get("error") or x.get("throughput_fps") is None:
        return None
    return {"responses_per_s": x["throughput_fps"], "latency_ms": x.get("latency_ms") or {}}


ROWS = [
    # (server label, load label, how to get the row's figures from one round)
    ("odin", "gRPC c={c}, load.py", lambda m: (m.get("odin") or {}).get("load")),
    ("odin", "gRPC c={c}, perf_analyzer", lambda m: (m.get("odin") or {}).get("perf_analyzer")),
    ("odin", "gRPC c=1, load.py", lambda m: (m.get("odin_c1") or {}).get("load")),
    ("odin", "gRPC c=1, perf_analyzer", lambda m: (m.get("odin_c1_pa") or {}).get("perf_analyzer")),
    ("odin", "closed loop, no server", lambda m: closed_as_row(m.get("odin_closed"))),
    ("peer", "gRPC c={c}, load.py", lambda m: (m.get("peer") or {}).get("load")),
    ("peer", "HTTP c={c}, perf_analyzer, config route added",
     lambda m: (m.get("peer") or {}).get("perf_analyzer_http")),
    ("peer", "gRPC c=1, load.py", lambda m: (m.get("peer") or {}).get("load_c1")),
]


def summarise(args, rounds: list[dict]) -> dict:
    """The table and the goals over all rounds (--aggregate), and each goal's
    value in each round on its own: a ratio of two figures from one round
    compares what one spell of the shared machine allowed both."""
    out = summarise_rounds(args, rounds)
    if len(rounds) > 1:
        each = [summarise_rounds(args, [r])["goals"] for r in rounds]
        for i, g in enumerate(out["goals"]):
            vals = [e[i]["value"] for e in each]
            g["per_round"] = vals
            known = [v for v in vals if v is not None]
            g["per_round_median"] = round(statistics.median(known), 3) if known else None
    return out


def summarise_rounds(args, rounds: list[dict]) -> dict:
    table = {}
    for scenario in args.scenarios:
        per = [r[scenario] for r in rounds if scenario in r]
        rows = []
        for server, load, get in ROWS:
            x = pick([get(m) for m in per], args.aggregate)
            if x is not None:
                rows.append({"server": server, "load": load.format(c=args.concurrency), **x})
        def across(measurement, field):
            vals = [m[measurement][field] for m in per
                    if (m.get(measurement) or {}).get(field) is not None]
            return {"median": statistics.median(vals) if vals else None, "rounds": vals}

        client_cpu = [m["odin_c1"]["load"]["generator_cpu_ms_per_response"] for m in per
                      if (m.get("odin_c1") or {}).get("load", {}).get("generator_cpu_ms_per_response")]
        table[scenario] = {
            "rows": rows,
            # The server's overhead at concurrency 1, each the median over rounds (ms).
            "overhead_ms": {
                "p50": across("odin_c1", "overhead_p50_ms"),
                "mean_window": across("odin_c1", "overhead_mean_ms"),
                "p50_perf_analyzer": across("odin_c1_pa", "overhead_p50_ms"),
                "server_side_mean": across("odin_c1", "server_overhead_mean_ms"),
            },
            "c1_client_cpu_ms_per_response": statistics.median(client_cpu) if client_cpu else None,
        }

    def row(scenario, server, load_prefix):
        for x in table.get(scenario, {}).get("rows", []):
            if x["server"] == server and x["load"].startswith(load_prefix):
                return x
        return None

    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None

    c = f"gRPC c={args.concurrency}, load.py"
    oq, oa = row("quiet", "odin", c), row("antagonist", "odin", c)
    pq, pa = row("quiet", "peer", c), row("antagonist", "peer", c)
    cq = row("quiet", "odin", "closed loop")
    rps = lambda x: x["responses_per_s"] if x else None  # noqa: E731
    p99 = lambda x: x["latency_ms"].get("p99") if x else None  # noqa: E731
    def oh(kind):
        return table.get("quiet", {}).get("overhead_ms", {}).get(kind, {}).get("median")

    def goal(text, value, target, ok):
        return {"goal": text, "value": value, "target": target,
                "met": None if value is None else ok(value)}

    c = args.concurrency
    goals = [
        goal(f"quiet: odin gRPC c={c} / odin closed loop, responses/s",
             ratio(rps(oq), rps(cq)), ">= 0.95", lambda v: v >= 0.95),
        goal(f"quiet: odin / peer, gRPC c={c} responses/s",
             ratio(rps(oq), rps(pq)), "> 1", lambda v: v > 1),
        goal("quiet: server overhead (ms): load.py c=1 p50 - frame p50 of odin's summary",
             oh("p50"), "< 1 ms", lambda v: v < 1.0),
        goal("quiet: the same with perf_analyzer's c=1 p50 (ms)",
             oh("p50_perf_analyzer"), "< 1 ms", lambda v: v < 1.0),
        goal("quiet: load.py c=1 mean - odin's frame mean over the same window (ms)",
             oh("mean_window"), "< 1 ms", lambda v: v < 1.0),
        goal("quiet: on odin's clock (ms): mean request duration - mean frame latency",
             oh("server_side_mean"), "< 1 ms", lambda v: v < 1.0),
        goal(f"antagonist: odin / peer, gRPC c={c} responses/s",
             ratio(rps(oa), rps(pa)), ">= 2.2", lambda v: v >= 2.2),
        goal(f"odin p99 under the antagonist / quiet p99, gRPC c={c}",
             ratio(p99(oa), p99(oq)), "<= 2", lambda v: v <= 2),
    ]
    return {"table": table, "goals": goals}


def fmt(v, nd=2) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def markdown(args, meta: dict, summary: dict) -> str:
    lines = [f"{meta['date']}, {meta['cpu']} ({meta['cpus']} CPUs), {meta['kernel']}, "
             f"model {os.path.basename(meta['model'])}, {args.rounds} round(s) ({args.aggregate}), "
             f"load.py {args.duration:g} s after {args.warmup:g} s warm-up, loadavg "
             f"{meta['loadavg']['before'][0]:.2f} -> {meta['loadavg']['after'][0]:.2f}", ""]
    lines += ["| scenario | server | load | responses/s | p50 ms | p99 ms | generator CPUs |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for scenario in args.scenarios:
        for x in summary["table"].get(scenario, {}).get("rows", []):
            server = "odin" if x["server"] == "odin" else "onnxruntime + KServe"
            lines.append(f"| {scenario} | {server} | {x['load']} | {fmt(x['responses_per_s'], 1)} | "
                         f"{fmt(x['latency_ms'].get('p50'))} | {fmt(x['latency_ms'].get('p99'))} | "
                         f"{fmt(x.get('generator_cpus'), 3) if 'generator_cpus' in x else ''} |")
    several = any("per_round" in g for g in summary["goals"])
    lines += ["", "| goal | value | target | met |" + (" each round |" if several else ""),
              "| --- | ---: | --- | --- |" + (" --- |" if several else "")]
    for g in summary["goals"]:
        met = "–" if g["met"] is None else ("yes" if g["met"] else "no")
        each = (" " + ", ".join(fmt(v, 2) for v in g.get("per_round", [])) + " |") if several else ""
        lines.append(f"| {g['goal']} | {fmt(g['value'], 3)} | {g['target']} | {met} |{each}")
    for scenario in args.scenarios:
        t = summary["table"].get(scenario, {})
        oh = t.get("overhead_ms", {})
        if not any(v.get("median") is not None for v in oh.values()):
            continue
        cpu = t.get("c1_client_cpu_ms_per_response")
        lines += ["", f"{scenario}, odin at concurrency 1, what the server adds (ms; median over "
                      f"rounds, then each round):", ""]
        for kind, text in (
                ("p50", "load.py's p50 - the frame p50 in odin's --json-summary of the run"),
                ("p50_perf_analyzer", "perf_analyzer's p50 - the same, in a run of its own"),
                ("mean_window", "load.py's mean - odin's frame mean over load.py's window "
                                "(odin's metrics read at its edges)"),
                ("server_side_mean", "odin's mean request duration - its mean frame latency, "
                                     "same window: the client's work left out")):
            v = oh.get(kind, {})
            if v.get("median") is not None:
                rounds = ", ".join(f"{x:.2f}" for x in v["rounds"])
                lines.append(f"- {text}: **{v['median']:.2f}** ({rounds})")
        if cpu is not None:
            lines.append(f"- load.py's own CPU per response, part of which is on each request's "
                         f"path: {cpu:.2f}")
    return "\n".join(lines)


def errors_of_scenario(where: str, m: dict) -> list[str]:
    out = []
    if m.get("antagonist_error"):
        out.append(f"{where}: {m['antagonist_error']}")
    for what, x in m.items():
        if not isinstance(x, dict):
            continue
        if x.get("error"):
            out.append(f"{where} {what}: {x['error']}")
        for k, v in x.items():
            if isinstance(v, dict) and v.get("error"):
                out.append(f"{where} {what}.{k}: {v['error']}")
            if isinstance(v, dict) and v.get("errors"):
                out.append(f"{where} {what}.{k}: {v['errors']} failed requests "
                           f"{v.get('errors_by_message')}")
    return out


def errors_of(rounds: list[dict]) -> list[str]:
    return [e for i, rr in enumerate(rounds, 1) for scenario, m in rr.items()
            for e in errors_of_scenario(f"round {i} {scenario}", m)]


def odin_version(path: str) -> str | None:
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def report(args) -> int:
    """The table of a saved --json output, re-aggregated with --aggregate."""
    with open(args.report) as f:
        saved = json.load(f)
    settings = argparse.Namespace(**{**saved["settings"], "aggregate": args.aggregate})
    summary = summarise(settings, saved["rounds"])
    if args.json:
        json.dump({**saved, **summary, "settings": vars(settings)}, sys.stdout, indent=2)
        print()
        return 0
    print(markdown(settings, saved, summary))
    pa = saved.get("peer_perf_analyzer")
    if pa is not None:
        print(f"\nperf_analyzer against the peer: {pa.get('error') or 'ran'}")
    if saved.get("errors"):
        print("\nerrors:")
        for e in saved["errors"]:
            print(f"- {e}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--odin", default=os.path.join(common.REPO, "target", "release", "odin"),
                    help="odin binary (default target/release/odin)")
    ap.add_argument("--model", default=os.path.join(common.REPO, ".fixtures", "peer", "resnet50.onnx"),
                    help="ONNX file served by both (default .fixtures/peer/resnet50.onnx, "
                         "from scripts/fixtures.py all)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    ap.add_argument("--skip", nargs="+", default=[],
                    choices=("odin", "odin-c1", "odin-closed", "peer"),
                    help="measurements to leave out")
    ap.add_argument("--concurrency", type=int, default=4,
                    help="clients in the main load (default 4)")
    ap.add_argument("--duration", type=float, default=20.0,
                    help="measured seconds of each load.py run at --concurrency (default 20)")
    ap.add_argument("--c1-duration", type=float, default=10.0,
                    help="measured seconds of each concurrency-1 run (default 10)")
    ap.add_argument("--warmup", type=float, default=5.0,
                    help="seconds of load before each measurement (default 5)")
    ap.add_argument("--closed-duration", type=float, default=20.0,
                    help="--duration of the closed-loop odin run (default 20)")
    ap.add_argument("--ready-timeout", type=float, default=120.0,
                    help="seconds a server may take to become ready (default 120)")
    ap.add_argument("--no-perf-analyzer", action="store_true", help="leave perf_analyzer out")
    ap.add_argument("--pa-interval-ms", type=int, default=5000,
                    help="perf_analyzer --measurement-interval (default 5000)")
    ap.add_argument("--pa-max-trials", type=int, default=10,
                    help="perf_analyzer --max-trials (default 10, its own default)")
    ap.add_argument("--pa-stability", type=float, default=10,
                    help="perf_analyzer --stability-percentage (default 10, its own default); "
                         "it writes no figures when no trials are stable")
    ap.add_argument("--peer-pa-http", action="store_true",
                    help="start the peer with peer.py --model-config (Triton's config route, "
                         "which KServe lacks) and also run perf_analyzer over HTTP against it")
    ap.add_argument("--peer-threads", type=int, default=2,
                    help="the peer's onnxruntime intra-op threads (default 2)")
    ap.add_argument("--aggregate", choices=("best", "median"), default="best",
                    help="how rounds combine (default best: the round with most responses/s)")
    ap.add_argument("--logs", help="directory for the servers' logs and summaries "
                                   "(default: a new temporary directory, kept)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    ap.add_argument("--report", metavar="FILE",
                    help="measure nothing: print the table of a saved `run.py --json` "
                         "(with this --aggregate)")
    args = ap.parse_args(argv)
    if args.report:
        return report(args)

    args.model = os.path.abspath(args.model)
    args.odin = os.path.abspath(args.odin)
    model_name = os.path.splitext(os.path.basename(args.model))[0]
    if not os.path.exists(args.model):
        ap.error(f"no model {args.model}: run `scripts/fixtures.py all` in the repository root")
    want_odin = any(s not in args.skip for s in ("odin", "odin-c1", "odin-closed"))
    if want_odin and not os.access(args.odin, os.X_OK):
        ap.error(f"no odin binary at {args.odin} (cargo build --release, or --odin PATH, "
                 f"or --skip odin odin-c1 odin-closed)")
    if not os.path.exists(common.venv_python()):
        ap.error(f"no virtualenv at {common.venv_dir()}: run benches/serving/setup.sh")
    if "antagonist" in args.scenarios and subprocess.run(
            ["sh", "-c", "command -v stress-ng"], capture_output=True).returncode != 0:
        ap.error("no stress-ng: run benches/serving/setup.sh")
    log_dir = os.path.abspath(args.logs) if args.logs else tempfile.mkdtemp(prefix="odin-serving-")
    os.makedirs(log_dir, exist_ok=True)
    args.odin_config = os.path.join(log_dir, "odin.yaml")
    with open(args.odin_config, "w") as f:
        f.write(ODIN_CONFIG)

    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu": common.cpu_model(), "cpus": os.cpu_count(), "kernel": common.kernel(),
            "model": args.model, "model_name": model_name, "odin": args.odin,
            "odin_version": odin_version(args.odin) if want_odin else None,
            "loadavg": {"before": common.loadavg()}, "logs": log_dir,
            "settings": {k: v for k, v in vars(args).items() if k not in ("json",)}}
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    global KIDS
    kids = KIDS = Children(log_dir)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    # Also when started in the background, where a shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rounds: list[dict] = []
    probe_pa = True
    interrupted = None
    try:
        for r in range(1, args.rounds + 1):
            rr: dict = {}
            rounds.append(rr)
            for scenario in args.scenarios:
                m: dict = {"loadavg_before": common.loadavg()}
                rr[scenario] = m
                stress = None
                if scenario == "antagonist":
                    stress = kids.start(ANTAGONIST + ["--timeout", "7200s"], f"stress-ng-r{r}")
                    time.sleep(1.0)
                    if stress.poll() is not None:
                        m["antagonist_error"] = f"stress-ng exited {stress.returncode}: {tail(stress.log)}"
                try:
                    order = ["odin", "peer"] if r % 2 == 1 else ["peer", "odin"]
                    for server in order:
                        if server == "odin":
                            if "odin" not in args.skip:
                                log(f"round {r} {scenario}: odin serving")
                                m["odin"] = measure_odin(args, kids, log_dir, model_name, scenario, r)
                            if "odin-c1" not in args.skip:
                                log(f"round {r} {scenario}: odin serving, concurrency 1")
                                m["odin_c1"] = measure_odin_overhead(args, kids, log_dir, model_name,
                                                                     scenario, r)
                                if not args.no_perf_analyzer:
                                    log(f"round {r} {scenario}: odin serving, concurrency 1, "
                                        f"perf_analyzer")
                                    m["odin_c1_pa"] = measure_odin_overhead(
                                        args, kids, log_dir, model_name, scenario, r, "perf_analyzer")
                            if "odin-closed" not in args.skip:
                                log(f"round {r} {scenario}: odin closed loop")
                                m["odin_closed"] = measure_odin_closed(args, kids, log_dir, scenario, r)
                        elif "peer" not in args.skip:
                            log(f"round {r} {scenario}: peer")
                            m["peer"] = measure_peer(args, kids, log_dir, model_name, scenario, r,
                                                     probe_pa)
                            probe_pa = False
                finally:
                    if stress is not None:
                        kids.stop(stress, timeout=10)
                m["loadavg_after"] = common.loadavg()
                for e in errors_of_scenario(f"round {r} {scenario}", m):
                    log(e)
    except (KeyboardInterrupt, Interrupted) as e:
        interrupted = type(e).__name__ if isinstance(e, KeyboardInterrupt) else str(e)
        log(f"interrupted ({interrupted}): stopping what runs, reporting what was measured")
    finally:
        kids.stop_all()
    meta["loadavg"]["after"] = common.loadavg()

    summary = summarise(args, rounds)
    peer_pa = next((rr[s]["peer"]["perf_analyzer"] for rr in rounds for s in rr
                    if "perf_analyzer" in (rr[s].get("peer") or {})), None)
    if args.json:
        out = {**meta, **summary, "peer_perf_analyzer": peer_pa, "rounds": rounds,
               "errors": errors_of(rounds)}
        if interrupted:
            out["interrupted"] = interrupted
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        print(markdown(args, meta, summary))
        if peer_pa is not None:
            print(f"\nperf_analyzer against the peer: {peer_pa.get('error') or 'ran'}")
        errs = errors_of(rounds)
        if errs:
            print("\nerrors:")
            for e in errs:
                print(f"- {e}")
        print(f"\nlogs and summaries: {log_dir}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
