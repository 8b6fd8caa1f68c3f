#!/usr/bin/env python3
"""Reads a Glimpse /metrics page with Prometheus' own Python parser and checks its content.

Usage: metrics_check.py URL KIND [--upload HTTPS_BASE --ca CA_PEM --image FILE]
KIND is `frontend` or `node`. With --upload, images are classified through the front-end's
JSON API first, so the histograms hold real observations. Exits non-zero with the reasons
on any failure. Uses prometheus_client.parser.text_string_to_metric_families (PyPI
`prometheus_client`), the parser Prometheus' Python ecosystem relies on.
"""

import argparse
import math
import ssl
import sys
import urllib.request
import uuid

from prometheus_client.parser import text_string_to_metric_families

# Families each page must have (as the parser names them: counters without `_total`).
EXPECTED = {
    "frontend": {
        "glimpse_build_info": "gauge",
        "glimpse_images": "counter",
        "glimpse_image_latency_seconds": "histogram",
        "glimpse_http_request_duration_seconds": "histogram",
        "glimpse_node_request_duration_seconds": "histogram",
        "glimpse_node_queue_seconds": "histogram",
        "glimpse_node_decode_seconds": "histogram",
        "glimpse_node_inference_seconds": "histogram",
        "glimpse_node_batch_size": "histogram",
        "glimpse_node_up": "gauge",
        "glimpse_node_in_flight": "gauge",
        "glimpse_node_served": "counter",
        "glimpse_queued_images": "gauge",
        "glimpse_dispatch_attempts": "counter",
        "glimpse_buffered_bytes": "gauge",
        "glimpse_connections": "gauge",
        "process_cpu_seconds": "counter",
        "process_resident_memory_bytes": "gauge",
        "process_open_fds": "gauge",
        "process_max_fds": "gauge",
        "process_start_time_seconds": "gauge",
    },
    "node": {
        "glimpse_build_info": "gauge",
        "glimpse_worker_answered": "counter",
        "glimpse_worker_overloaded": "counter",
        "glimpse_worker_in_flight": "gauge",
        "glimpse_worker_capacity": "gauge",
        "glimpse_worker_ready": "gauge",
        "glimpse_worker_batch_size": "histogram",
        "glimpse_worker_batch_seconds": "histogram",
        "process_cpu_seconds": "counter",
        "process_resident_memory_bytes": "gauge",
        "process_open_fds": "gauge",
        "process_max_fds": "gauge",
        "process_start_time_seconds": "gauge",
    },
}

# Histograms that must hold observations after --upload (or after traffic).
OBSERVED = {
    "frontend": [
        "glimpse_image_latency_seconds",
        "glimpse_node_inference_seconds",
        "glimpse_node_batch_size",
    ],
    "node": ["glimpse_worker_batch_size", "glimpse_worker_batch_seconds"],
}


def upload(base, ca, image, count):
    ctx = ssl.create_default_context(cafile=ca)
    data = open(image, "rb").read()
    for _ in range(count):
        boundary = uuid.uuid4().hex
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"image.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
        ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(
            f"{base}/api/v1/classify?wait=true",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with urllib.request.urlopen(req, context=ctx, timeout=60) as resp:
            if resp.status != 200:
                raise SystemExit(f"upload answered {resp.status}")


def check(text, kind, observed):
    problems = []
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, typ in EXPECTED[kind].items():
        fam = families.get(name)
        if fam is None:
            problems.append(f"family {name} missing")
        elif fam.type != typ:
            problems.append(f"{name} is a {fam.type}, expected {typ}")
    for fam in families.values():
        if fam.type == "counter":
            for s in fam.samples:
                if s.name.endswith("_total") and s.value < 0:
                    problems.append(f"{s.name} negative")
        for s in fam.samples:
            if "quantile" in s.labels:
                problems.append(f"{s.name} has a quantile label (use histograms)")
            if math.isnan(s.value):
                problems.append(f"{s.name}{s.labels} is NaN")
        if fam.type != "histogram":
            continue
        # One series per label set without `le`: buckets in increasing `le` order must be
        # non-decreasing, end at +Inf, and +Inf must equal _count.
        series = {}
        for s in fam.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            entry = series.setdefault(key, {"buckets": [], "count": None, "sum": None})
            if s.name.endswith("_bucket"):
                entry["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                entry["count"] = s.value
            elif s.name.endswith("_sum"):
                entry["sum"] = s.value
        for key, e in series.items():
            where = f"{fam.name}{dict(key)}"
            buckets = sorted(e["buckets"])
            if not buckets or buckets[-1][0] != math.inf:
                problems.append(f"{where}: no +Inf bucket")
                continue
            values = [v for _, v in buckets]
            if any(b < a for a, b in zip(values, values[1:])):
                problems.append(f"{where}: buckets decrease: {buckets}")
            if e["count"] is None or e["sum"] is None:
                problems.append(f"{where}: _count or _sum missing")
            elif buckets[-1][1] != e["count"]:
                problems.append(f"{where}: +Inf bucket {buckets[-1][1]} != count {e['count']}")
    build = families.get("glimpse_build_info")
    if build is not None:
        for s in build.samples:
            if s.value != 1 or not s.labels.get("version"):
                problems.append(f"glimpse_build_info {s.labels} = {s.value}")
            if s.labels.get("component") != kind:
                problems.append(f"glimpse_build_info component {s.labels.get('component')}")
    if observed:
        for name in OBSERVED[kind]:
            fam = families.get(name)
            total = sum(s.value for s in fam.samples if s.name == name + "_count") if fam else 0
            if total <= 0:
                problems.append(f"{name}: no observations after traffic")
    return families, problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("kind", choices=sorted(EXPECTED))
    ap.add_argument("--upload")
    ap.add_argument("--ca")
    ap.add_argument("--image")
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--observed", action="store_true", help="require observations")
    args = ap.parse_args()
    if args.upload:
        upload(args.upload, args.ca, args.image, args.count)
    with urllib.request.urlopen(args.url, timeout=30) as resp:
        ctype = resp.headers.get("Content-Type", "")
        text = resp.read().decode()
    families, problems = check(text, args.kind, args.observed or bool(args.upload))
    if not ctype.startswith("text/plain"):
        problems.append(f"Content-Type {ctype}")
    if problems:
        print(f"{args.url}: {len(problems)} problem(s):", *problems, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    print(f"{args.url}: {len(families)} families parsed and checked ({args.kind})")


if __name__ == "__main__":
    main()
