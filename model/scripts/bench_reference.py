#!/usr/bin/env python3
"""Reference timings for BENCHMARKS.md: torchvision GoogLeNet in PyTorch and ONNX Runtime.

Run by model/scripts/bench_forward.py right after `cargo bench -p glimpse-model`, so the numbers
come from one sitting. Same setup as the Rust benchmark: 2 threads, batch 1 and 8,
torchvision's googlenet(transform_input=True) in eval mode, with the same kind of random
weights as Glimpse's `--weights random` (Kaiming-normal convolutions, identity BatchNorm). The
weights' scale matters: torchvision's own init (normal, std 0.01) shrinks activations through
57 layers until they are denormal floats, which slows some engines and not others. Needs
torch, torchvision, onnx and onnxruntime from PyPI (developers only).

Prints one line per engine and batch: ms/image (median of the timed runs).
"""

import argparse
import math
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torchvision


def median_ms_per_image(run, batch, warmup, repeats):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0 / batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.googlenet(
        weights=None, aux_logits=False, transform_input=True, init_weights=True
    ).eval()
    # The statistics of Glimpse's RandomSource (model/src/googlenet/weights.rs): He-normal
    # convolutions, identity BatchNorm (torchvision's default), normal(0, 1/fan_in) classifier.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=math.sqrt(1.0 / module.in_features))
                torch.nn.init.zeros_(module.bias)

    results = []
    for batch in (1, 8):
        x = torch.randn(batch, 3, 224, 224)

        def run_torch():
            with torch.inference_mode():
                model(x)

        ms = median_ms_per_image(run_torch, batch, args.warmup, args.repeats)
        results.append(("pytorch", batch, ms))
        print(f"pytorch {torch.__version__} batch {batch}: {ms:.1f} ms/image", flush=True)

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "googlenet.onnx")
        torch.onnx.export(
            model,
            torch.randn(1, 3, 224, 224),
            path,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for batch in (1, 8):
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
            ms = median_ms_per_image(
                lambda: session.run(None, {"input": x}), batch, args.warmup, args.repeats
            )
            results.append(("onnxruntime", batch, ms))
            print(f"onnxruntime {ort.__version__} batch {batch}: {ms:.1f} ms/image", flush=True)


if __name__ == "__main__":
    main()
