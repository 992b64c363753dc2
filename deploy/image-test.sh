#!/usr/bin/env bash
# `make image-test`: build the Dockerfile and serve from the image, without a registry or a
# container runtime (docs/deploy.md, "The image, built and run").
#
# 1. A base image made here: mmdebstrap writes a minimal Debian bookworm with Python 3.11 from
#    this machine's apt sources, and podman imports it (no registry serves images here).
# 2. podman builds the Dockerfile on it with --isolation=chroot (containers cannot be
#    started here), pip inside the build reaching the package index through this machine's
#    pip configuration, CA bundle and wheel folders, mounted read-only.
# 3. The image's root filesystem (podman create + podman mount) runs the image's entrypoint
#    with the image's environment and working directory, as its user (chroot --userspec).
# 4. From outside: the image's health check, Route and Cascade through the Python client,
#    Envoy's external processor through the tests' stand-in for Envoy's filter, and, when
#    the image has it, the HTTP Messages API through the anthropic SDK.
#
# Needs root, podman and mmdebstrap (installed from Debian's packages when missing).
# Environment: IMAGE (tag to build, default localhost/tierroute:image-test), BASE_IMAGE
# (default localhost/pybase:bookworm; made once and reused), IMAGE_TEST_SOURCES (apt sources
# for mmdebstrap; default this machine's), PYTHON (the host's client, default .venv/bin/python),
# IMAGE_TEST_NO_CACHE (non-empty: build every layer again, for timing).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/tierroute:image-test}
BASE_IMAGE=${BASE_IMAGE:-localhost/pybase:bookworm}
PYTHON=${PYTHON:-.venv/bin/python}
TIERROUTE=$(dirname "$PYTHON")/tierroute
say() { printf 'image-test: %s\n' "$*"; }

if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null; then
	say "installing podman and mmdebstrap (Debian packages)"
	apt-get install -y -qq podman mmdebstrap >/dev/null
fi

if ! podman image exists "$BASE_IMAGE"; then
	sources=${IMAGE_TEST_SOURCES:-}
	if [ -z "$sources" ]; then
		for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
			if [ -s "$f" ]; then sources=$f; break; fi
		done
	fi
	say "making $BASE_IMAGE with mmdebstrap from $sources"
	base_start=$(date +%s)
	base=$(mktemp -d)
	mmdebstrap --quiet --variant=minbase \
		--include=python3,python3-venv,python-is-python3,ca-certificates,passwd \
		bookworm "$base/base.tar" "$sources" </dev/null
	podman import --quiet "$base/base.tar" "$BASE_IMAGE" >/dev/null
	rm -rf "$base"
	say "base image made in $(($(date +%s) - base_start)) s"
fi

# pip inside the build sees what pip sees here: its configuration files, the CA bundle its
# configuration names, and any local wheel folders (each mounted only where it exists).
mounts=()
for path in /etc/pip.conf /etc/xdg/pip /etc/ssl/certs /opt/wheels /opt/pypi /opt/pypi-more; do
	if [ -e "$path" ]; then mounts+=(-v "$path:$path:ro"); fi
done
say "building $IMAGE"
start=$(date +%s)
cache=()
if [ -n "${IMAGE_TEST_NO_CACHE:-}" ]; then cache=(--no-cache); fi
podman build --quiet --isolation=chroot --network=host --format=docker "${cache[@]}" \
	--build-arg PYTHON_IMAGE="$BASE_IMAGE" "${mounts[@]}" -t "$IMAGE" . >/dev/null
built=$(($(date +%s) - start))
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "built in ${built} s; image size $((size / 1024 / 1024)) MiB"

container=$(podman create "$IMAGE")
server_pid=""
cleanup() {
	if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
	podman umount "$container" >/dev/null 2>&1 || true
	podman rm --force "$container" >/dev/null 2>&1 || true
	rm -rf "${work:-}"
}
trap cleanup EXIT
root=$(podman mount "$container")
work=$(mktemp -d)

# The image's own run configuration: user, working directory, environment, entrypoint.
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
workdir=$(podman image inspect --format '{{.Config.WorkingDir}}' "$IMAGE")
mapfile -t environment < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
mapfile -t entrypoint < <(podman image inspect --format '{{range .Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
[ -n "$user" ] && [ "${user%%:*}" != "0" ] && [ "${user%%:*}" != "root" ] || { say "the image runs as root ($user)"; exit 1; }
in_image() { chroot --userspec="$user" "$root" env -i -C "$workdir" "${environment[@]}" "$@"; }

# Loopback and a free port, not the image's 0.0.0.0:50051: this shares the machine's network.
# Metrics (a fixed port in the image) are off for the same reason. An image with the HTTP
# endpoint (tierroute.api.http) serves it on a free port too, and it is then called.
serve_args=(--host 127.0.0.1 --port 0)
http=""
if compgen -G "$root/opt/venv/lib/python3*/site-packages/tierroute/api/http/__init__.py" >/dev/null; then
	http=yes
	serve_args+=(--http-port 0)
fi
say "serving as $user from $workdir: ${entrypoint[*]} ${serve_args[*]}"
environment+=(TIERROUTE_TELEMETRY_PROMETHEUS_PORT=0)
# Not through in_image: a function sent to the background runs in a subshell, and the pid
# must be the server's own (chroot and env exec into it).
chroot --userspec="$user" "$root" env -i -C "$workdir" "${environment[@]}" \
	"${entrypoint[@]}" "${serve_args[@]}" >"$work/serve.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 1 120); do
	port=$(sed -n 's/^tierroute serving on .*:\([0-9][0-9]*\)$/\1/p' "$work/serve.log")
	[ -n "$port" ] && break
	kill -0 "$server_pid" 2>/dev/null || break
	sleep 0.5
done
if [ -z "$port" ]; then say "the server did not start:"; cat "$work/serve.log"; exit 1; fi
target=127.0.0.1:$port
say "serving on $target (pid $server_pid)"

uid=$(awk '/^Uid:/ {print $2}' "/proc/$server_pid/status")
say "server process uid $uid"
[ "$uid" = "${user%%:*}" ] || { say "the server runs as uid $uid, not ${user%%:*}"; exit 1; }

in_image python -m tierroute.healthprobe --addr "$target" --timeout 10
say "health check: SERVING"
"$TIERROUTE" route --target "$target" --json "What is the capital of France?" >"$work/route.json"
"$PYTHON" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("image-test: Route ->", r["tier"]["name"] if isinstance(r.get("tier"), dict) else r.get("tier"))' "$work/route.json"
"$TIERROUTE" cascade --target "$target" --json "Name the largest planet." >"$work/cascade.json"
"$PYTHON" -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r.get("answer"), r; print("image-test: Cascade ->", (r["answer"][:60]).replace("\n"," "))' "$work/cascade.json"
# Envoy's external processor in the image, through the tests' stand-in for Envoy's filter.
"$PYTHON" - "$target" <<'PY'
import asyncio, json, sys
from grpc import aio
from tests.api.envoy_filter import ExtProcFilter

async def main(target: str) -> None:
    body = {"model": "tierroute", "max_tokens": 64,
            "messages": [{"role": "user", "content": "What is 2+2?"}]}
    async with aio.insecure_channel(target) as channel:
        seen = await ExtProcFilter(channel).request(
            "POST", "/v1/messages", lambda h, b: (200, {}, b"{}"), body=json.dumps(body).encode()
        )
    model = json.loads(seen.upstream_body)["model"]
    tier = seen.upstream_headers["x-tierroute-tier"]
    assert model != "tierroute" and seen.client_headers["x-tierroute-tier"] == tier, seen
    print(f"image-test: ext_proc -> {tier} ({model})")

asyncio.run(main(sys.argv[1]))
PY
# The Anthropic Messages API over HTTP, through the official SDK with only its base URL changed.
if [ -n "$http" ]; then
	http_port=$(sed -n 's/^tierroute serving HTTP on .*:\([0-9][0-9]*\)$/\1/p' "$work/serve.log")
	[ -n "$http_port" ] || { say "no HTTP port in the server's output:"; cat "$work/serve.log"; exit 1; }
	"$PYTHON" - "http://127.0.0.1:$http_port" <<'PY'
import sys
import anthropic

client = anthropic.Anthropic(base_url=sys.argv[1], api_key="image-test", max_retries=0)
raw = client.messages.with_raw_response.create(
    model="tierroute", max_tokens=64,
    messages=[{"role": "user", "content": "Name the largest planet."}],
)
message = raw.parse()
assert message.content and raw.headers.get("x-tierroute-tier"), raw.headers
print(f"image-test: HTTP POST /v1/messages -> {raw.headers['x-tierroute-tier']} ({message.model})")
PY
else
	say "this image has no HTTP endpoint (tierroute.api.http): not called"
fi
test -s "$root$workdir/tierroute-querylog.sqlite3" && say "query log written in $workdir as $user"
say "passed: built in ${built} s, $((size / 1024 / 1024)) MiB; Route, Cascade, ext_proc${http:+ and HTTP} served by the image as $user"
