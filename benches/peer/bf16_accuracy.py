#!/usr/bin/env python3
"""How far odin's bf16 weights move a model's outputs from f32.

Runs ``odin infer`` on one batch of distinct inputs twice, with
``--precision f32`` and ``--precision bf16``, and compares the outputs row
by row: the largest error relative to the row's largest f32 output, and
how often the top-1 class agrees.

    python3 benches/peer/bf16_accuracy.py                       # open-nsfw, 128 pictures
    python3 benches/peer/bf16_accuracy.py --model .fixtures/peer/resnet50.onnx --one-by-one

The default model is Yahoo's open_nsfw (ResNet-50 with trained weights,
NHWC input, fetched by ``scripts/fixtures.py opennsfw``). Its inputs are
synthetic pictures: seeded low-frequency noise in 0..255, minus the BGR
means the model was trained with, so their statistics resemble a photo's
rather than white noise's. NCHW models get standard-normal inputs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BGR_MEANS = np.array([104.0, 117.0, 123.0], dtype=np.float32)


def pictures(n: int, seed: int) -> np.ndarray:
    """``n`` NHWC 224x224 pictures: 7x7 random colours upsampled bilinearly
    plus fine noise, clipped to 0..255, minus the BGR means."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(n, 8, 8, 3)).astype(np.float32)
    pos = np.linspace(0, 7, 224, dtype=np.float32)
    i0 = np.floor(pos).astype(int).clip(0, 6)
    f = (pos - i0)[None, :, None, None]
    rows = coarse[:, i0] * (1 - f) + coarse[:, i0 + 1] * f
    f = (pos - i0)[None, None, :, None]
    img = rows[:, :, i0] * (1 - f) + rows[:, :, i0 + 1] * f
    img += rng.normal(0, 12, size=img.shape).astype(np.float32)
    return (img.clip(0, 255) - BGR_MEANS).astype(np.float32)


def infer(binary: str, model: str, x: str, out: str, precision: str, cpu: int) -> str:
    cmd = [binary, "infer", "--model", model, "--input", x, "--output", out,
           "--precision", precision, "--cpu", str(cpu)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr}")
    return res.stdout.splitlines()[0] + (f" [{res.stderr.strip()}]" if res.stderr.strip() else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(REPO, ".fixtures/opennsfw/open-nsfw.onnx"))
    ap.add_argument("--inputs", type=int, default=128, help="distinct inputs (default 128)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cpu", type=int, default=1)
    ap.add_argument("--one-by-one", dest="batch", action="store_false",
                    help="one input per run, for a model whose batch is fixed at 1")
    ap.add_argument("--odin", default=os.path.join(REPO, "target/release/odin"))
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as d:
        probe = subprocess.run([args.odin, "inspect", args.model], capture_output=True,
                               text=True, cwd=REPO)
        nhwc = "open-nsfw" in args.model or ",3]" in probe.stdout.replace(" ", "")
        if nhwc:
            x = pictures(args.inputs, args.seed)
        else:
            rng = np.random.default_rng(args.seed)
            x = rng.standard_normal((args.inputs, 3, 224, 224), dtype=np.float32)
        outs = {}
        for p in ("f32", "bf16"):
            # One batch where the model's batch is dynamic, else one by one.
            batches = [x] if args.batch else [x[i:i + 1] for i in range(args.inputs)]
            rows = []
            for i, xb in enumerate(batches):
                xp, o = os.path.join(d, "x.npy"), os.path.join(d, "y.npy")
                np.save(xp, xb)
                line = infer(args.odin, args.model, xp, o, p, args.cpu)
                if i == 0:
                    print(f"{p}: {line}", file=sys.stderr)
                rows.append(np.load(o).reshape(len(xb), -1).astype(np.float64))
            outs[p] = np.concatenate(rows)
    f32, bf16 = outs["f32"], outs["bf16"]
    scale = np.abs(f32).max(axis=1, keepdims=True)
    rel = (np.abs(bf16 - f32) / scale).max(axis=1)
    agree = (f32.argmax(axis=1) == bf16.argmax(axis=1)).mean()
    distinct = len({row.tobytes() for row in x.reshape(args.inputs, -1)})
    print(f"{os.path.basename(args.model)}: {args.inputs} inputs ({distinct} distinct), "
          f"{f32.shape[1]} outputs each")
    print(f"  max relative error (|bf16 - f32| / max |f32| of the row): "
          f"max {rel.max():.2e}, median {np.median(rel):.2e}")
    print(f"  max absolute error: {np.abs(bf16 - f32).max():.3e}")
    classes = np.bincount(f32.argmax(axis=1), minlength=f32.shape[1])
    print(f"  f32 top-1 classes: {int((classes > 0).sum())} distinct, the commonest "
          f"{classes.max()} times")
    print(f"  top-1 agreement: {agree * 100:.1f}% ({int(round(agree * args.inputs))}/{args.inputs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
