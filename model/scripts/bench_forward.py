#!/usr/bin/env python3
"""GoogLeNet forward pass, one sitting: Glimpse (fused flex, stock flex, ndarray) against
PyTorch and ONNX Runtime, at batch 1 and 8, on the same number of threads.

Runs, back to back:
  1. `cargo bench -p glimpse-model --bench forward -- forward_` (criterion, random weights),
     with RAYON_NUM_THREADS set to --threads;
  2. model/scripts/bench_reference.py under --python (torch, torchvision, onnx, onnxruntime
     from PyPI: developers only, never CI);
then prints ms/image and the ratios as a Markdown table, with the load average before and
after (after includes the benchmark's own threads). Rerun when the 1-minute load average was
above 0.5 at the start: something else was running, and the numbers are not comparable.

Usage (from the repository root):
  python3 model/scripts/bench_forward.py --python /path/to/venv/bin/python
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["flex", "flex-stock", "ndarray"]
LABELS = {
    "flex": "Glimpse, flex + fused NHWC operators (default)",
    "flex-stock": "Glimpse, burn-flex stock operators",
    "ndarray": "Glimpse, burn-ndarray",
    "pytorch": "PyTorch (eager, inference_mode)",
    "onnxruntime": "ONNX Runtime (CPU EP)",
}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def criterion_ms(target: Path, backend: str, batch: int) -> float:
    """Median time of one forward pass from criterion's estimates, per image."""
    path = target / "criterion" / f"forward_{backend}" / f"batch_{batch}" / "new" / "estimates.json"
    estimates = json.loads(path.read_text())
    return estimates["median"]["point_estimate"] / 1e6 / batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="a Python with torch, torchvision, onnx and onnxruntime (default: this one)",
    )
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="Glimpse backends to run (default: all three)",
    )
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]

    before = load()
    print(f"load average before: {before}", flush=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), GLIMPSE_BENCH_BACKENDS=",".join(backends))
    subprocess.run(
        ["cargo", "bench", "-p", "glimpse-model", "--bench", "forward", "--", "forward_"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ms = {(b, n): criterion_ms(target, b, n) for b in backends for n in (1, 8)}

    reference = subprocess.run(
        [args.python, str(ROOT / "model" / "scripts" / "bench_reference.py"), "--threads", str(args.threads)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    sys.stdout.write(reference.stdout)
    versions = {}
    for line in reference.stdout.splitlines():
        m = re.match(r"(\w+) (\S+) batch (\d+): ([\d.]+) ms/image", line)
        if m:
            engine, version, batch, value = m.groups()
            ms[(engine, int(batch))] = float(value)
            versions[engine] = version
    after = load()

    print()
    print(f"{args.threads} threads everywhere; load average before {before}, after {after}")
    print()
    print("| engine | batch 1, ms/image | batch 8, ms/image |")
    print("|---|---:|---:|")
    for engine in backends + ["pytorch", "onnxruntime"]:
        if (engine, 1) not in ms:
            continue
        label = LABELS[engine] + (f" {versions[engine]}" if engine in versions else "")
        print(f"| {label} | {ms[(engine, 1)]:.1f} | {ms[(engine, 8)]:.1f} |")
    for engine in backends:
        for ref in ("pytorch", "onnxruntime"):
            if (ref, 1) in ms:
                r1 = ms[(engine, 1)] / ms[(ref, 1)]
                r8 = ms[(engine, 8)] / ms[(ref, 8)]
                print(f"| {engine} / {ref} | {r1:.2f}× | {r8:.2f}× |")
    # The benchmark itself keeps --threads cores busy, so the "after" figure includes it; what
    # says whether anything else was running is the 1-minute figure before it started.
    if float(before.split()[0]) > 0.5:
        print("\nwarning: load average was above 0.5 at the start; rerun on a quieter machine", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
