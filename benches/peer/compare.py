#!/usr/bin/env python3
"""Markdown table of odin against onnxruntime, for odin's README.

Reads the JSON of ``bench.py --json`` and odin's ``odin profile --model NAME
--json`` output for each model, either from files or by running odin::

    python3 benches/peer/bench.py --json > peer.json
    python3 benches/peer/compare.py peer.json --odin odin-*.json
    python3 benches/peer/compare.py peer.json --run --runs 20   # runs cargo

odin's profile JSON is one object per model with the keys ``model``, ``cpu``,
``units`` (list of ``{index, kind, flops, median_ms}``), ``total_ms`` and
``images_per_s``.  The table has one row per model present in both:

    model | GFLOPs | odin ms | onnxruntime ms | ratio | odin GFLOP/s

* GFLOPs is 2 x the conv + dense multiply-accumulates that ``bench.py``
  counted from the ONNX graph (torchvision's published GMACs x 2): the same
  work figure for both engines.  odin's own unit FLOPs also count bias,
  activation and pooling work (a few percent more); they are only used to
  check that odin ran the same model.
* odin ms is odin's ``total_ms``, onnxruntime ms the median of bench.py.
  With several rounds (``bench.py --rounds R``; several odin files for one
  model, or ``--run --rounds R``) each side keeps its fastest round, so a
  busy neighbour on the shared machine penalises neither.
* ratio is odin images/s / onnxruntime images/s: above 1 odin is faster.
* odin GFLOP/s is GFLOPs x odin images/s.

With ``--run --imported [DIR]`` odin also profiles the same six graphs
imported from ONNX files, ``DIR/NAME.onnx`` (default ``.fixtures/peer``,
made by ``scripts/fixtures.py peer``), and the table gains the columns
"odin (imported) ms" and "ratio (imported)" next to the built-in model's.
When DIR does not exist the table is the usual one, with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_IMPORTED = os.path.join(REPO, ".fixtures", "peer")


def parse_json_output(text: str, origin: str) -> dict:
    """The JSON object in ``text``, allowing log lines around it."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch == "{" and (i == 0 or text[i - 1] == "\n"):
            try:
                obj, _ = decoder.raw_decode(text[i:])
                return obj
            except json.JSONDecodeError:
                continue
    raise SystemExit(f"{origin}: no JSON object in output")


def load_odin_files(paths) -> dict:
    """Profiles by model name from files holding one object, a list of
    objects, or one object per line."""
    out = {}
    for path in paths:
        with open(path) as f:
            text = f.read()
        try:
            data = json.loads(text)
            items = data if isinstance(data, list) else [data]
        except json.JSONDecodeError:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        for item in items:
            _keep_fastest(out, item)
    return out


def _keep_fastest(out: dict, profile: dict) -> None:
    """Keeps the profile with the lowest total_ms per model: several profiles
    of one model are rounds, treated as bench.py --rounds treats its own."""
    best = out.get(profile["model"])
    if best is None or profile["total_ms"] < best["total_ms"]:
        out[profile["model"]] = profile


def run_odin(names, runs: int, rounds: int, cpu: int | None,
             imported: dict | None = None) -> tuple[list, list]:
    """Builds odin in release mode, then profiles each model ``rounds`` times
    (interleaved) pinned to ``cpu`` (the CPU bench.py used), so both engines
    get the same core.  ``imported`` maps model names to ONNX files that are
    profiled too, right after the built-in model in each round.  Returns
    every built-in profile and every imported one (the latter with
    ``model`` set to the peer name)."""
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    imported = imported or {}

    def profile(model: str, r: int) -> dict:
        cmd = ["cargo", "run", "--release", "--quiet", "--", "profile",
               "--model", model, "--json", "--runs", str(runs)]
        print(f"round {r + 1}/{rounds}: {' '.join(cmd)}", file=sys.stderr)
        res = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True,
                             text=True, preexec_fn=pin)
        return parse_json_output(res.stdout, f"odin profile --model {model}")

    out, out_imported = [], []
    for r in range(rounds):
        for name in names:
            out.append(profile(name, r))
            if name in imported:
                p = profile(imported[name], r)
                p["model"] = name  # odin may report the file; key by the peer name
                out_imported.append(p)
    return out, out_imported


def imported_models(directory: str | None, names) -> dict:
    """``{name: DIR/name.onnx}`` for the files that exist, with a note for
    each that does not (or for the whole directory)."""
    if directory is None:
        return {}
    directory = os.path.abspath(directory)  # cargo runs in the repository root
    if not os.path.isdir(directory):
        print(f"note: {directory} does not exist (make it with `.venv/bin/python "
              "scripts/fixtures.py peer`, .ci/run makes .venv); the imported columns "
              "are left out", file=sys.stderr)
        return {}
    found = {}
    for name in names:
        path = os.path.join(directory, f"{name}.onnx")
        if os.path.isfile(path):
            found[name] = path
        else:
            print(f"note: {path} is missing; no imported figure for {name}", file=sys.stderr)
    return found


def _images_per_s(name: str, o: dict, gflops: float, label: str = "odin") -> float:
    """odin's images/s from a profile, warning when it looks like another model."""
    unit_gflops = sum(u.get("flops", 0) for u in o.get("units", [])) / 1e9
    if unit_gflops and not gflops <= unit_gflops < 1.06 * gflops:
        print(f"warning: {name}: {label}'s units sum to {unit_gflops:.3f} GFLOPs, "
              f"the ONNX graph has {gflops:.3f} (conv + dense): same model?",
              file=sys.stderr)
    ips = o.get("images_per_s") or 1e3 / o["total_ms"]
    if abs(ips * o["total_ms"] / 1e3 - 1) > 0.02:
        print(f"warning: {name}: {label}'s images_per_s {ips:.2f} is not "
              f"1000 / total_ms ({1e3 / o['total_ms']:.2f}); the ratio uses "
              "images_per_s", file=sys.stderr)
    return ips


def table(peer: dict, odin: dict, imported: dict | None = None) -> str:
    """The markdown table; with ``imported`` profiles (by model name), the
    imported model's ms and ratio sit next to the built-in one's."""
    if imported:
        rows = [
            "| model | GFLOPs | odin ms | odin (imported) ms | onnxruntime ms | ratio "
            "| ratio (imported) | odin GFLOP/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
    else:
        rows = [
            "| model | GFLOPs | odin ms | onnxruntime ms | ratio | odin GFLOP/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
    for p in peer["models"]:
        name = p["model"]
        o = odin.get(name)
        if o is None:
            print(f"note: no odin profile for {name}; row left out", file=sys.stderr)
            continue
        gflops = 2 * p["gmacs"]
        odin_ips = _images_per_s(name, o, gflops)
        ratio = odin_ips / p["images_per_s"]
        if imported:
            i = imported.get(name)
            if i is None:
                i_ms = i_ratio = "–"
            else:
                i_ips = _images_per_s(name, i, gflops, "odin (imported)")
                i_ms, i_ratio = f"{i['total_ms']:.2f}", f"{i_ips / p['images_per_s']:.2f}"
            rows.append(f"| {name} | {gflops:.2f} | {o['total_ms']:.2f} | {i_ms} | "
                        f"{p['median_ms']:.2f} | {ratio:.2f} | {i_ratio} | "
                        f"{gflops * odin_ips:.1f} |")
        else:
            rows.append(f"| {name} | {gflops:.2f} | {o['total_ms']:.2f} | "
                        f"{p['median_ms']:.2f} | {ratio:.2f} | {gflops * odin_ips:.1f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("peer", help="output of bench.py --json")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--odin", nargs="+", metavar="FILE", help="odin profile JSON files")
    src.add_argument("--run", action="store_true",
                     help="run `cargo run --release -- profile` for each peer model")
    ap.add_argument("--runs", type=int, default=20, help="odin runs per model with --run")
    ap.add_argument("--rounds", type=int,
                    help="with --run, profile each model this many times and keep the "
                         "fastest (default: as many rounds as bench.py used)")
    ap.add_argument("--cpu", type=int,
                    help="CPU to pin odin to with --run (default: bench.py's)")
    ap.add_argument("--save-odin", metavar="FILE",
                    help="with --run, also write the odin profiles as a JSON list")
    ap.add_argument("--imported", nargs="?", const=DEFAULT_IMPORTED, metavar="DIR",
                    help="with --run, also profile DIR/NAME.onnx (default DIR: "
                         ".fixtures/peer, from scripts/fixtures.py peer) and add the "
                         "'odin (imported)' columns")
    ap.add_argument("--save-imported", metavar="FILE",
                    help="with --run --imported, write the imported profiles as a JSON list")
    args = ap.parse_args(argv)
    if args.imported is not None and not args.run:
        ap.error("--imported needs --run")

    with open(args.peer) as f:
        peer = json.load(f)
    imported: dict = {}
    if args.run:
        cpu = args.cpu if args.cpu is not None else peer.get("pinned_cpu")
        rounds = args.rounds or peer.get("rounds", 1)
        names = [m["model"] for m in peer["models"]]
        files = imported_models(args.imported, names)
        profiles, imported_profiles = run_odin(names, args.runs, rounds, cpu, files)
        if args.save_odin:
            with open(args.save_odin, "w") as f:
                json.dump(profiles, f, indent=2)
        if args.save_imported and files:
            with open(args.save_imported, "w") as f:
                json.dump(imported_profiles, f, indent=2)
        odin = {}
        for p in profiles:
            _keep_fastest(odin, p)
        for p in imported_profiles:
            _keep_fastest(imported, p)
    else:
        odin = load_odin_files(args.odin)

    cpus = {o.get("cpu") for o in odin.values()} - {None}
    if cpus and cpus != {peer.get("cpu")}:
        print(f"warning: odin ran on {sorted(cpus)}, onnxruntime on {peer.get('cpu')!r}",
              file=sys.stderr)
    print(table(peer, odin, imported))
    print()
    print(f"One image (1x3x224x224), one thread. onnxruntime {peer['onnxruntime']} "
          f"(CPUExecutionProvider, {peer.get('graph_optimization_level', 'ORT_ENABLE_ALL')}, "
          f"median of {peer.get('runs', '?')} runs, best of {peer.get('rounds', 1)} "
          f"round(s)) on {peer['cpu']}. "
          "GFLOPs = 2 x conv + dense MACs; ratio = odin images/s / onnxruntime images/s."
          + (" odin (imported) is odin running the same graphs read from their ONNX files."
             if imported else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
