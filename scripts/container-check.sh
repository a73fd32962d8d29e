#!/usr/bin/env bash
# Build the Containerfile and run the image for real with podman (design §13):
#   1. a base image from Debian packages (mmdebstrap of Debian 12 with python3, python3-venv),
#      because no container registry is reachable here; imported with `podman import`;
#   2. `podman build --format docker --build-arg BASE=...` (docker format keeps HEALTHCHECK),
#      and once more with EXTRAS=postgres;
#   3. run it, check /readyz, the HEALTHCHECK, an OFREP evaluation from the host, a usage
#      report that survives a new container on the same volume, loopback-only binding when
#      PLANGATE_HOST is not set, and a clean stop within 5 s.
# Prints the image size and build time. Idempotent: podman keeps its images and containers in
# a store of its own under $WORK (the machine's /etc/containers and storage are not touched);
# everything it made is removed at the end except the base image, kept as a cache
# (`--clean` removes that too). Installs what it needs with apt-get when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${PLANGATE_CONTAINER_WORK:-$ROOT/.cache/container-check}"
BASE=localhost/plangate-base:bookworm
IMAGE=localhost/plangate:check
NAME=plangate-check
VOLUME=plangate-check-state
SUITE=bookworm
MIRROR="${PLANGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { printf '== container: %s\n' "$*"; }
fail() { printf 'container-check FAILED: %s\n' "$*" >&2; exit 1; }

# -- what this machine needs ------------------------------------------------------------------
need=()
for tool in podman mmdebstrap runc iptables curl; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
[ -x /usr/lib/podman/netavark ] || [ -x /usr/libexec/podman/netavark ] || need+=(netavark)
[ -x /usr/lib/podman/aardvark-dns ] || [ -x /usr/libexec/podman/aardvark-dns ] || need+=(aardvark-dns)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${need[@]}" uidmap fuse-overlayfs slirp4netns ca-certificates >/dev/null
fi

# -- podman's configuration, for this script only ---------------------------------------------
mkdir -p "$WORK/storage" "$WORK/run" "$WORK/catalog"
# Root here lacks CAP_SYS_RESOURCE: podman's default ulimits (nofile 1048576, nproc 4194304)
# cannot be set, nor nproc at the current hard limit; ask for what this shell already has.
nofile="$(ulimit -Hn)"
[ "$nofile" = unlimited ] && nofile=65536
# The host's CA bundle goes into every RUN step, so pip trusts a TLS-re-signing proxy the
# way the host does (harmless where there is none: it is the bundle the host trusts anyway).
ca="${PLANGATE_BUILD_CA:-${SSL_CERT_FILE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}}"
volumes=""
[ -f "$ca" ] && volumes="\"$ca:/etc/ssl/certs/ca-certificates.crt:ro\""
cat >"$WORK/containers.conf" <<EOF
# Written by scripts/container-check.sh; CONTAINERS_CONF points here, /etc is left alone.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
volumes = [$volumes]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
helper_binaries_dir = ["/usr/lib/podman", "/usr/libexec/podman"]
[network]
network_backend = "netavark"
EOF
cat >"$WORK/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
export CONTAINERS_CONF="$WORK/containers.conf" CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
# Without systemd podman cannot schedule HEALTHCHECK timers and says so on every run; the
# checks below run the HEALTHCHECK themselves (`podman healthcheck run`), so drop that line.
podman() { command podman "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }

cleanup() {
  podman rm -f -t 0 "$NAME" "$NAME-2" >/dev/null 2>&1 || true
  podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  podman rmi -f "$IMAGE" "$IMAGE-postgres" >/dev/null 2>&1 || true
  podman image prune -f >/dev/null 2>&1 || true # untagged build stages, in this store only
}
trap cleanup EXIT
cleanup
if [ "${1:-}" = "--clean" ]; then
  podman rmi -f "$BASE" >/dev/null 2>&1 || true
fi

seconds() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(seconds)" 'BEGIN { printf "%.1f", b - a }'; }
mib() { awk -v n="$1" 'BEGIN { printf "%.1f MB", n / 1000000 }'; }
size() { podman image inspect --format '{{.Size}}' "$1"; }

# -- 1. base image from Debian packages -------------------------------------------------------
if ! podman image exists "$BASE"; then
  t=$(seconds)
  rm -f "$WORK/base.tar"
  timeout 900 mmdebstrap --quiet --variant=essential \
    --include=python3,python3-venv,ca-certificates,libstdc++6 \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    "$SUITE" "$WORK/base.tar" "$MIRROR" || fail "mmdebstrap of Debian $SUITE"
  podman import --quiet "$WORK/base.tar" "$BASE" >/dev/null
  rm -f "$WORK/base.tar"
  say "base image $BASE made from Debian packages in $(elapsed "$t") s ($(mib "$(size "$BASE")"))"
else
  say "base image $BASE kept from an earlier run ($(mib "$(size "$BASE")"); --clean rebuilds it)"
fi

# -- 2. build ---------------------------------------------------------------------------------
build() { # TAG [EXTRAS]
  timeout 900 podman build --quiet --no-cache --layers=false --format docker \
    --build-arg BASE="$BASE" --build-arg EXTRAS="${2:-}" -t "$1" -f "$ROOT/Containerfile" "$ROOT" \
    >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; fail "podman build ${2:+(EXTRAS=$2)}"; }
}
t=$(seconds)
build "$IMAGE"
built=$(elapsed "$t")
base_size=$(size "$BASE")
image_size=$(size "$IMAGE")
say "image $IMAGE: $(mib "$image_size") ($(mib $((image_size - base_size))) over the base), built in $built s"
t=$(seconds)
build "$IMAGE-postgres" postgres
say "image $IMAGE-postgres (EXTRAS=postgres): $(mib "$(size "$IMAGE-postgres")"), built in $(elapsed "$t") s"
podman run --rm --entrypoint python3 "$IMAGE-postgres" -c "import psycopg" ||
  fail "EXTRAS=postgres image has no psycopg"

inspect() { podman image inspect --format "$1" "$IMAGE"; }
[ "$(inspect '{{.Config.User}}')" = "10001:10001" ] || fail "image user is not 10001:10001"
inspect '{{json .Config.Healthcheck}}' | grep -q 'plangate","health","--ready' ||
  fail "HEALTHCHECK missing (was the image built with --format docker?)"
for port in 8013 8014 8016; do
  inspect '{{json .Config.ExposedPorts}}' | grep -q "\"$port/tcp\"" || fail "port $port not exposed"
done
# Small and runtime-only: no compiler, no pip, no tests, no dev tools, no psycopg by default.
podman run --rm --entrypoint sh "$IMAGE" -c '
  for t in gcc cc pip pip3 pytest ruff mypy; do command -v "$t" && exit 1; done
  ! python3 -c "import psycopg" 2>/dev/null && [ ! -e /opt/plangate/lib/python3.11/site-packages/tests ]' ||
  fail "the image carries build or dev tools"
say "image checks: user 10001, HEALTHCHECK plangate health --ready, ports 8013 8014 8016, no compilers/pip/dev tools"

# -- 3. run -----------------------------------------------------------------------------------
cp "$ROOT/examples/catalog.yaml" "$WORK/catalog/catalog.yaml"
read -r GRPC MGMT OFREP < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')

run() { # NAME [podman run options...]
  local name=$1
  shift
  podman run -d --name "$name" --health-interval=disable "$@" \
    -v "$WORK/catalog:/etc/plangate:ro" -v "$VOLUME:/var/lib/plangate" \
    -p "127.0.0.1:$GRPC:8013" -p "127.0.0.1:$MGMT:8014" -p "127.0.0.1:$OFREP:8016" \
    "$IMAGE" >/dev/null
}
wait_healthy() { # NAME: the image's own HEALTHCHECK, up to 60 s
  for _ in $(seq 120); do
    podman healthcheck run "$1" >/dev/null 2>&1 && return 0
    [ "$(podman inspect --format '{{.State.Running}}' "$1")" = true ] || break
    sleep 0.5
  done
  podman logs "$1" >&2 || true
  fail "$1 did not become healthy within 60 s"
}
stop() { # NAME: SIGTERM, exit 0 within 5 s
  local t
  t=$(seconds)
  podman stop -t 10 "$1" >/dev/null
  local took code
  took=$(elapsed "$t")
  code=$(podman inspect --format '{{.State.ExitCode}}' "$1")
  [ "$code" = 0 ] || { podman logs "$1" >&2; fail "$1 exited $code on SIGTERM"; }
  awk -v s="$took" 'BEGIN { exit !(s < 5) }' || fail "$1 took $took s to stop (limit 5 s)"
  say "$1 stopped on SIGTERM in $took s, exit code 0"
}
json_field() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

run "$NAME" -e PLANGATE_HOST=0.0.0.0 -e PLANGATE_MANAGEMENT_HOST=0.0.0.0
wait_healthy "$NAME"
readyz=$(curl -fsS --max-time 5 "http://127.0.0.1:$MGMT/readyz") || fail "/readyz from the host"
[ "$(json_field 'd["ready"]' <<<"$readyz")" = True ] || fail "/readyz says not ready: $readyz"
say "/readyz from the host: ready, catalog $(json_field 'd["catalog_version"]' <<<"$readyz")"

ofrep=$(curl -fsS --max-time 5 -X POST -H 'Content-Type: application/json' \
  -d '{"context":{"targetingKey":"acct_acme"}}' "http://127.0.0.1:$OFREP/ofrep/v1/evaluate/flags/sso") ||
  fail "OFREP evaluation from the host"
[ "$(json_field 'd["value"], d["reason"]' <<<"$ofrep")" = "True TARGETING_MATCH" ] ||
  fail "OFREP sso for acct_acme: $ofrep"
say "OFREP from the host: sso for acct_acme is on ($(json_field 'd["variant"]' <<<"$ofrep"))"

used() { # NAME: api-calls used by acct_acme, through the image's own CLI over gRPC
  podman exec "$1" plangate check acct_acme api-calls --json | json_field 'd["metering"]["used"]'
}
before=$(used "$NAME")
report=$(podman exec "$NAME" plangate usage report acct_acme api-calls 7 --idempotency-key check-1 --json)
[ "$(json_field 'd["results"][0]["status"]' <<<"$report")" = applied ] || fail "usage report: $report"
stop "$NAME"
podman rm "$NAME" >/dev/null

# A new container on the same volume, this time without PLANGATE_HOST (loopback only) and
# locked down as in the Kubernetes manifests: read-only root (podman adds a tmpfs /tmp), no
# capabilities, no privilege escalation.
run "$NAME-2" --read-only --cap-drop=ALL --security-opt=no-new-privileges
wait_healthy "$NAME-2"
after=$(used "$NAME-2")
[ "$after" = $((before + 7)) ] || fail "usage after a new container: $after, expected $((before + 7))"
say "usage report survived a new container on volume $VOLUME (api-calls used $before -> $after), read-only root, no capabilities"
if curl -sS --max-time 3 -X POST -d '{}' "http://127.0.0.1:$OFREP/ofrep/v1/evaluate/flags" >/dev/null 2>&1; then
  fail "without PLANGATE_HOST the sidecar answered through the published OFREP port"
fi
say "without PLANGATE_HOST the sidecar stays on the container's loopback (host gets no answer)"
stop "$NAME-2"
say "ok: image $(mib "$image_size"), built in $built s"
