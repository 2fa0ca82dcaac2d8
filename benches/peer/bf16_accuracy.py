#!/usr/bin/env python3
"""How far odin's bf16 weights move a model's outputs from f32.

Runs ``odin infer`` on one batch of distinct inputs twice, with
``--precision f32`` and ``--precision bf16``, and compares the outputs row
by row: the largest error relative to the row's largest f32 output, and
how often the top-1 class agrees.

    python3 benches/peer/bf16_accuracy.py                       # PP-OCRv4, 128 text lines
    python3 benches/peer/bf16_accuracy.py --model .fixtures/opennsfw/open-nsfw.onnx
    python3 benches/peer/bf16_accuracy.py --model .fixtures/peer/resnet50.onnx --one-by-one

The default model is PaddleOCR's PP-OCRv4 text recogniser (trained
weights, fetched by ``scripts/fixtures.py ocr``): each input is a distinct
line of random printable ASCII rendered with Pillow in a DejaVu face, size
and offset drawn from the seed, and each of the 40 output steps picks one
of 6625 classes, so the top-1 agreement covers many classes; the lines
are also CTC-decoded and compared with the text drawn, for both
precisions. Needs Pillow and the DejaVu fonts (``pip install pillow``,
Debian's fonts-dejavu-core).

Yahoo's open_nsfw (ResNet-50 with trained weights, NHWC input, fetched by
``scripts/fixtures.py opennsfw``) gets synthetic pictures: seeded
low-frequency noise in 0..255, minus the BGR means the model was trained
with; its two classes make its top-1 agreement weak evidence. NCHW models
get standard-normal inputs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OCR_MODEL = os.path.join(REPO, ".fixtures/ocr/ch_PP-OCRv4_rec_infer.onnx")
DEJAVU = "/usr/share/fonts/truetype/dejavu"
FACES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
#: What a line is drawn from: digits, letters, common punctuation and the space.
LINE_CHARS = ("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
              "-.,:/%()+=#      ")
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


def text_lines(n: int, seed: int) -> tuple[np.ndarray, list]:
    """``n`` distinct text lines of 6-18 random LINE_CHARS, each rendered in
    a seeded face, size (24-30 px), offset and background grey, as the
    recogniser's 1 x 3 x 48 x 320 input; returns them and their texts."""
    sys.path.insert(0, os.path.join(REPO, "tests", "fixtures", "onnx"))
    import fixturelib as fl  # noqa: PLC0415
    rng = np.random.default_rng(seed)
    texts, lines = [], []
    while len(texts) < n:
        k = int(rng.integers(6, 19))
        text = " ".join("".join(rng.choice(list(LINE_CHARS), k)).split())
        if len(text) < 4 or text in texts:
            continue
        face = os.path.join(DEJAVU, FACES[int(rng.integers(len(FACES)))])
        jitter = (int(rng.integers(0, 7)), int(rng.integers(-2, 3)), int(rng.integers(225, 256)))
        texts.append(text)
        lines.append(fl.ocr_text_line(text, face, int(rng.integers(24, 31)), jitter))
    return np.concatenate(lines), texts


def infer(binary: str, model: str, x: str, out: str, precision: str, cpu: int) -> str:
    cmd = [binary, "infer", "--model", model, "--input", x, "--output", out,
           "--precision", precision, "--cpu", str(cpu)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr}")
    return res.stdout.splitlines()[0] + (f" [{res.stderr.strip()}]" if res.stderr.strip() else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=OCR_MODEL)
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
        ocr = "PP-OCR" in args.model
        if ocr:
            x, texts = text_lines(args.inputs, args.seed)
        elif nhwc:
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
                y = np.load(o).astype(np.float64)
                # The recogniser's rows are its steps (N x 40 x classes).
                rows.append(y.reshape(-1, y.shape[-1]) if ocr else y.reshape(len(xb), -1))
            outs[p] = np.concatenate(rows)
    f32, bf16 = outs["f32"], outs["bf16"]
    scale = np.abs(f32).max(axis=1, keepdims=True)
    rel = (np.abs(bf16 - f32) / scale).max(axis=1)
    top_f32, top_bf16 = f32.argmax(axis=1), bf16.argmax(axis=1)
    agree = top_f32 == top_bf16
    distinct = len({row.tobytes() for row in x.reshape(args.inputs, -1)})
    what = "steps" if ocr else "rows"
    print(f"{os.path.basename(args.model)}: {args.inputs} inputs ({distinct} distinct), "
          f"{len(f32)} {what} of {f32.shape[1]} outputs")
    print(f"  max relative error (|bf16 - f32| / max |f32| of the row): "
          f"max {rel.max():.2e}, 99th percentile {np.percentile(rel, 99):.2e}, "
          f"median {np.median(rel):.2e}")
    print(f"  max absolute error: {np.abs(bf16 - f32).max():.3e}")
    classes = np.bincount(top_f32, minlength=f32.shape[1])
    print(f"  f32 top-1 classes: {int((classes > 0).sum())} distinct, the commonest "
          f"{classes.max()} times")
    print(f"  top-1 agreement: {agree.mean() * 100:.2f}% ({int(agree.sum())}/{len(agree)} {what})")
    if ocr:
        import onnx  # noqa: PLC0415
        import fixturelib as fl  # noqa: PLC0415  (text_lines put it on the path)
        alphabet = fl.ocr_alphabet(onnx.load(args.model))
        steps = len(f32) // args.inputs
        inked = top_f32 != 0
        print(f"  top-1 agreement where f32 reads a character: {agree[inked].mean() * 100:.2f}% "
              f"({int(agree[inked].sum())}/{int(inked.sum())} steps)")
        read = {p: [fl.ocr_decode(outs[p][i * steps:(i + 1) * steps], alphabet)
                    for i in range(args.inputs)] for p in ("f32", "bf16")}
        same = sum(a == b for a, b in zip(read["f32"], read["bf16"]))
        stripped = sum(a.strip() == b.strip() for a, b in zip(read["f32"], read["bf16"]))
        print(f"  lines read the same by both: {same}/{args.inputs} "
              f"({stripped}/{args.inputs} ignoring leading and trailing spaces)")
        for p in ("f32", "bf16"):
            exact = sum(r == t for r, t in zip(read[p], texts))
            print(f"  {p} reads {exact}/{args.inputs} lines exactly as drawn")
        for i, (a, b) in enumerate(zip(read["f32"], read["bf16"])):
            if a != b:
                print(f"    line {i}: drawn {texts[i]!r}, f32 {a!r}, bf16 {b!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
