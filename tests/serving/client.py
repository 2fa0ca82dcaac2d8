#!/usr/bin/env python3
"""Drives odin's server with the official Triton clients (tritonclient 2.41),
for tests/serving.rs. Every subcommand prints one JSON object on stdout.

    client.py check    --http H:P --grpc H:P --model M
    client.py infer    --url H:P --protocol http|grpc [--json] --model M
                       --input x.npy --output y.npy [--datatype FP32|FP16|UINT8]
    client.py classify --url H:P --protocol http|grpc --model M --image F --k K
    client.py flood    --url H:P --protocol http|grpc --model M --input x.npy
                       --requests N --concurrency C [--timeout-us T] [--until-refused]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def client(protocol: str, url: str, concurrency: int = 1):
    if protocol == "http":
        return httpclient.InferenceServerClient(url, concurrency=concurrency, network_timeout=120.0)
    return grpcclient.InferenceServerClient(url)


def module(protocol: str):
    return httpclient if protocol == "http" else grpcclient


def check(a) -> dict:
    """Health, metadata and config over both protocols."""
    out = {}
    h = client("http", a.http)
    g = client("grpc", a.grpc)
    out["http_live"] = h.is_server_live()
    out["http_ready"] = h.is_server_ready()
    out["http_model_ready"] = h.is_model_ready(a.model)
    out["http_unknown_ready"] = h.is_model_ready("no_such_model")
    out["http_server_metadata"] = h.get_server_metadata()
    out["http_model_metadata"] = h.get_model_metadata(a.model)
    out["http_model_config"] = h.get_model_config(a.model)
    out["grpc_live"] = g.is_server_live()
    out["grpc_ready"] = g.is_server_ready()
    out["grpc_model_ready"] = g.is_model_ready(a.model)
    out["grpc_server_metadata"] = g.get_server_metadata(as_json=True)
    out["grpc_model_metadata"] = g.get_model_metadata(a.model, as_json=True)
    out["grpc_model_config"] = g.get_model_config(a.model, as_json=True)
    try:
        h.get_model_metadata("no_such_model")
        out["http_unknown_error"] = None
    except InferenceServerException as e:
        out["http_unknown_error"] = {"status": e.status(), "message": e.message()}
    try:
        g.get_model_metadata("no_such_model")
        out["grpc_unknown_error"] = None
    except InferenceServerException as e:
        out["grpc_unknown_error"] = {"status": e.status(), "message": e.message()}
    return out


def names(c, protocol: str, model: str):
    md = c.get_model_metadata(model) if protocol == "http" else c.get_model_metadata(model, as_json=True)
    return md["inputs"][0]["name"], md["outputs"][0]["name"]


def infer(a) -> dict:
    x = np.load(a.input)
    dtype = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}[a.datatype]
    x = x.astype(dtype)
    c = client(a.protocol, a.url)
    m = module(a.protocol)
    in_name, out_name = names(c, a.protocol, a.model)
    inp = m.InferInput(in_name, list(x.shape), a.datatype)
    if a.protocol == "http":
        inp.set_data_from_numpy(x, binary_data=not a.json)
        out = m.InferRequestedOutput(out_name, binary_data=not a.json)
    else:
        inp.set_data_from_numpy(x)
        out = m.InferRequestedOutput(out_name)
    r = c.infer(a.model, [inp], outputs=[out], request_id="req-7")
    y = r.as_numpy(out_name)
    np.save(a.output, y)
    resp = r.get_response() if a.protocol == "http" else r.get_response(as_json=True)
    return {"shape": list(y.shape), "dtype": str(y.dtype), "id": resp.get("id"), "model_name": resp.get("model_name")}


def classify(a) -> dict:
    c = client(a.protocol, a.url)
    m = module(a.protocol)
    in_name, out_name = names(c, a.protocol, a.model)
    with open(a.image, "rb") as f:
        data = np.array([[f.read()]], dtype=np.object_)
    inp = m.InferInput(in_name, [1, 1], "BYTES")
    inp.set_data_from_numpy(data)
    if a.protocol == "http":
        out = m.InferRequestedOutput(out_name, binary_data=True, class_count=a.k)
    else:
        out = m.InferRequestedOutput(out_name, class_count=a.k)
    r = c.infer(a.model, [inp], outputs=[out])
    y = r.as_numpy(out_name)
    return {"shape": list(y.shape), "classes": [v.decode() for v in y.reshape(-1)]}


def flood(a) -> dict:
    """`requests` requests from `concurrency` closed-loop threads; each
    outcome counted (ok, or the error's status and message)."""
    x = np.load(a.input).astype(np.float32)
    if a.batch > 1:
        x = np.repeat(x, a.batch, axis=0)
    want = np.load(a.expect) if a.expect else None
    m = module(a.protocol)
    probe = client(a.protocol, a.url)
    in_name, out_name = names(probe, a.protocol, a.model)
    lock = threading.Lock()
    outcomes: dict[str, int] = {}
    mismatched = [0]
    sent = [0]
    stop = threading.Event()
    start = threading.Barrier(a.concurrency)

    def count(key: str):
        with lock:
            outcomes[key] = outcomes.get(key, 0) + 1

    def worker():
        c = client(a.protocol, a.url)
        start.wait()
        while not stop.is_set():
            with lock:
                if not a.until_refused and sent[0] >= a.requests:
                    return
                sent[0] += 1
            inp = m.InferInput(in_name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            kw = {}
            if a.timeout_us:
                kw["timeout"] = a.timeout_us
            try:
                r = c.infer(a.model, [inp], **kw)
                y = r.as_numpy(out_name)
                if want is not None and not np.array_equal(y, want):
                    with lock:
                        mismatched[0] += 1
                count("ok")
            except InferenceServerException as e:
                msg = e.message() or ""
                if "Connection refused" in msg or "failed to connect" in msg.lower() or "connect" in str(e.status()).lower():
                    count("refused")
                    if a.until_refused:
                        stop.set()
                else:
                    count(f"{e.status()}: {msg}")
            except (ConnectionError, OSError) as e:
                count("refused")
                if a.until_refused:
                    stop.set()

    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    if a.ready_file:
        # Tell the test the load is running.
        with open(a.ready_file, "w") as f:
            f.write("started\n")
    for t in threads:
        t.join()
    return {"sent": sent[0], "outcomes": outcomes, "mismatched": mismatched[0], "seconds": time.monotonic() - t0}


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--http", required=True)
    c.add_argument("--grpc", required=True)
    c.add_argument("--model", required=True)
    i = sub.add_parser("infer")
    for s in (i,):
        s.add_argument("--url", required=True)
        s.add_argument("--protocol", choices=["http", "grpc"], required=True)
        s.add_argument("--model", required=True)
        s.add_argument("--input", required=True)
        s.add_argument("--output", required=True)
        s.add_argument("--json", action="store_true", help="HTTP JSON instead of binary data")
        s.add_argument("--datatype", default="FP32", choices=["FP32", "FP16", "UINT8"])
    k = sub.add_parser("classify")
    k.add_argument("--url", required=True)
    k.add_argument("--protocol", choices=["http", "grpc"], required=True)
    k.add_argument("--model", required=True)
    k.add_argument("--image", required=True)
    k.add_argument("--k", type=int, default=3)
    f = sub.add_parser("flood")
    f.add_argument("--url", required=True)
    f.add_argument("--protocol", choices=["http", "grpc"], required=True)
    f.add_argument("--model", required=True)
    f.add_argument("--input", required=True)
    f.add_argument("--expect", help="every ok output must equal this .npy")
    f.add_argument("--requests", type=int, default=16)
    f.add_argument("--concurrency", type=int, default=4)
    f.add_argument("--batch", type=int, default=1, help="rows per request (the input repeated)")
    f.add_argument("--timeout-us", type=int, default=0)
    f.add_argument("--until-refused", action="store_true", help="keep sending until the server refuses connections")
    f.add_argument("--ready-file")
    a = p.parse_args()
    result = {"check": check, "infer": infer, "classify": classify, "flood": flood}[a.cmd](a)
    json.dump(result, sys.stdout, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
