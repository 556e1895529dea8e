#!/usr/bin/env bash
# The Mini PaaS demo on this machine (`make demo` runs it after `make setup`):
#   1. starts the API on 127.0.0.1:8000 in the background (unless it already answers),
#   2. provisions this machine through the API (Docker engine, nginx, git: playbooks/host.yml),
#   3. deploys the offline example (examples/hello-offline) through the REST API,
#   4. waits until it is running and prints its URL and status.
# Running it again reuses the server and redeploys (a no-change deploy). Needs root (it installs
# packages and runs containers) and a committed checkout (the app is cloned from this repository).
set -euo pipefail
# What the demo writes (the data dir, the server's log and pid file) is the owner's only.
umask 077
cd "$(dirname "$0")/.."
repo=$(pwd)
paas=$repo/.venv/bin/paas
export PAAS_URL=${PAAS_URL:-http://127.0.0.1:8000}
# The demo app is cloned from this checkout (file://): the server allows file:// repositories under it
# only. A server started without these refuses the deploy (400 naming repo).
export PAAS_ALLOW_FILE_REPOS=${PAAS_ALLOW_FILE_REPOS:-1}
export PAAS_FILE_REPO_ROOTS=${PAAS_FILE_REPO_ROOTS:-$repo}
data=${PAAS_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/paas}
log=$data/server.log
pidfile=$data/server.pid
say() { printf '\n==> %s\n' "$*"; }
# GET a URL (no curl needed): prints the body, fails on no answer or an HTTP error.
fetch() { "$repo/.venv/bin/python" -c 'import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r: sys.stdout.write(r.read().decode())' "$1"; }

[ "$(id -u)" = 0 ] || { echo "the demo installs packages and runs containers: run it as root" >&2; exit 1; }
[ -x "$paas" ] || { echo "run 'make setup' first" >&2; exit 1; }

if ! command -v busybox >/dev/null 2>&1 || [[ $(ldd "$(command -v busybox)" 2>&1 || true) != *"not a dynamic"* ]]; then
  say "installing busybox-static (the offline example's base image is made from it)"
  apt-get install -y -qq busybox-static >/dev/null
fi

mkdir -p "$data"
chmod 700 "$data"
touch "$log" && chmod 600 "$log"
if fetch "$PAAS_URL/healthz" >/dev/null 2>&1; then
  say "the API already answers at $PAAS_URL"
else
  say "starting the API at $PAAS_URL"
  host_port=${PAAS_URL#http://}
  nohup "$paas" serve --host "${host_port%:*}" --port "${host_port##*:}" >>"$log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 50); do fetch "$PAAS_URL/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
  fetch "$PAAS_URL/healthz" >/dev/null || { echo "the API did not start; its log:" >&2; tail -n 30 "$log" >&2; exit 1; }
fi
echo "    log:   $log"
echo "    token: ${PAAS_API_TOKEN:+from PAAS_API_TOKEN}${PAAS_API_TOKEN:-$data/api-token (mode 0600; the paas CLI reads it)}"

say "provisioning this machine (paas infra provision)"
"$paas" infra provision --wait

say "building the local base image of the offline example"
examples/busybox-base/build.sh

say "deploying examples/hello-offline as 'hello' on port 8080 (paas deploy)"
"$paas" deploy hello --repo "file://$repo" --context examples/hello-offline --port 8080 \
  --container-port 5000 --health-path /healthz --env GREETING=hello --wait

for _ in $(seq 1 60); do
  state=$("$paas" status hello --json | "$repo/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  [ "$state" = running ] && break
  sleep 1
done

say "status"
"$paas" status hello
say "the app answers at http://127.0.0.1:8080/"
fetch http://127.0.0.1:8080/ | head -n 3
cat <<EOF2

Try:   $paas apps            $paas status hello
       $paas destroy hello --wait
Stop:  kill \$(cat $pidfile)   (the API; apps keep running)
EOF2
