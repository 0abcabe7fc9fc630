"""ONNX graphs on the CPU: OpenVINO fp32 when installed, else onnxruntime; one place for both
`predict` (tile -> probability) and `train` (tile -> backbone features).

OpenVINO runs lite0 1.5x faster than onnxruntime on 2 cores with the same fp32 results
(benchmarks/predict_bench.py); it is asked for f32 explicitly, because on CPUs with bfloat16 units
it would pick bf16 (2.2x, but only 97.7 % class agreement).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

CPU_BACKENDS = {"openvino": "OpenVINO", "onnx": "onnxruntime"}  # backend -> name in messages
CHUNK = 8  # 2 cores: chunks of 8 run as fast as 32 with ~600 MB less arena memory
Runner = Callable[[np.ndarray], np.ndarray]


def has_openvino() -> bool:
    return importlib.util.find_spec("openvino") is not None


def default_cpu_backend() -> str:
    return "openvino" if has_openvino() else "onnx"


def channels_first(graph: bytes) -> bytes:
    """The same graph taking its (N, H, W, C) first input as (N, C, H, W).

    GDAL decodes a window band by band fastest, and cropping tiles from planar strips copies whole
    rows, so predict feeds planar tiles (reader CPU per tile -35 %); the prepended Transpose cancels
    the graph's own NHWC -> NCHW one in both engines, so the model costs the same.
    """
    import onnx  # deferred: only the CPU graph backends need it

    model = onnx.load_from_string(graph)
    first = model.graph.input[0]
    if first.type.tensor_type.shape.dim[3].dim_value != 3:  # not (N, H, W, 3): already channels first
        return graph
    inner = f"{first.name}__nhwc"
    for node in model.graph.node:
        node.input[:] = [inner if name == first.name else name for name in node.input]
    model.graph.node.insert(0, onnx.helper.make_node("Transpose", [first.name], [inner], perm=[0, 2, 3, 1]))
    dims = list(first.type.tensor_type.shape.dim)
    shape = first.type.tensor_type.shape
    del shape.dim[:]
    for dim in (dims[0], dims[3], dims[1], dims[2]):
        shape.dim.add().CopyFrom(dim)
    return model.SerializeToString()


def _ort_session(graph: bytes) -> Any:
    import onnxruntime as ort  # deferred: only the onnxruntime backend loads it

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads would spin for the next run and starve predict's reader thread of the
    # cores it decodes tiles on (end to end 0.82 -> 0.95 x model-only on 2 cores).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


def cpu_runner(backend: str, graph: bytes, input_name: str, output_name: str) -> Runner:
    """A function (N, ...) array -> (N, ...) first output, run in chunks; called from one thread."""
    infer: Runner
    if backend == "openvino":
        import openvino as ov  # deferred: only the OpenVINO backend loads it (~0.3 s, ~100 MB)

        core = ov.Core()
        compiled = core.compile_model(core.read_model(graph), "CPU",
                                      {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()

        def infer(chunk: np.ndarray) -> np.ndarray:
            return np.array(request.infer({input_name: chunk})[output_name])
    else:
        session = _ort_session(graph)

        def infer(chunk: np.ndarray) -> np.ndarray:
            return np.asarray(session.run([output_name], {input_name: chunk})[0])

    def run(arr: np.ndarray) -> np.ndarray:
        return np.concatenate([infer(arr[i:i + CHUNK]) for i in range(0, len(arr), CHUNK)])

    return run
