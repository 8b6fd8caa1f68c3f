"""HTTP/3 from an outside client (aioquic, from PyPI) against a running Glimpse.

Glimpse's own HTTP/3 tests (site/tests/h3.rs) use the `h3` crate on quinn, the stack the
server itself is built on, so a misreading of RFC 9114 shared by both would pass them. This
script talks to a real `glimpse` with a client nobody here wrote, the way an outside user
finds and uses it:

1. discovery: one plain HTTPS request (Python's ssl + http.client) to --url; its `Alt-Svc`
   must advertise `h3=":PORT"; ma=86400`, and every HTTP/3 request below goes to THAT port;
2. the page: over HTTP/3 (ALPN h3, the server certificate verified against --ca for the
   URL's host), GET / is 200 with the HTML upload page and the same Content-Security-Policy
   as over HTTPS;
3. one upload: POST /api/v1/classify?wait=true with a raw JPEG body is 200 with one result,
   status "ok", five labels best first, of this image's size;
4. twenty uploads on ONE QUIC connection: twenty request streams opened before any answer is
   read, each answered 200 with five labels and its own image's size (each image differs in
   length); the server's /metrics, read over the same connection, counts exactly twenty more
   h3 classifications and no connection accepted meanwhile;
5. KServe v2: POST /v2/models/googlenet/infer with a base64 BYTES input in JSON is 200 with a
   [1, 5] `labels` output equal to the labels of check 3 for the same image;
6. (--mode keyed, against `glimpse --api-keys FILE`) the page needs no key, but an upload or
   an inference without `Authorization`, or with a wrong key, is 401 with
   `WWW-Authenticate: Bearer`; with `Authorization: Bearer KEY` both are 200 with five labels.

Started by scripts/h3-client-check, which makes the certificates and runs `glimpse`. Prints a
line per passed check, and on the first failure says what was wrong and exits 1; --timeout
bounds the whole run, so a hang fails instead of blocking CI.
"""

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import os
import re
import signal
import ssl
import sys
import time
import urllib.parse
from dataclasses import dataclass, field

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset

MODEL = "googlenet"
CLASSIFY = "/api/v1/classify?wait=true"
INFER = f"/v2/models/{MODEL}/infer"
CONCURRENT = 20
REQUEST_TIMEOUT_S = 30.0
HANDSHAKE_TIMEOUT_S = 10.0
# Server-side evidence for check 4 (the series site/tests/h3.rs reads too).
H3_UPLOADS = 'glimpse_http_request_duration_seconds_count{route="/api/v1/classify",code="200",protocol="h3"}'
ACCEPTED = 'glimpse_connection_events_total{event="accepted"}'


class CheckFailed(Exception):
    pass


def check(cond: bool, what: str, detail: str = "") -> None:
    """Stop the run with `what` (and what was seen instead) unless `cond` holds."""
    if not cond:
        raise CheckFailed(f"{what}{' — got: ' + detail if detail else ''}")


def passed(number: str, summary: str) -> None:
    print(f"ok {number}: {summary}", flush=True)


# --- a small HTTP/3 client on aioquic ------------------------------------------------------


@dataclass
class Response:
    stream_id: int
    status: int = 0
    headers: dict = field(default_factory=dict)
    body: bytes = b""

    def text(self, limit: int = 400) -> str:
        return self.body[:limit].decode("utf-8", "replace")

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise CheckFailed(f"stream {self.stream_id}: the body is not JSON ({e}): {self.text()!r}")

    def describe(self) -> str:
        return f"stream {self.stream_id}: {self.status} {self.headers} {self.text()!r}"


class H3Client(QuicConnectionProtocol):
    """One QUIC connection carrying HTTP/3 requests, each on its own request stream."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.authority = b""
        self.stream_ids: list = []
        self._pending: dict = {}

    def start(self, method: str, path: str, headers: list = (), body: bytes = b"") -> asyncio.Future:
        """Open a request stream and send the whole request; the future gets the Response."""
        stream_id = self._quic.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", self.authority),
            (b":path", path.encode()),
            (b"user-agent", b"glimpse-h3client-check (aioquic)"),
        ] + [(k.lower().encode(), v.encode()) for k, v in headers]
        if body:
            fields.append((b"content-length", str(len(body)).encode()))
        self.h3.send_headers(stream_id, fields, end_stream=not body)
        if body:
            self.h3.send_data(stream_id, body, end_stream=True)
        future = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = (future, Response(stream_id))
        self.stream_ids.append(stream_id)
        self.transmit()
        return future

    async def request(self, method: str, path: str, headers: list = (), body: bytes = b"") -> Response:
        try:
            return await asyncio.wait_for(self.start(method, path, headers, body), REQUEST_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise CheckFailed(f"{method} {path}: no answer in {REQUEST_TIMEOUT_S:g} s") from None

    def abandon(self) -> None:
        """Forget the requests still open (the run failed elsewhere): no noise as they close."""
        for future, _ in self._pending.values():
            future.cancel()
        self._pending.clear()

    def open_requests(self) -> int:
        return len(self._pending)

    def alpn(self):
        return self._quic.tls.alpn_negotiated

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self._fail_all(f"the connection closed: error {event.error_code:#x} {event.reason_phrase!r}")
        elif isinstance(event, StreamReset) and event.stream_id in self._pending:
            self._fail(event.stream_id, f"stream {event.stream_id} reset by the server: error {event.error_code:#x}")
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        entry = self._pending.get(getattr(event, "stream_id", None))
        if entry is None:
            return
        future, response = entry
        if isinstance(event, HeadersReceived):
            for k, v in event.headers:
                if k == b":status":
                    response.status = int(v)
                else:
                    response.headers[k.decode()] = v.decode()
        elif isinstance(event, DataReceived):
            response.body += event.data
        if event.stream_ended:
            del self._pending[event.stream_id]
            if not future.done():
                future.set_result(response)

    def _fail(self, stream_id: int, why: str) -> None:
        future, _ = self._pending.pop(stream_id)
        if not future.done():
            future.set_exception(CheckFailed(why))

    def _fail_all(self, why: str) -> None:
        for stream_id in list(self._pending):
            self._fail(stream_id, why)


def h3_configuration(ca: str, server_name: str) -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=server_name,
                               idle_timeout=REQUEST_TIMEOUT_S)
    config.load_verify_locations(cafile=ca)  # verify_mode stays CERT_REQUIRED
    return config


@contextlib.asynccontextmanager
async def h3_connect(host: str, port: int, ca: str, server_name: str):
    """aioquic's connect(), with a handshake failure said plainly instead of a bare ConnectionError."""
    try:
        connection = connect(host, port, configuration=h3_configuration(ca, server_name), create_protocol=H3Client)
        client = await asyncio.wait_for(connection.__aenter__(), HANDSHAKE_TIMEOUT_S)
    except (ConnectionError, asyncio.TimeoutError) as e:
        raise CheckFailed(f"no QUIC connection to {host}:{port} (UDP) for {server_name!r} with ALPN h3: "
                          f"{type(e).__name__}{': ' + str(e) if str(e) else ''} (aioquic logs the reason above, if "
                          "any: the certificate, ALPN; none: nothing answers on that port)") from None
    try:
        yield client
    finally:
        client.abandon()
        await connection.__aexit__(None, None, None)


# --- the checks ----------------------------------------------------------------------------


def https_get(host: str, port: int, ca: str, path: str) -> http.client.HTTPResponse:
    """One GET over HTTPS (Python's own ssl and http.client), the body read."""
    conn = http.client.HTTPSConnection(host, port, context=ssl.create_default_context(cafile=ca),
                                       timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response
    finally:
        conn.close()


def wait_ready(host: str, port: int, ca: str) -> None:
    """Until /readyz says the local workers are connected (they start with the process)."""
    for _ in range(300):
        if https_get(host, port, ca, "/readyz").status == 200:
            return
        time.sleep(0.1)
    raise CheckFailed("HTTPS /readyz is not 200 after 30 s")


def discover(host: str, port: int, ca: str) -> tuple:
    """Check 1: GET / over HTTPS; the h3 port its Alt-Svc advertises, and the page's CSP."""
    response = https_get(host, port, ca, "/")
    check(response.status == 200, "HTTPS GET / is 200", str(response.status))
    alt_svc = response.getheader("Alt-Svc")
    check(alt_svc is not None, "HTTPS GET / has an Alt-Svc header", str(response.getheaders()))
    match = re.fullmatch(r'h3=":(\d+)"; ma=86400', alt_svc)
    check(match is not None, 'Alt-Svc is h3=":PORT"; ma=86400', repr(alt_svc))
    h3_port = int(match.group(1))
    check(0 < h3_port < 65536, "Alt-Svc names a valid port", str(h3_port))
    passed("1 discovery", f"HTTPS GET / 200 with Alt-Svc {alt_svc!r}: HTTP/3 goes to UDP port {h3_port}")
    return h3_port, response.getheader("Content-Security-Policy")


async def check_page(client: H3Client, https_csp, number: str = "2 page") -> None:
    """Check 2: the page over HTTP/3, hardened as over HTTPS."""
    page = await client.request("GET", "/")
    check(page.status == 200, "h3 GET / is 200", page.describe())
    check(page.headers.get("content-type", "").startswith("text/html"), "h3 GET / is text/html", page.describe())
    check("<html" in page.text(100_000) and "Glimpse" in page.text(100_000), "h3 GET / is the upload page",
          page.describe())
    if https_csp is not None:
        check(page.headers.get("content-security-policy") == https_csp,
              "h3 GET / has the same Content-Security-Policy as HTTPS", page.describe())
    passed(number, f"h3 GET / 200 text/html, the upload page ({len(page.body)} bytes, stream {page.stream_id})")


def five_labels(answer: Response, want_bytes: int, what: str) -> list:
    """The one result of a classification: ok, five labels best first, of this image."""
    check(answer.status == 200, f"{what}: 200", answer.describe())
    results = answer.json().get("results")
    check(isinstance(results, list) and len(results) == 1, f"{what}: one result", answer.text())
    result = results[0]
    check(result.get("status") == "ok", f"{what}: status ok", json.dumps(result))
    top = result.get("top") or []
    labels = [t.get("label") for t in top]
    check(len(top) == 5 and all(isinstance(x, str) and x for x in labels), f"{what}: five labels", json.dumps(result))
    probabilities = [t.get("probability") for t in top]
    check(all(a >= b for a, b in zip(probabilities, probabilities[1:])), f"{what}: labels best first",
          str(probabilities))
    check(result.get("bytes") == want_bytes, f"{what}: the result is of this request's image ({want_bytes} bytes)",
          f"{result.get('bytes')} bytes")
    return labels


async def classify(client: H3Client, image: bytes, what: str, headers: list = ()) -> list:
    answer = await client.request("POST", CLASSIFY, [("content-type", "image/jpeg"), *headers], image)
    return five_labels(answer, len(image), what)


async def metrics(client: H3Client) -> dict:
    """The series check 4 reads from /metrics (public without --api-keys), over h3."""
    answer = await client.request("GET", "/metrics")
    check(answer.status == 200, "h3 GET /metrics is 200", answer.describe())
    values = {H3_UPLOADS: 0.0}  # absent until the first h3 upload
    for line in answer.body.decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name in (H3_UPLOADS, ACCEPTED):
            values[name] = float(value)
    check(ACCEPTED in values, f"/metrics has {ACCEPTED}", answer.text())
    return values


async def check_twenty_on_one_connection(client: H3Client, image: bytes) -> None:
    """Check 4: twenty request streams open at once on one connection, and the server agrees."""
    before = await metrics(client)
    images = [image + b"\0" * i for i in range(CONCURRENT)]  # each its own size, so answers can't swap
    first = len(client.stream_ids)
    futures = [client.start("POST", CLASSIFY, [("content-type", "image/jpeg")], body) for body in images]
    ids = client.stream_ids[first:]
    check(len(set(ids)) == CONCURRENT and client.open_requests() == CONCURRENT,
          f"{CONCURRENT} request streams open at once", f"ids {ids}, {client.open_requests()} open")
    check(all(i % 4 == 0 for i in ids), "all are client-initiated bidirectional streams", str(ids))
    try:
        answers = await asyncio.wait_for(asyncio.gather(*futures), 2 * REQUEST_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise CheckFailed(f"{client.open_requests()} of {CONCURRENT} concurrent uploads unanswered "
                          f"after {2 * REQUEST_TIMEOUT_S:g} s") from None
    for i, answer in enumerate(answers):
        five_labels(answer, len(images[i]), f"concurrent upload {i + 1}/{CONCURRENT} (stream {answer.stream_id})")
    after = await metrics(client)
    uploads = after[H3_UPLOADS] - before[H3_UPLOADS]
    accepted = after[ACCEPTED] - before[ACCEPTED]
    check(uploads == CONCURRENT, f"the server counts {CONCURRENT} more h3 classifications", f"{uploads:g}")
    check(accepted == 0, "the server accepted no connection meanwhile", f"{accepted:g} accepted")
    passed("4 twenty on one connection",
           f"{CONCURRENT} streams (ids {ids[0]}..{ids[-1]}) open at once, all 200 with five labels of their own "
           f"image; server: +{uploads:g} h3 uploads, +{accepted:g} connections")


def infer_body(image: bytes, request_id: str) -> bytes:
    return json.dumps({
        "id": request_id,
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                    "data": [base64.b64encode(image).decode("ascii")]}],
        "outputs": [{"name": "labels"}, {"name": "probabilities"}],
    }).encode()


async def infer(client: H3Client, image: bytes, what: str, headers: list = ()) -> list:
    """A KServe v2 inference in JSON: base64 BYTES in, labels and probabilities out."""
    answer = await client.request("POST", INFER, [("content-type", "application/json"), *headers],
                                  infer_body(image, "h3-check"))
    check(answer.status == 200, f"{what}: 200", answer.describe())
    body = answer.json()
    check(body.get("id") == "h3-check" and body.get("model_name") == MODEL,
          f"{what}: the answer names this request and {MODEL}", answer.text())
    outputs = {o.get("name"): o for o in body.get("outputs", [])}
    labels = outputs.get("labels", {})
    probabilities = outputs.get("probabilities", {})
    check(labels.get("shape") == [1, 5] and len(labels.get("data", [])) == 5,
          f"{what}: a labels output of shape [1, 5]", answer.text())
    check(probabilities.get("datatype") == "FP32" and len(probabilities.get("data", [])) == 5,
          f"{what}: five FP32 probabilities", answer.text())
    return labels["data"]


async def refused(client: H3Client, what: str, path: str, headers: list, body: bytes) -> None:
    answer = await client.request("POST", path, headers, body)
    check(answer.status == 401, f"{what} is 401", answer.describe())
    check(answer.headers.get("www-authenticate", "").startswith("Bearer"),
          f"{what}: WWW-Authenticate: Bearer", answer.describe())


async def check_keys(client: H3Client, image: bytes, key: str, https_csp) -> None:
    """Check 6: with --api-keys, /api and /v2 need the key over HTTP/3 too; the page does not."""
    await check_page(client, https_csp, "6a the page without a key")
    jpeg = [("content-type", "image/jpeg")]
    as_json = [("content-type", "application/json")]
    wrong = [("authorization", "Bearer glk_" + "A" * 43)]
    await refused(client, "an upload without a key", CLASSIFY, jpeg, image)
    await refused(client, "an upload with a wrong key", CLASSIFY, jpeg + wrong, image)
    await refused(client, "a v2 inference without a key", INFER, as_json, infer_body(image, "no-key"))
    passed("6b refused", "upload without a key, upload with a wrong key, v2 infer without a key: each 401 "
                         "with WWW-Authenticate: Bearer")
    bearer = [("authorization", f"Bearer {key}")]
    labels = await classify(client, image, "an upload with the key", bearer)
    v2_labels = await infer(client, image, "a v2 inference with the key", bearer)
    check(v2_labels == labels, "the v2 labels equal the upload's", f"{v2_labels} vs {labels}")
    passed("6c accepted", f"with Authorization: Bearer KEY, upload 200 and v2 infer 200, five labels: {labels}")


def quiet_abandoned(loop, context) -> None:
    """aioquic's handshake future, abandoned on a timeout, is no news: the failure is reported."""
    if isinstance(context.get("exception"), ConnectionError):
        return
    loop.default_exception_handler(context)


async def run(args, host: str, h3_port: int, https_csp) -> None:
    asyncio.get_running_loop().set_exception_handler(quiet_abandoned)
    server_name = args.server_name or host
    with open(args.image, "rb") as f:
        image = f.read()
    check(image[:3] == b"\xff\xd8\xff", f"{args.image} is a JPEG", repr(image[:3]))
    # One connect(): everything below shares this QUIC connection.
    async with h3_connect(host, h3_port, args.ca, server_name) as client:
        client.authority = f"{host}:{h3_port}".encode()
        check(client.alpn() == "h3", "QUIC negotiates ALPN h3", repr(client.alpn()))
        print(f"   QUIC to {host}:{h3_port}: ALPN {client.alpn()!r}, certificate verified for {server_name!r}")
        if args.mode == "keyed":
            await check_keys(client, image, args.api_key, https_csp)
            return
        await check_page(client, https_csp)
        labels = await classify(client, image, "an upload")
        passed("3 one upload", f"POST {CLASSIFY} image/jpeg ({len(image)} bytes) 200, status ok, five labels: {labels}")
        await check_twenty_on_one_connection(client, image)
        v2_labels = await infer(client, image, "a v2 inference")
        check(v2_labels == labels, "the v2 labels equal the upload's for the same image", f"{v2_labels} vs {labels}")
        passed("5 KServe v2", f"POST {INFER} (base64 BYTES in JSON) 200, labels [1, 5] equal to check 3's")
    ids = client.stream_ids
    check(len(ids) == len(set(ids)), "each request on its own stream", str(ids))
    print(f"   one connection carried all {len(ids)} requests, on streams {ids[0]}..{ids[-1]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="HTTPS base URL, e.g. https://127.0.0.1:8443")
    ap.add_argument("--ca", required=True, help="PEM of the CA that signed the server certificate")
    ap.add_argument("--image", required=True, help="a JPEG to classify")
    ap.add_argument("--mode", choices=["open", "keyed"], default="open",
                    help="open: checks 1-5, against a glimpse without keys; keyed: checks 1 and 6, "
                         "against one with --api-keys")
    ap.add_argument("--api-key", help="the key, for --mode keyed (from `glimpse keys new`)")
    ap.add_argument("--server-name", help="name to verify the certificate for (default: the URL's host)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole run (default 120)")
    args = ap.parse_args()
    if args.mode == "keyed" and not args.api_key:
        ap.error("--mode keyed needs --api-key")
    url = urllib.parse.urlsplit(args.url)
    if url.scheme != "https" or not url.hostname or not url.port:
        ap.error(f"--url must be https://HOST:PORT, not {args.url!r}")

    def overall_timeout(*_):
        # Exit at once: unwinding through asyncio and aioquic's close could hang in turn.
        print(f"FAIL: the whole run took more than {args.timeout:g} s (a hang?)", file=sys.stderr, flush=True)
        os._exit(1)

    signal.signal(signal.SIGALRM, overall_timeout)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    try:
        wait_ready(url.hostname, url.port, args.ca)
        h3_port, https_csp = discover(url.hostname, url.port, args.ca)
        asyncio.run(run(args, url.hostname, h3_port, https_csp))
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
    except (OSError, ssl.SSLError, ConnectionError, http.client.HTTPException) as e:
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"h3 client ({args.mode}): every check passed")


if __name__ == "__main__":
    main()
