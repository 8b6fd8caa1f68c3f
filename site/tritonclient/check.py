"""Triton's own Python client (tritonclient, from PyPI) against a running Glimpse.

Started by scripts/tritonclient-check, which makes the certificates, starts `glimpse` with
synthetic local workers and passes their addresses here. Every call is one a Triton user
makes unchanged; each answer is checked against what the model must say, not only that the
call returned. Exits non-zero on the first wrong answer.
"""

import argparse
import base64
import struct
import sys
import time
import zlib

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

MODEL = "googlenet"


def png(seed: int, size: int = 32) -> bytes:
    """A small, valid RGB PNG whose pixels depend on `seed`."""
    rows = b"".join(
        b"\x00" + bytes(((x * 7 + y * 3 + seed * 41) % 256) for x in range(size * 3))
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def check(cond: bool, what: str) -> None:
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def images_tensor(images: list) -> np.ndarray:
    return np.array(images, dtype=np.object_)


def text(entry) -> str:
    """A BYTES element as text: binary outputs decode to bytes, JSON ones to str."""
    return entry.decode() if isinstance(entry, bytes) else str(entry)


def parse_class(entry) -> tuple:
    text_form = text(entry)
    score, index, label = text_form.split(":", 2)
    return float(score), int(index), label


def check_http(url: str, ca: str) -> list:
    client = httpclient.InferenceServerClient(url, ssl=True, ssl_options={"ca_certs": ca})
    check(client.is_server_live(), "http: server live")
    for _ in range(300):  # local workers connect within seconds; CI machines are slow
        if client.is_server_ready():
            break
        time.sleep(0.1)
    check(client.is_server_ready(), "http: server ready")
    check(client.is_model_ready(MODEL), "http: model ready")
    check(client.is_model_ready(MODEL, "1"), "http: model version 1 ready")
    meta = client.get_model_metadata(MODEL)
    check(meta["name"] == MODEL and meta["inputs"][0]["datatype"] == "BYTES", "http: model metadata")
    config = client.get_model_config(MODEL)
    check(config["max_batch_size"] >= 2 and config["input"][0]["name"] == "image", "http: model config")

    before = client.get_inference_statistics(MODEL)["model_stats"][0]["inference_count"]

    # The client's defaults: binary tensor data for the input and both outputs.
    batch = [png(1), png(2), png(3)]
    inp = httpclient.InferInput("image", [len(batch)], "BYTES")
    inp.set_data_from_numpy(images_tensor(batch))
    outputs = [httpclient.InferRequestedOutput("labels"), httpclient.InferRequestedOutput("probabilities")]
    result = client.infer(MODEL, [inp], outputs=outputs, request_id="tc-1")
    labels = result.as_numpy("labels")
    probs = result.as_numpy("probabilities")
    check(labels.shape == (3, 5) and probs.shape == (3, 5), f"http binary: batch of 3 → {labels.shape}")
    check(probs.dtype == np.float32 and bool(np.all(np.diff(probs, axis=1) <= 0)), "http binary: probabilities best first")
    check(result.get_response()["id"] == "tc-1", "http binary: request id echoed")

    # Binary data off: the image goes as base64 text in JSON, the outputs come back as JSON.
    inp = httpclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(images_tensor([base64.b64encode(batch[0])]), binary_data=False)
    out = httpclient.InferRequestedOutput("labels", binary_data=False)
    result = client.infer(MODEL, [inp], outputs=[out])
    text_labels = result.as_numpy("labels")
    check(text_labels.shape == (1, 5), "http json: one image")
    check([text(x) for x in text_labels[0]] == [text(x) for x in labels[0]], "http json: same labels as binary for the same image")

    # The classification extension.
    inp = httpclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(images_tensor([batch[1]]))
    out = httpclient.InferRequestedOutput("probabilities", class_count=3)
    result = client.infer(MODEL, [inp], outputs=[out])
    classes = [parse_class(e) for e in result.as_numpy("probabilities").reshape(-1)]
    check(len(classes) == 3, "http classification: 3 classes")
    check(classes[0][2] == text(labels[1][0]), "http classification: best label matches")
    check(all(a[0] >= b[0] for a, b in zip(classes, classes[1:])), "http classification: scores descend")

    after = client.get_inference_statistics(MODEL)["model_stats"][0]
    check(after["inference_count"] == before + 5, f"http statistics: {before} → {after['inference_count']} after 5 images")
    check(int(after["inference_stats"]["compute_infer"]["ns"]) > 0, "http statistics: infer time measured")

    # A bad image is a clear error, and the server goes on.
    inp = httpclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(images_tensor([b"not an image"]))
    try:
        client.infer(MODEL, [inp])
        check(False, "http: a non-image is refused")
    except InferenceServerException as e:
        check("image[0]" in str(e), f"http: a non-image is refused ({e})")
    check(client.is_server_ready(), "http: still ready after the error")
    return [text(x) for x in labels[0]]


def check_grpc(url: str, ca: str, expected_first: list) -> None:
    client = grpcclient.InferenceServerClient(url, ssl=True, root_certificates=ca)
    check(client.is_server_live() and client.is_server_ready(), "grpc: server live and ready")
    check(client.is_model_ready(MODEL), "grpc: model ready")
    meta = client.get_model_metadata(MODEL, as_json=True)
    check(meta["name"] == MODEL, "grpc: model metadata")
    config = client.get_model_config(MODEL, as_json=True)
    check(int(config["config"]["max_batch_size"]) >= 2, "grpc: model config")
    before = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0].get("inference_count", "0")

    batch = [png(1), png(4)]
    inp = grpcclient.InferInput("image", [len(batch)], "BYTES")
    inp.set_data_from_numpy(images_tensor(batch))
    outputs = [grpcclient.InferRequestedOutput("labels"), grpcclient.InferRequestedOutput("probabilities")]
    result = client.infer(MODEL, [inp], outputs=outputs)
    labels = result.as_numpy("labels")
    check(labels.shape == (2, 5), f"grpc: batch of 2 → {labels.shape}")
    check([text(x) for x in labels[0]] == expected_first, "grpc: same labels as http for the same image")

    out = grpcclient.InferRequestedOutput("labels", class_count=2)
    result = client.infer(MODEL, [inp], outputs=[out])
    classes = [parse_class(e) for e in result.as_numpy("labels").reshape(-1)]
    check(len(classes) == 4, "grpc classification: 2 classes per image")

    after = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]["inference_count"]
    check(int(after) == int(before) + 4, f"grpc statistics: {before} → {after} after 4 images")

    inp = grpcclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(images_tensor([b"not an image"]))
    try:
        client.infer(MODEL, [inp])
        check(False, "grpc: a non-image is refused")
    except InferenceServerException as e:
        check(e.status() == "StatusCode.INVALID_ARGUMENT", f"grpc: a non-image is INVALID_ARGUMENT ({e.status()})")
    try:
        client.get_model_metadata("resnet")
        check(False, "grpc: unknown model")
    except InferenceServerException as e:
        check(e.status() == "StatusCode.NOT_FOUND", f"grpc: unknown model is NOT_FOUND ({e.status()})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--http", required=True, help="HOST:PORT of the HTTPS listener")
    ap.add_argument("--grpc", required=True, help="HOST:PORT of the gRPC listener")
    ap.add_argument("--ca", required=True, help="PEM of the CA that signed the server certificate")
    args = ap.parse_args()
    first = check_http(args.http, args.ca)
    check_grpc(args.grpc, args.ca, first)
    print("tritonclient: every check passed")


if __name__ == "__main__":
    main()
