#!/usr/bin/env python3
"""The peer of odin's server: onnxruntime behind KServe's Python ModelServer.

One ONNX model, served over the Open Inference Protocol (KServe v2): REST on
--http-port (with Triton's binary tensor data extension, as KServe speaks it)
and gRPC on --grpc-port. Run it with the virtualenv that setup.sh makes:

    benches/serving/.venv/bin/python benches/serving/peer.py \\
        --model .fixtures/peer/resnet50.onnx --http-port 8080 --grpc-port 8081

The model is named --name (default: the file's stem). Its input name, datatype
and shape come from the ONNX file; the batch dimension is made variable
(metadata shows it as -1) and requests of batch 1..--max-batch are accepted.
Outputs are FP32.

onnxruntime runs with the CPU execution provider, --threads intra-op threads
(default 2: every CPU of the benchmark machine), one inter-op thread,
sequential execution and ORT_ENABLE_ALL, spinning off unless --spin. One
inference runs at a time: by default on one worker thread, so that KServe's
event loop keeps decoding and answering requests meanwhile; with --inline,
`predict` is a plain method and runs on the event loop, KServe's simplest
custom-model form.

What KServe 0.21 does not serve (so what no client can ask the peer for):
Triton's model configuration (`GET /v2/models/{m}/config`, gRPC
`ModelConfig`), model statistics, and a server metadata `extensions` list with
more than "model_repository_extension". perf_analyzer needs the first, so it
cannot drive this server; the benchmark measures it with load.py instead.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import sys

ONNX_TYPES = {1: ("FP32", "float32")}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, metavar="PATH", help="the ONNX file to serve")
    ap.add_argument("--name", help="the served model's name (default: the file's stem)")
    ap.add_argument("--http-port", type=int, default=8080, help="REST port (default 8080)")
    ap.add_argument("--grpc-port", type=int, default=8081, help="gRPC port (default 8081)")
    ap.add_argument("--threads", type=int, default=2,
                    help="onnxruntime intra-op threads (default 2)")
    ap.add_argument("--max-batch", type=int, default=8,
                    help="largest batch a request may carry (default 8)")
    ap.add_argument("--inline", action="store_true",
                    help="run inference on KServe's event loop (a sync predict) "
                         "instead of one worker thread")
    ap.add_argument("--spin", action="store_true",
                    help="let onnxruntime's intra-op threads spin between runs")
    ap.add_argument("--verbose", action="store_true",
                    help="keep KServe's per-request logging")
    ap.add_argument("--model-config", action="store_true",
                    help="also answer Triton's GET /v2/models/{m}/config (which KServe "
                         "lacks), so that perf_analyzer -i http can drive the peer; "
                         "REST only, and no longer stock KServe")
    return ap.parse_args(argv)


ARGS = parse_args()
# kserve parses sys.argv when imported (parse_known_args, with abbreviations:
# --model would become its --model_name). Give it nothing of ours.
sys.argv = sys.argv[:1]

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import kserve  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402
from kserve.errors import InvalidInput  # noqa: E402


def variable_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with dimension 0 of every graph input and output symbolic
    ("batch"), and the inferred value_info dropped (it may pin batch 1)."""
    for v in list(model.graph.input) + list(model.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]
    return model


def tensor_meta(v) -> tuple[str, str, list[int]]:
    """(name, datatype, shape with -1 for symbolic dimensions) of an ONNX
    graph input or output."""
    elem = v.type.tensor_type.elem_type
    if elem not in ONNX_TYPES:
        raise SystemExit(f"peer: {v.name}: only FP32 tensors are served (ONNX type {elem})")
    shape = [d.dim_value if d.HasField("dim_value") else -1
             for d in v.type.tensor_type.shape.dim]
    return v.name, ONNX_TYPES[elem][0], shape


class OrtModel(kserve.Model):
    """One ONNX file in an onnxruntime session, as a KServe v2 model."""

    def __init__(self, name: str, path: str, threads: int, max_batch: int,
                 inline: bool, spin: bool):
        super().__init__(name)
        self.path = path
        self.threads = threads
        self.max_batch = max_batch
        self.spin = spin
        self.inline = inline
        self.sess = None
        self.per_sample = False
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ort")
        if inline:
            # A plain method: KServe calls it on its event loop.
            self.predict = self.predict_inline

    def load(self) -> bool:
        model = onnx.load(self.path)
        init = {t.name for t in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in init]
        if len(inputs) != 1:
            raise SystemExit(f"peer: {self.path} has {len(inputs)} inputs; one is served")
        self.input_name, self.input_dtype, shape = tensor_meta(inputs[0])
        self.input_shape = [-1] + shape[1:]
        self.outputs = [tensor_meta(o) for o in model.graph.output]
        self.outputs = [(n, dt, [-1] + s[1:]) for n, dt, s in self.outputs]

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spin = "1" if self.spin else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        fixed = model.SerializeToString()
        try:
            self.sess = ort.InferenceSession(variable_batch(model).SerializeToString(), so,
                                             providers=["CPUExecutionProvider"])
            probe = np.zeros([2] + self.input_shape[1:], np.float32)
            self.sess.run(None, {self.input_name: probe})
        except Exception as e:  # a graph that hard-codes its batch
            print(f"peer: variable batch refused ({e}); batches run one sample at a time",
                  file=sys.stderr)
            self.per_sample = True
            self.sess = ort.InferenceSession(fixed, so, providers=["CPUExecutionProvider"])
        del model, fixed
        x = np.zeros([1] + self.input_shape[1:], np.float32)
        self.sess.run(None, {self.input_name: x})  # warm
        self.ready = True
        return self.ready

    def get_input_types(self):
        return [{"name": self.input_name, "datatype": self.input_dtype,
                 "shape": self.input_shape}]

    def get_output_types(self):
        return [{"name": n, "datatype": dt, "shape": s} for n, dt, s in self.outputs]

    # -- inference ---------------------------------------------------------

    def _tensor(self, payload: InferRequest) -> np.ndarray:
        inp = payload.get_input_by_name(self.input_name)
        if inp is None:
            if len(payload.inputs) != 1:
                raise InvalidInput(f"expected one input named '{self.input_name}'")
            inp = payload.inputs[0]
        if inp.datatype != self.input_dtype:
            raise InvalidInput(f"input '{inp.name}': datatype {inp.datatype}, "
                               f"expected {self.input_dtype}")
        shape = list(inp.shape)
        if len(shape) != len(self.input_shape) or shape[1:] != self.input_shape[1:] \
                or not 1 <= shape[0] <= self.max_batch:
            raise InvalidInput(f"input '{inp.name}': shape {shape}, expected "
                               f"[1..{self.max_batch}, {', '.join(map(str, self.input_shape[1:]))}]")
        return inp.as_numpy()

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        if not self.per_sample:
            return self.sess.run(None, {self.input_name: x})
        parts = [self.sess.run(None, {self.input_name: x[i:i + 1]}) for i in range(len(x))]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def _response(self, payload: InferRequest, ys: list[np.ndarray]) -> InferResponse:
        outs = []
        for (name, dt, _), y in zip(self.outputs, ys):
            out = InferOutput(name=name, shape=list(y.shape), datatype=dt)
            out.set_data_from_numpy(np.ascontiguousarray(y, np.float32), binary_data=True)
            outs.append(out)
        return InferResponse(response_id=payload.id or "", model_name=self.name,
                             infer_outputs=outs,
                             use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)

    async def predict(self, payload: InferRequest, headers=None,
                      response_headers=None) -> InferResponse:
        x = self._tensor(payload)
        ys = await asyncio.get_running_loop().run_in_executor(self.pool, self._run, x)
        return self._response(payload, ys)

    def predict_inline(self, payload: InferRequest, headers=None,
                       response_headers=None) -> InferResponse:
        return self._response(payload, self._run(self._tensor(payload)))


def add_model_config_route(model: OrtModel) -> None:
    """Adds Triton's model-configuration endpoint to KServe's REST app: the
    fields perf_analyzer reads (max_batch_size, inputs and outputs without
    the batch dimension)."""
    from kserve.protocol.rest import server as rest_server

    def config(model_name: str):
        from fastapi.responses import JSONResponse
        if model_name != model.name:
            return JSONResponse({"error": f"unknown model '{model_name}'"}, status_code=404)
        tensor = lambda n, dt, s, key: {"name": n, "data_type": "TYPE_" + dt, key: s[1:]}  # noqa: E731
        return {"name": model.name, "platform": "onnxruntime_onnx",
                "max_batch_size": model.max_batch,
                "input": [tensor(model.input_name, model.input_dtype, model.input_shape, "dims")],
                "output": [tensor(n, dt, s, "dims") for n, dt, s in model.outputs]}

    register = rest_server.RESTServer._register_endpoints

    def register_with_config(self, app):
        app.add_api_route("/v2/models/{model_name}/config", config, methods=["GET"])
        register(self, app)

    rest_server.RESTServer._register_endpoints = register_with_config


def main() -> int:
    args = ARGS
    name = args.name or os.path.splitext(os.path.basename(args.model))[0]
    model = OrtModel(name, args.model, args.threads, args.max_batch, args.inline, args.spin)
    model.load()
    print(f"peer: {name} from {args.model} ({model.input_name} {model.input_shape} -> "
          f"{', '.join(f'{n} {s}' for n, _, s in model.outputs)}), onnxruntime "
          f"{ort.__version__}, {args.threads} intra-op threads, "
          f"{'inline' if args.inline else 'worker thread'}; REST :{args.http_port}, "
          f"gRPC :{args.grpc_port}", file=sys.stderr, flush=True)
    if args.model_config:
        add_model_config_route(model)
    server = kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port,
                                workers=1, enable_latency_logging=args.verbose,
                                enable_docs_url=False)
    if not args.verbose:
        # After ModelServer, which configures logging: no line per request.
        for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
