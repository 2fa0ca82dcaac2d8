#!/usr/bin/env python3
"""odin's six built-in models as ONNX graphs, for benchmarking peers.

Each builder reproduces the topology in ``src/engine/zoo/*.rs`` (torchvision's
alexnet, vgg16, resnet18/50/152 and mobilenet_v2 at a 1x3x224x224 input) in
the form odin runs it at inference:

* batch norm is already folded into the preceding convolution, so every
  convolution carries a bias (as odin's ``Conv2d::fold_batch_norm`` leaves it);
* activations are ``Relu`` or ``Clip(0, 6)`` (ReLU6), dropout is absent;
* dense layers are ``Flatten`` + ``Gemm`` (weight stored ``out x in``,
  ``transB=1``, as torch stores it); residual joins are ``Add`` + ``Relu``;
* ``AdaptiveAvgPool2d(1)`` is ``GlobalAveragePool``.  AlexNet's adaptive 6x6
  and VGG's adaptive 7x7 average pools are identities at a 224 input (the
  feature map is already 6x6 / 7x7) and are **omitted**; the builder asserts
  the spatial size at that point instead.

Weights come from a seeded numpy generator with odin's scaling: convolution
and dense weights are uniform in ``+-sqrt(6 / fan_in)`` (Kaiming-uniform for
ReLU), batch norms get random statistics around (gamma=gain, beta=0, mean=0,
var=1) that are folded into the convolution, and the last batch norm of every
residual body has gain 0.2 so activations stay bounded (no overflow or
denormals to skew timings).  The numbers are not odin's (different RNG), the
shapes and value ranges are.

Run it directly to build every model, check it with ``onnx.checker`` and
verify parameter and MAC counts against torchvision's published figures::

    python3 benches/peer/models.py
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

NAMES = ("alexnet", "vgg16", "resnet18", "resnet50", "resnet152", "mobilenet_v2")

#: Published torchvision parameter counts (BN counted as gamma + beta).
TORCHVISION_PARAMS = {
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet152": 60_192_808,
    "mobilenet_v2": 3_504_872,
}

#: Published torchvision GMACs (the "GFLOPS" column of its model docs).
TORCHVISION_GMACS = {
    "alexnet": 0.71,
    "vgg16": 15.47,
    "resnet18": 1.81,
    "resnet50": 4.09,
    "resnet152": 11.51,
    "mobilenet_v2": 0.30,
}

INPUT_SHAPE = (1, 3, 224, 224)
CLASSES = 1000
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class _Graph:
    """Accumulates nodes and initializers while tracking the NCHW shape."""

    name: str
    rng: np.random.Generator
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    #: Channels of folded batch norms: torchvision counts 2 parameters per
    #: channel (gamma, beta) where the folded conv has 1 (its bias).
    bn_channels: int = 0
    _count: int = 0

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def uniform(self, shape, bound: float) -> np.ndarray:
        return self.rng.uniform(-bound, bound, size=shape).astype(np.float32)

    def around(self, n: int, centre: float, spread: float) -> np.ndarray:
        return (centre + self.rng.uniform(-spread, spread, size=n)).astype(np.float32)

    # -- layers ---------------------------------------------------------

    def conv(self, x, shape, name, cout, k, stride=1, pad=0, groups=1,
             act=None, bn_gain=None):
        """Conv (+ folded BN when ``bn_gain`` is given) (+ activation).

        ``shape`` is the input (c, h, w); returns (output name, output shape).
        Without ``bn_gain`` the conv has its own bias, as alexnet's and vgg's.
        """
        cin, h, w = shape
        assert cin % groups == 0
        fan_in = (cin // groups) * k * k
        weight = self.uniform((cout, cin // groups, k, k), np.sqrt(6.0 / fan_in))
        if bn_gain is None:
            bias = self.uniform(cout, 0.05)
        else:
            gamma = self.around(cout, bn_gain, 0.2 * bn_gain)
            beta = self.around(cout, 0.0, 0.1)
            mean = self.around(cout, 0.0, 0.1)
            var = self.around(cout, 1.0, 0.2)
            scale = gamma / np.sqrt(var + 1e-5)
            weight = weight * scale[:, None, None, None]
            bias = (beta - mean * scale).astype(np.float32)
            self.bn_channels += cout
        wn = self.const(f"{name}.weight", weight.astype(np.float32))
        bn = self.const(f"{name}.bias", bias.astype(np.float32))
        y = self.fresh(name)
        self.nodes.append(helper.make_node(
            "Conv", [x, wn, bn], [y], name=name, kernel_shape=[k, k],
            strides=[stride, stride], pads=[pad] * 4, group=groups))
        ho = (h + 2 * pad - k) // stride + 1
        wo = (w + 2 * pad - k) // stride + 1
        return self.act(y, name, act), (cout, ho, wo)

    def act(self, x, name, act):
        if act is None:
            return x
        y = self.fresh(f"{name}.{act}")
        if act == "relu":
            self.nodes.append(helper.make_node("Relu", [x], [y], name=f"{name}.relu"))
        elif act == "relu6":
            if not any(t.name == "relu6.min" for t in self.inits):
                self.const("relu6.min", np.array(0.0, dtype=np.float32))
                self.const("relu6.max", np.array(6.0, dtype=np.float32))
            self.nodes.append(helper.make_node(
                "Clip", [x, "relu6.min", "relu6.max"], [y], name=f"{name}.relu6"))
        else:
            raise ValueError(act)
        return y

    def maxpool(self, x, shape, name, k, stride, pad=0):
        c, h, w = shape
        y = self.fresh(name)
        self.nodes.append(helper.make_node(
            "MaxPool", [x], [y], name=name, kernel_shape=[k, k],
            strides=[stride, stride], pads=[pad] * 4))
        return y, (c, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1)

    def global_avgpool(self, x, shape, name):
        y = self.fresh(name)
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [y], name=name))
        return y, (shape[0], 1, 1)

    def flatten(self, x, shape, name):
        y = self.fresh(name)
        self.nodes.append(helper.make_node("Flatten", [x], [y], name=name, axis=1))
        return y, (int(np.prod(shape)),)

    def dense(self, x, inputs, name, outputs, act=None, y=None):
        weight = self.uniform((outputs, inputs), np.sqrt(6.0 / inputs))
        bias = self.uniform(outputs, 0.05)
        wn = self.const(f"{name}.weight", weight)
        bn = self.const(f"{name}.bias", bias)
        y = y or self.fresh(name)
        self.nodes.append(helper.make_node(
            "Gemm", [x, wn, bn], [y], name=name, transB=1))
        return self.act(y, name, act)

    def add(self, a, b, name, act=None):
        y = self.fresh(name)
        self.nodes.append(helper.make_node("Add", [a, b], [y], name=f"{name}.add"))
        return self.act(y, name, act)

    def finish(self, logits: str) -> onnx.ModelProto:
        assert logits == OUTPUT_NAME
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(INPUT_SHAPE))],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, CLASSES])],
            self.inits)
        model = helper.make_model(
            graph, producer_name="odin-benches-peer",
            opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8  # opset 17's IR; loadable by any recent runtime
        helper.set_model_props(model, {"bn_channels": str(self.bn_channels)})
        return model


def _new(name: str, seed: int) -> _Graph:
    return _Graph(name, np.random.default_rng(seed))


def _classifier(g, x, shape, layers):
    """Flatten then ``layers`` = [(name, outputs, act)]; the last one is logits."""
    x, (n,) = g.flatten(x, shape, "flatten")
    for i, (name, out, act) in enumerate(layers):
        last = i == len(layers) - 1
        x = g.dense(x, n, name, out, act, y=OUTPUT_NAME if last else None)
        n = out
    return x


def alexnet(seed: int = 1) -> onnx.ModelProto:
    g = _new("alexnet", seed)
    x, s = INPUT_NAME, INPUT_SHAPE[1:]
    x, s = g.conv(x, s, "features.0", 64, 11, 4, 2, act="relu")
    x, s = g.maxpool(x, s, "features.2", 3, 2)
    x, s = g.conv(x, s, "features.3", 192, 5, 1, 2, act="relu")
    x, s = g.maxpool(x, s, "features.5", 3, 2)
    x, s = g.conv(x, s, "features.6", 384, 3, 1, 1, act="relu")
    x, s = g.conv(x, s, "features.8", 256, 3, 1, 1, act="relu")
    x, s = g.conv(x, s, "features.10", 256, 3, 1, 1, act="relu")
    x, s = g.maxpool(x, s, "features.12", 3, 2)
    assert s == (256, 6, 6), s  # AdaptiveAvgPool2d((6, 6)) is the identity: omitted
    x = _classifier(g, x, s, [("classifier.1", 4096, "relu"),
                              ("classifier.4", 4096, "relu"),
                              ("classifier.6", CLASSES, None)])
    return g.finish(x)


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
             512, 512, 512, "M", 512, 512, 512, "M")


def vgg16(seed: int = 1) -> onnx.ModelProto:
    g = _new("vgg16", seed)
    x, s = INPUT_NAME, INPUT_SHAPE[1:]
    index = 0
    for v in VGG16_CFG:
        if v == "M":
            x, s = g.maxpool(x, s, f"features.{index}", 2, 2)
            index += 1
        else:
            x, s = g.conv(x, s, f"features.{index}", v, 3, 1, 1, act="relu")
            index += 2
    assert s == (512, 7, 7), s  # AdaptiveAvgPool2d((7, 7)) is the identity: omitted
    x = _classifier(g, x, s, [("classifier.0", 4096, "relu"),
                              ("classifier.3", 4096, "relu"),
                              ("classifier.6", CLASSES, None)])
    return g.finish(x)


#: Gain of the last BN of each residual body (odin's LAST_BN_GAIN / SKIP_BN_GAIN).
RESIDUAL_BN_GAIN = 0.2


def _resnet(name: str, bottleneck: bool, layers, seed: int) -> onnx.ModelProto:
    g = _new(name, seed)
    expansion = 4 if bottleneck else 1
    x, s = INPUT_NAME, INPUT_SHAPE[1:]
    x, s = g.conv(x, s, "conv1", 64, 7, 2, 3, act="relu", bn_gain=1.0)
    x, s = g.maxpool(x, s, "maxpool", 3, 2, 1)
    cin = 64
    for stage, blocks in enumerate(layers):
        planes = 64 << stage
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            p = f"layer{stage + 1}.{b}"
            cout = planes * expansion
            if bottleneck:  # v1.5: the stride sits on the 3x3
                y, t = g.conv(x, s, f"{p}.conv1", planes, 1, act="relu", bn_gain=1.0)
                y, t = g.conv(y, t, f"{p}.conv2", planes, 3, stride, 1, act="relu", bn_gain=1.0)
                y, t = g.conv(y, t, f"{p}.conv3", cout, 1, bn_gain=RESIDUAL_BN_GAIN)
            else:
                y, t = g.conv(x, s, f"{p}.conv1", planes, 3, stride, 1, act="relu", bn_gain=1.0)
                y, t = g.conv(y, t, f"{p}.conv2", planes, 3, 1, 1, bn_gain=RESIDUAL_BN_GAIN)
            if stride != 1 or cin != cout:
                x, s = g.conv(x, s, f"{p}.downsample", cout, 1, stride, bn_gain=1.0)
            assert s == t, (s, t)
            x = g.add(y, x, p, act="relu")
            cin = cout
    x, s = g.global_avgpool(x, s, "avgpool")
    x = _classifier(g, x, s, [("fc", CLASSES, None)])
    return g.finish(x)


def resnet18(seed: int = 1) -> onnx.ModelProto:
    return _resnet("resnet18", False, (2, 2, 2, 2), seed)


def resnet50(seed: int = 1) -> onnx.ModelProto:
    return _resnet("resnet50", True, (3, 4, 6, 3), seed)


def resnet152(seed: int = 1) -> onnx.ModelProto:
    return _resnet("resnet152", True, (3, 8, 36, 3), seed)


#: (expansion t, output channels c, repeats n, first stride s).
MOBILENET_V2_CFG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(seed: int = 1) -> onnx.ModelProto:
    g = _new("mobilenet_v2", seed)
    x, s = INPUT_NAME, INPUT_SHAPE[1:]
    x, s = g.conv(x, s, "features.0", 32, 3, 2, 1, act="relu6", bn_gain=1.0)
    cin, index = 32, 1
    for t, c, n, first_stride in MOBILENET_V2_CFG:
        for i in range(n):
            stride = first_stride if i == 0 else 1
            hidden = cin * t
            skip = stride == 1 and cin == c
            p = f"features.{index}"
            y, u = x, s
            if t != 1:
                y, u = g.conv(y, u, f"{p}.expand", hidden, 1, act="relu6", bn_gain=1.0)
            y, u = g.conv(y, u, f"{p}.dw", hidden, 3, stride, 1, groups=hidden,
                          act="relu6", bn_gain=1.0)
            y, u = g.conv(y, u, f"{p}.project", c, 1,
                          bn_gain=RESIDUAL_BN_GAIN if skip else 1.0)
            x = g.add(y, x, p) if skip else y
            s, cin, index = u, c, index + 1
    x, s = g.conv(x, s, f"features.{index}", 1280, 1, act="relu6", bn_gain=1.0)
    x, s = g.global_avgpool(x, s, "avgpool")
    x = _classifier(g, x, s, [("classifier.1", CLASSES, None)])
    return g.finish(x)


BUILDERS = {
    "alexnet": alexnet,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet152": resnet152,
    "mobilenet_v2": mobilenet_v2,
}


def build(name: str, seed: int = 1) -> onnx.ModelProto:
    """Builds the model ``name`` (one of ``NAMES``) with weights from ``seed``."""
    try:
        return BUILDERS[name](seed)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(NAMES)}") from None


# -- counting -------------------------------------------------------------

def onnx_params(model: onnx.ModelProto) -> int:
    """Elements of the Conv and Gemm weight/bias initializers (the ReLU6
    bounds, two scalars shared by every Clip, are not parameters)."""
    used = {i for n in model.graph.node if n.op_type in ("Conv", "Gemm") for i in n.input[1:]}
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.name in used)


def bn_channels(model: onnx.ModelProto) -> int:
    """Channels of batch norms that were folded into convolutions."""
    props = {p.key: p.value for p in model.metadata_props}
    return int(props.get("bn_channels", "0"))


def torchvision_params(model: onnx.ModelProto) -> int:
    """The count torchvision reports for the unfolded model: a folded conv has
    one bias per channel where torchvision has BN gamma and beta (two) and no
    conv bias, so add one per folded channel."""
    return onnx_params(model) + bn_channels(model)


def macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of the Conv and Gemm nodes, from inferred shapes."""
    inferred = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)
              + list(inferred.graph.input)}
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    total = 0
    for n in model.graph.node:
        if n.op_type == "Conv":
            out = shapes[n.output[0]]
            _, cin_g, kh, kw = dims[n.input[1]]
            total += int(np.prod(out)) * cin_g * kh * kw
        elif n.op_type == "Gemm":
            outputs, inputs = dims[n.input[1]]  # transB=1: weight is out x in
            batch = shapes[n.input[0]][0]
            total += batch * inputs * outputs
    return total


def check(name: str, model: onnx.ModelProto) -> dict:
    """Runs onnx.checker and asserts params and MACs match torchvision."""
    onnx.checker.check_model(model, full_check=True)
    params = onnx_params(model)
    equivalent = torchvision_params(model)
    gmacs = macs(model) / 1e9
    assert equivalent == TORCHVISION_PARAMS[name], (
        f"{name}: {equivalent} torchvision-equivalent params, "
        f"published {TORCHVISION_PARAMS[name]}")
    assert abs(gmacs - TORCHVISION_GMACS[name]) <= 0.005 + 1e-9, (
        f"{name}: {gmacs:.4f} GMACs, published {TORCHVISION_GMACS[name]}")
    return {"model": name, "onnx_params": params, "torchvision_params": equivalent,
            "gmacs": gmacs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=NAMES, default=list(NAMES))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save", metavar="DIR",
                    help="also write DIR/NAME.onnx (vgg16 is ~550 MB)")
    args = ap.parse_args(argv)
    print(f"{'model':<13} {'onnx params':>13} {'torchvision eq.':>16} "
          f"{'published':>13} {'GMACs':>7} {'published':>9}")
    for name in args.models:
        model = build(name, args.seed)
        r = check(name, model)
        print(f"{name:<13} {r['onnx_params']:>13,} {r['torchvision_params']:>16,} "
              f"{TORCHVISION_PARAMS[name]:>13,} {r['gmacs']:>7.3f} "
              f"{TORCHVISION_GMACS[name]:>9.2f}")
        if args.save:
            import os
            os.makedirs(args.save, exist_ok=True)
            onnx.save(model, os.path.join(args.save, f"{name}.onnx"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
