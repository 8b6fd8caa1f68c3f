"""Run Glimpse's image under podman exactly as deploy/k8s describes it, and classify an image.

Called by scripts/image-test (which builds the image and the virtualenv with PyYAML). The
containers' command, environment, ports, probes, volumes, user, read-only root, dropped
capabilities and memory limits are all read from the Kubernetes manifests the
kustomization lists, so the manifests and this test cannot drift apart. The only
differences are listed in TEST_OVERRIDES and printed:

- the nodes run GoogLeNet with random weights (no 50 MB weights download in CI);
- Kubernetes' pieces that podman lacks are mapped: a pod is a container named like a pod,
  the nodes' headless Service is a network alias shared by both node containers (podman's
  DNS server, aardvark-dns, answers one A record per container, like the Service's DNS),
  Secret volumes are directories filled from `glimpse-certs k8s` output (run from the image),
  emptyDir volumes are tmpfs, probes are called from the host on published ports.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"

# What the test changes from the manifests, per container name (printed when used).
TEST_OVERRIDES = {
    # The real GoogLeNet (decode, preprocessing, inference in the image), with random
    # weights instead of torchvision's downloaded file: no network in CI.
    "node": {"GLIMPSE_WEIGHTS": "random"},
    "frontend": {},
}


def log(msg: str) -> None:
    print(f"image-test: {msg}", flush=True)


class Podman:
    """podman with the options scripts/deploy-common.sh chose (passed in by the wrapper)."""

    def __init__(self, global_args: list[str], ulimits: list[str]) -> None:
        self.global_args = global_args
        self.ulimits = ulimits

    def run(self, *args: str, check: bool = True, capture: bool = True) -> str:
        cmd = ["podman", *self.global_args, *args]
        res = subprocess.run(cmd, capture_output=capture, text=True)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
        return res.stdout if capture else ""


def load_manifests() -> tuple[str, list[dict]]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for res in kust["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / res).read_text()) if d)
    return kust.get("namespace", "glimpse"), docs


def find(docs: list[dict], kind: str, name: str) -> dict:
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise SystemExit(f"image-test: no {kind} {name} in deploy/k8s")


def env_of(container: dict, pod_name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = pod_name
        else:
            raise SystemExit(f"image-test: cannot map env {e} to podman")
    return env


def port_number(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise SystemExit(f"image-test: no port named {port}")


def memory_limit(container: dict) -> str | None:
    mem = container.get("resources", {}).get("limits", {}).get("memory")
    if mem is None:
        return None
    units = {"Ki": "k", "Mi": "m", "Gi": "g"}
    for suffix, short in units.items():
        if str(mem).endswith(suffix):
            return str(mem)[: -len(suffix)] + short
    return str(mem)


def podman_args(
    deployment: dict,
    pod_name: str,
    network: str,
    aliases: list[str],
    secrets_dir: Path,
    env: dict[str, str],
    publish: list[int],
    ulimits: list[str],
) -> list[str]:
    """`podman run` arguments for the Deployment's (only) container as pod `pod_name`."""
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pod_sc = spec.get("securityContext", {})
    sc = container.get("securityContext", {})
    args = ["run", "-d", "--name", pod_name, "--hostname", pod_name, "--network", network]
    for a in aliases:
        args += ["--network-alias", a]
    args += ulimits
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if user is not None:
        args += ["--user", f"{user}:{group if group is not None else user}"]
    if pod_sc.get("fsGroup") is not None:
        args += ["--group-add", str(pod_sc["fsGroup"])]
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and not user:
        raise SystemExit("image-test: runAsNonRoot needs a numeric runAsUser")
    if sc.get("readOnlyRootFilesystem"):
        # No extra tmpfs either: only the manifest's emptyDir volumes are writable.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for cap in sc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    if pod_sc.get("seccompProfile", {}).get("type") not in (None, "RuntimeDefault"):
        raise SystemExit("image-test: only the RuntimeDefault seccomp profile maps to podman")
    mem = memory_limit(container)
    if mem:
        args += ["--memory", mem]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        v = volumes[m["name"]]
        if "secret" in v:
            src = secrets_dir / v["secret"]["secretName"]
            args += ["-v", f"{src}:{m['mountPath']}:ro"]
        elif "emptyDir" in v:
            size = memory_limit({"resources": {"limits": {"memory": v["emptyDir"].get("sizeLimit", "64Mi")}}})
            args += ["--tmpfs", f"{m['mountPath']}:rw,size={size},mode=1777"]
        else:
            raise SystemExit(f"image-test: cannot map volume {v} to podman")
    for port in publish:
        args += ["-p", f"127.0.0.1::{port}"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    return args


def materialize_secrets(yaml_text: str, dest: Path, gid: int, mode: int) -> dict:
    """Write each Secret's keys as files, as the kubelet would mount them."""
    secrets = {}
    for doc in yaml.safe_load_all(yaml_text):
        if not doc or doc.get("kind") != "Secret":
            continue
        d = dest / doc["metadata"]["name"]
        d.mkdir(parents=True)
        os.chmod(d, 0o755)
        for key, value in doc["stringData"].items():
            f = d / key
            f.write_text(value)
            os.chown(f, 0, gid)
            os.chmod(f, mode)
        secrets[doc["metadata"]["name"]] = doc
    return secrets


def host_port(pm: Podman, name: str, port: int) -> int:
    out = pm.run("port", name, f"{port}/tcp").strip().splitlines()[0]
    return int(out.rsplit(":", 1)[1])


def http_get(scheme: str, port: int, path: str, ctx: ssl.SSLContext | None) -> tuple[int, bytes]:
    if scheme == "HTTPS":
        conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=5)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_probe(pm, name, container, probe_key, ctx, timeout_s: float) -> None:
    """Call the manifest's probe until it answers 200 (or fail with the container's log)."""
    probe = container[probe_key]["httpGet"]
    scheme = probe.get("scheme", "HTTP")
    port = host_port(pm, name, port_number(container, probe["port"]))
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            status, body = http_get(scheme, port, probe["path"], ctx)
            if status == 200:
                log(f"{name}: {probe_key} {scheme} {probe['path']} -> 200")
                return
            last = f"{status} {body[:200]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = repr(e)
        state = pm.run("inspect", "-f", "{{.State.Status}}", name, check=False).strip()
        if state not in ("running", "created", "configured"):
            break
        time.sleep(0.3)
    print(pm.run("logs", name, check=False), file=sys.stderr)
    raise SystemExit(f"image-test: {name}: {probe_key} {probe['path']} never answered 200 (last: {last})")


def multipart(files: list[Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for f in files:
        body += (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{f.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + f.read_bytes() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--podman-global", default="", help="podman's global options")
    ap.add_argument("--ulimits", default="")
    ap.add_argument("--sample", type=Path, required=True, help="an image file to classify")
    ap.add_argument("--keep", action="store_true", help="leave the containers running")
    opts = ap.parse_args()
    pm = Podman(opts.podman_global.split(), opts.ulimits.split())

    namespace, docs = load_manifests()
    node_dep = find(docs, "Deployment", "glimpse-node")
    node_svc = find(docs, "Service", "glimpse-node")
    fe_dep = find(docs, "Deployment", "glimpse")
    if node_svc["spec"].get("clusterIP") != "None":
        raise SystemExit("image-test: the nodes' Service must be headless (clusterIP: None)")
    (node_c,) = node_dep["spec"]["template"]["spec"]["containers"]
    (fe_c,) = fe_dep["spec"]["template"]["spec"]["containers"]
    svc = node_svc["metadata"]["name"]
    # Every form of the headless Service's name a pod may resolve.
    aliases = [svc, f"{svc}.{namespace}", f"{svc}.{namespace}.svc", f"{svc}.{namespace}.svc.cluster.local"]

    run_id = uuid.uuid4().hex[:8]
    network = f"glimpse-test-{run_id}"
    work = Path(tempfile.mkdtemp(prefix="glimpse-image-test-"))
    os.chmod(work, 0o755)
    names: list[str] = []
    try:
        # Certificates: `glimpse-certs k8s`, run from the image under test.
        secrets_yaml = pm.run("run", "--rm", *pm.ulimits, "--read-only", opts.image,
                              "glimpse-certs", "k8s", "--namespace", namespace, "--node-service", svc)
        pod_sc = node_dep["spec"]["template"]["spec"]["securityContext"]
        mode = node_dep["spec"]["template"]["spec"]["volumes"][0]["secret"].get("defaultMode", 0o644)
        secrets = materialize_secrets(secrets_yaml, work / "secrets", pod_sc["fsGroup"], mode)
        ca_file = work / "secrets" / "glimpse-ca" / "ca.crt"
        ctx = ssl.create_default_context(cafile=str(ca_file))
        log(f"secrets from glimpse-certs k8s: {', '.join(sorted(secrets))}")

        pm.run("network", "create", network)
        replicas = int(node_dep["spec"]["replicas"])
        node_probe_ports = [port_number(node_c, "admin")]
        nodes = [f"glimpse-node-{i}" for i in range(replicas)]
        for pod in nodes:
            env = env_of(node_c, pod) | TEST_OVERRIDES["node"]
            args = podman_args(node_dep, pod, network, aliases, work / "secrets", env,
                               node_probe_ports, pm.ulimits)
            pm.run(*args, opts.image, *node_c["command"], *node_c.get("args", []))
            names.append(pod)
        log(f"{replicas} node containers behind alias {aliases[-1]} (overrides: {TEST_OVERRIDES['node']})")

        fe_env = env_of(fe_c, "glimpse-0") | TEST_OVERRIDES["frontend"]
        # GLIMPSE_NODE_DNS as in the manifest: podman's DNS answers the alias with both nodes.
        fe_ports = [port_number(fe_c, "https")]
        args = podman_args(fe_dep, "glimpse-0", network, [], work / "secrets", fe_env, fe_ports, pm.ulimits)
        pm.run(*args, opts.image, *fe_c["command"], *fe_c.get("args", []))
        names.append("glimpse-0")

        # The manifests' probes, by path and port.
        called = 0
        for pod in nodes:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in node_c:
                    wait_probe(pm, pod, node_c, probe, None, 120)
                    called += 1
        if called < 2 * len(nodes):
            raise SystemExit(f"the node manifest has {called // len(nodes)} probe(s), want liveness and readiness")
        wait_probe(pm, "glimpse-0", fe_c, "livenessProbe", ctx, 60)
        wait_probe(pm, "glimpse-0", fe_c, "readinessProbe", ctx, 120)

        # Every node behind the name should be ready at the front-end.
        https = host_port(pm, "glimpse-0", fe_ports[0])

        def wait_ready_nodes(want: int) -> None:
            deadline = time.monotonic() + 60
            while True:
                status, body = http_get("HTTPS", https, "/api/v1/nodes", ctx)
                listed = json.loads(body) if status == 200 else None
                node_list = listed.get("nodes", listed) if isinstance(listed, dict) else listed
                ready = [n for n in node_list or [] if n.get("state") == "ready"]
                if len(ready) == want:
                    log(f"front-end sees {want} ready nodes: {sorted(n.get('addr') for n in ready)}")
                    return
                if time.monotonic() > deadline:
                    raise SystemExit(f"image-test: want {want} ready nodes, /api/v1/nodes says {body[:500]!r}")
                time.sleep(0.5)

        wait_ready_nodes(replicas)

        # Classify a real image through the HTTPS API, verified against the cluster CA.
        samples = [opts.sample] * 4
        body, ctype = multipart(samples)
        conn = http.client.HTTPSConnection("localhost", https, context=ctx, timeout=60)
        conn.request("POST", "/api/v1/classify?wait=true", body=body, headers={"Content-Type": ctype})
        r = conn.getresponse()
        answer = r.read()
        conn.close()
        if r.status != 200:
            raise SystemExit(f"image-test: classify answered {r.status}: {answer[:500]!r}")
        results = json.loads(answer)["results"]
        if len(results) != len(samples):
            raise SystemExit(f"image-test: {len(samples)} images, {len(results)} results")
        for res in results:
            if res.get("status") != "ok" or len(res.get("top", [])) != 5 or not res.get("node"):
                raise SystemExit(f"image-test: bad result {res}")
        # The same image gives the same answer whichever node ran it (same seeded weights).
        tops = {r["top"][0]["index"] for r in results}
        if len(tops) != 1:
            raise SystemExit(f"image-test: one image, different top-1 answers: {results}")
        top = results[0]["top"][0]
        log(f"classified {opts.sample.name} x{len(samples)}: top-1 {top['label']} "
            f"({top['probability']:.3f}), node {results[0]['node']}, warning {results[0].get('warning')!r}")

        # Scale out and back in, as `kubectl scale` would: one more container behind the name
        # joins without a restart of the front-end; when it stops, it leaves.
        extra = f"glimpse-node-{replicas}"
        env = env_of(node_c, extra) | TEST_OVERRIDES["node"]
        pm.run(*podman_args(node_dep, extra, network, aliases, work / "secrets", env, [], pm.ulimits),
               opts.image, *node_c["command"], *node_c.get("args", []))
        names.append(extra)
        wait_ready_nodes(replicas + 1)
        pm.run("stop", "-t", str(node_dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]), extra)
        wait_ready_nodes(replicas)

        # SIGTERM as the kubelet sends it. With a shutdown grace (GLIMPSE_SHUTDOWN_GRACE_S),
        # the readiness probe must fail first while the process still serves, so the
        # Service stops routing to it; then it must exit within terminationGracePeriodSeconds.
        grace = int(fe_dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
        t0 = time.monotonic()
        pm.run("kill", "--signal", "TERM", "glimpse-0")
        ready_path = fe_c["readinessProbe"]["httpGet"]["path"]
        live_path = fe_c["livenessProbe"]["httpGet"]["path"]
        while True:
            status, _ = http_get("HTTPS", https, ready_path, ctx)
            if status == 503:
                break
            if time.monotonic() - t0 > 10:
                raise SystemExit(f"image-test: {ready_path} still {status} 10 s after SIGTERM")
            time.sleep(0.1)
        live, _ = http_get("HTTPS", https, live_path, ctx)
        log(f"after SIGTERM: {ready_path} 503, {live_path} {live} (still serving)")
        # Then it exits by itself (no second signal) before the kubelet would kill it.
        try:
            subprocess.run(["podman", *pm.global_args, "wait", "glimpse-0"],
                           capture_output=True, timeout=grace, check=True)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"image-test: front-end still running {grace} s after SIGTERM")
        pm.run("stop", "-t", str(grace), "glimpse-0")  # no-op when it has exited
        code = pm.run("inspect", "-f", "{{.State.ExitCode}}", "glimpse-0").strip()
        log(f"front-end stopped by SIGTERM in {time.monotonic() - t0:.1f} s (exit {code}, grace {grace} s)")
        if code != "0":
            print(pm.run("logs", "glimpse-0", check=False), file=sys.stderr)
            raise SystemExit(f"image-test: front-end exit code {code} after SIGTERM")
        log("PASS")
    finally:
        if not opts.keep:
            for n in names:
                pm.run("rm", "-f", "-t", "0", n, check=False)
            pm.run("network", "rm", "-f", network, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
