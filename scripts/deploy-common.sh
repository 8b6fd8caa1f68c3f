# shellcheck shell=bash
# Shared by scripts/image-build and scripts/image-test (sourced, not run): one podman
# configuration that works on these Debian VMs and on an ordinary host.
#
# - Runtime: runc when installed. Debian bookworm's crun 1.8 refuses cgroup "hybrid" hosts
#   (cgroup v1 controllers plus a v2 hierarchy that still lists a controller), which is what
#   these VMs have ("cgroups in hybrid mode not supported"); runc handles them.
#   Override with GLIMPSE_PODMAN_RUNTIME=crun.
# - cgroupfs and file events: there is no systemd session or journald here.
# - Explicit rlimits: podman's defaults (nofile/nproc = 1048576/4194304) exceed this VM's
#   hard limits and the runtime cannot raise them (EPERM). 16384 open files covers the
#   front-end's connection caps; nproc bounds threads.

podman_runtime=${GLIMPSE_PODMAN_RUNTIME:-}
if [ -z "$podman_runtime" ] && command -v runc >/dev/null 2>&1; then podman_runtime=runc; fi

# podman with the global options above.
pm() {
  local args=(--cgroup-manager cgroupfs --events-backend file)
  if [ -n "$podman_runtime" ]; then args+=(--runtime "$podman_runtime"); fi
  podman "${args[@]}" "$@"
}

# Resource limits for `pm run` and `pm build`.
# shellcheck disable=SC2034 # used by the scripts that source this file
podman_ulimits=(--ulimit nofile=16384:16384 --ulimit nproc=8192:8192)

# cargo's target directory (CARGO_TARGET_DIR or the workspace's target/).
cargo_target_dir() {
  cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}

# A virtualenv with the offline Kubernetes validator (its JSON schemas are bundled), yamllint
# and PyYAML (which image-test uses to read the manifests), kept in TARGET_DIR/deploy-venv.
# Prints the venv's directory. Needs PyPI the first time.
deploy_venv() {
  local venv
  venv="$(cargo_target_dir)/deploy-venv"
  if [ ! -x "$venv/bin/python" ] \
    || ! "$venv/bin/python" -c 'import kubernetes_validate, yamllint, yaml' 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "kubernetes-validate==1.37.0" "yamllint==1.38.0" >&2
  fi
  printf '%s\n' "$venv"
}
