"""Training and inference throughput of the default backbone (tf_efficientnet_lite0, 224 px).

    python benchmarks/train_bench.py [--quick] [--batch 32] [--iters 6] [--threads N]

Measured in one run on random input (weights do not change speed):
  * CPU training images/s: forward + backward + SGD step, full fine-tune, on the pooled features
    plus a 2-class linear head (what few-shot fine-tuning does);
  * CPU inference images/s under torch.inference_mode;
  each in the default (NCHW) and channels_last memory format (model AND input), 2 warm-up
  iterations, then the median of --iters timed iterations;
  * onnxruntime fp32 inference images/s of the exported feature extractor, if the export works;
  * with a CUDA device: the same training/inference with bf16 autocast.
--quick: batch 8, 2 warm-up, 3 timed iterations (a smoke run of the script).
The first 2 iterations in a process are 2-10x slower (oneDNN primitive set-up), hence 2 warm-ups.
CPU figures collapse when another process competes for the cores (OpenMP threads then wait on each
other): the load average is printed before and after so such a run can be recognised and repeated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn

from spurgemap.model.backbones import create_backbone


def _median_time(step: Callable[[], None], warmup: int, iters: int, sync: Callable[[], None]) -> float:
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _model(device: str, channels_last: bool) -> tuple[nn.Module, nn.Module, int]:
    backbone, spec = create_backbone(pretrained=False)
    head = nn.Linear(spec.num_features, 2)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return backbone.to(device).to(memory_format=fmt), head.to(device), spec.input_size


def bench_train(device: str, channels_last: bool, batch: int, warmup: int, iters: int,
                amp: bool = False) -> float:
    backbone, head, size = _model(device, channels_last)
    backbone.train()
    params = [*backbone.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            loss = nn.functional.cross_entropy(head(backbone(x)), y)
        loss.backward()
        opt.step()

    return batch / _median_time(step, warmup, iters, _sync(device))


def bench_infer(device: str, channels_last: bool, batch: int, warmup: int, iters: int,
                amp: bool = False) -> float:
    backbone, _, size = _model(device, channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)

    def step() -> None:
        with torch.inference_mode(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            backbone(x)

    return batch / _median_time(step, warmup, iters, _sync(device))


def bench_onnx(batch: int, warmup: int, iters: int, threads: int) -> float | str:
    """Images/s of onnxruntime fp32 on CPU, or the reason it could not be measured."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return f"onnxruntime not importable ({exc})"
    backbone, _, size = _model("cpu", False)
    x = torch.randn(batch, 3, size, size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lite0.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
                torch.onnx.export(backbone, (x,), str(path), input_names=["x"], output_names=["features"],
                                  dynamic_axes={"x": {0: "n"}}, opset_version=17, dynamo=False)
        except Exception as exc:
            return f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        with torch.inference_mode():
            ref = backbone(x).numpy()
        out = sess.run(None, feed)[0]
        err = float(abs(out - ref).max())
        if err > 1e-3:
            return f"onnxruntime output differs from torch by {err:.2e}: not timed"
        return batch / _median_time(lambda: sess.run(None, feed), warmup, iters, lambda: None)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _sync(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 8, 2 warm-up, 3 timed iterations")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (median taken)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    batch = args.batch or (8 if args.quick else 32)
    warmup, iters = (2, 3) if args.quick else (2, args.iters or 6)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"tf_efficientnet_lite0 at 224 px, batch {batch}, {warmup} warm-up + median of {iters}; "
          f"torch {torch.__version__}, {args.threads} CPU threads; load average {_load()}", flush=True)

    rows: list[tuple[str, str, float | str]] = []
    for label, cl in (("NCHW", False), ("channels_last", True)):
        rows.append(("cpu fp32 train", label, bench_train("cpu", cl, batch, warmup, iters)))
        print(f"  {rows[-1][0]:<22} {label:<14} {rows[-1][2]:8.1f} img/s", flush=True)
        rows.append(("cpu fp32 inference", label, bench_infer("cpu", cl, batch, warmup, iters)))
        print(f"  {rows[-1][0]:<22} {label:<14} {rows[-1][2]:8.1f} img/s", flush=True)
    rows.append(("onnxruntime fp32 infer", "NCHW", bench_onnx(batch, warmup, iters, args.threads)))

    if torch.cuda.is_available():
        gpu_batch = max(batch, 64) if not args.quick else batch
        for label, cl in (("NCHW", False), ("channels_last", True)):
            rows.append(("cuda bf16 train", label, bench_train("cuda", cl, gpu_batch, 3, iters * 3, amp=True)))
            rows.append(("cuda bf16 inference", label, bench_infer("cuda", cl, gpu_batch, 3, iters * 3, amp=True)))
        gpu_note = f"GPU: {torch.cuda.get_device_name()} (batch {gpu_batch})"
    else:
        gpu_note = "no CUDA device: GPU figures not measured"

    print(f"\n{'measurement':<24}{'format':<15}{'img/s':>10}{'ms/img':>10}")
    for what, fmt, v in rows:
        if isinstance(v, float):
            print(f"{what:<24}{fmt:<15}{v:>10.1f}{1000 / v:>10.1f}")
        else:
            print(f"{what:<24}{fmt:<15}  {v}")
    figures = {(w, f): v for w, f, v in rows if isinstance(v, float)}
    print()
    for what in ("cpu fp32 train", "cpu fp32 inference", "cuda bf16 train", "cuda bf16 inference"):
        if (what, "NCHW") in figures and (what, "channels_last") in figures:
            ratio = figures[(what, "channels_last")] / figures[(what, "NCHW")]
            print(f"channels_last speed-up, {what}: {ratio:.2f}x")
    print(gpu_note)
    print(f"load average at the end: {_load()} (well above 0 before the run means the figures are low)")


if __name__ == "__main__":
    main()
