"""Offline consistency checks of deploy/k8s that a schema cannot see (run by
scripts/deploy-check in its virtualenv, which has PyYAML).

Usage: deploy_check.py SECRETS_YAML   (the output of `glimpse-certs k8s`)

- every YAML file in deploy/k8s is listed by kustomization.yaml (nothing silently unused);
- every Secret a pod mounts is one `glimpse-certs k8s` makes, and every file path an
  environment variable names under a Secret mount is a key of that Secret;
- GLIMPSE_NODE_DNS names the nodes' headless Service (clusterIP: None) in the kustomization's
  namespace, on the port that Service and the node container use;
- every probe's port is a declared container port, and the terminationGracePeriodSeconds
  exceed the drain and grace settings the pods are given.
"""

import sys
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
errors = []


def fail(msg):
    errors.append(msg)


kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
listed = set(kust["resources"])
for f in sorted(K8S.glob("*.yaml")):
    if f.name != "kustomization.yaml" and f.name not in listed:
        fail(f"{f.name} is not listed in kustomization.yaml")
ns = kust["namespace"]
docs = [d for r in kust["resources"] for d in yaml.safe_load_all((K8S / r).read_text()) if d]
for d in docs:
    if d["kind"] != "Namespace" and d["metadata"].get("namespace") != ns:
        fail(f"{d['kind']}/{d['metadata']['name']} is not in namespace {ns}")

secrets = {
    d["metadata"]["name"]: d for d in yaml.safe_load_all(Path(sys.argv[1]).read_text()) if d
}
services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}

for dep in (d for d in docs if d["kind"] == "Deployment"):
    name = dep["metadata"]["name"]
    spec = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        mounts = {}
        for m in c.get("volumeMounts", []):
            v = volumes.get(m["name"])
            if v is None:
                fail(f"{name}: mount of unknown volume {m['name']}")
            elif "secret" in v:
                sname = v["secret"]["secretName"]
                if sname not in secrets:
                    fail(f"{name}: Secret {sname} is not one glimpse-certs k8s makes")
                mounts[m["mountPath"].rstrip("/")] = sname
        for key, value in env.items():
            if not value or not value.startswith("/etc/glimpse/"):
                continue
            directory, _, file = value.rpartition("/")
            sname = mounts.get(directory)
            if sname is None:
                fail(f"{name}: {key}={value} is under no Secret mount")
            elif file not in secrets.get(sname, {}).get("stringData", {}):
                fail(f"{name}: {key}={value}: Secret {sname} has no key {file}")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in c and c[probe]["httpGet"]["port"] not in ports:
                fail(f"{name}: {probe} port {c[probe]['httpGet']['port']} is not declared")
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in c:
                fail(f"{name}: no {probe}")
        waits = [float(env.get(k) or 0) for k in ("GLIMPSE_DRAIN_TIMEOUT_S",)]
        waits.append(float(env.get("GLIMPSE_SHUTDOWN_GRACE_S") or 0) + float(env.get("GLIMPSE_REQUEST_TIMEOUT_S") or 0))
        if spec.get("terminationGracePeriodSeconds", 30) <= max(waits):
            fail(f"{name}: terminationGracePeriodSeconds must exceed {max(waits)} s")
        dns = env.get("GLIMPSE_NODE_DNS")
        if dns:
            host, _, port = dns.rpartition(":")
            svc_name = host.split(".")[0]
            svc = services.get(svc_name)
            if svc is None or svc["spec"].get("clusterIP") != "None":
                fail(f"{name}: GLIMPSE_NODE_DNS {dns} does not name a headless Service")
            elif host not in (svc_name, f"{svc_name}.{ns}", f"{svc_name}.{ns}.svc", f"{svc_name}.{ns}.svc.cluster.local"):
                fail(f"{name}: GLIMPSE_NODE_DNS {dns} is not in namespace {ns}")
            elif int(port) not in [p["port"] for p in svc["spec"]["ports"]]:
                fail(f"{name}: GLIMPSE_NODE_DNS port {port} is not a port of Service {svc_name}")

for msg in errors:
    print(f"deploy-check: {msg}", file=sys.stderr)
sys.exit(1 if errors else 0)
