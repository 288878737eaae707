#!/usr/bin/env bash
# Docker smoke test: build the server image, bring the stack up with compose on the default model the
# image carries (nothing in ./models), wait for health, transcribe real speech over HTTP and the
# websocket, read /metrics, check the monitoring and GPU configuration as far as this machine can, and
# tear everything down. ASR_SMOKE_TOOLS=1 also builds the tools image, exports a checkpoint with it and
# serves that from ./models instead.
#
#   bash tests/docker/smoke.sh            (needs docker, docker compose or docker-compose, curl, promtool)
#
# ASR_SMOKE_PORT (default 18000) is the host port; ASR_SMOKE_DATA the shared data folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
DATA=${ASR_SMOKE_DATA:-$REPO/../shared/data}
AUDIO=$REPO/examples/four-one-five-zero-two.wav  # synthetic; the real recording below is FSDD's
REAL=$DATA/fsdd/recordings/7_theo_0.wav
PORT=${ASR_SMOKE_PORT:-18000}

if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
WORK=$(mktemp -d)
export COMPOSE_PROJECT_NAME=w2v-asr-smoke ASR_MODELS_DIR=$WORK/models ASR_PUBLISH_PORT=$PORT
export ASR_IMAGE=w2v-asr:smoke ASR_TOOLS_IMAGE=w2v-asr-tools:smoke
mkdir -p "$ASR_MODELS_DIR"

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() {
    step "tear down"
    "${COMPOSE[@]}" --profile tools --profile monitoring down --volumes --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$WORK"
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
    [[ -z "$left" ]] && echo "nothing left running" || { echo "left behind: $left" >&2; exit 1; }
}
trap cleanup EXIT

step "compose files and Prometheus config"
"${COMPOSE[@]}" config -q
"${COMPOSE[@]}" --profile monitoring --profile tools config -q
"${COMPOSE[@]}" -f docker-compose.yml -f docker-compose.gpu.yml config >"$WORK/gpu.yml"
grep -q "driver: nvidia" "$WORK/gpu.yml" && grep -q "onnxruntime-gpu" "$WORK/gpu.yml" || fail "GPU override not applied"
promtool check config deploy/prometheus.yml

step "build the server image"
time "${COMPOSE[@]}" build asr
docker run --rm --entrypoint python3 "$ASR_IMAGE" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
    || fail "the server image must not contain torch"
[[ $(docker image inspect -f '{{.Config.User}}' "$ASR_IMAGE") == asr ]] || fail "the server must not run as root"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^w2v-asr:smoke "

wait_healthy() {
    for _ in $(seq 90); do
        state=$(docker inspect -f '{{.State.Health.Status}}' "$("${COMPOSE[@]}" ps -q asr)")
        [[ $state == healthy ]] && break
        sleep 2
    done
    [[ $state == healthy ]] || { "${COMPOSE[@]}" logs asr; fail "the server did not become healthy ($state)"; }
    echo "healthy"
}

step "docker compose up: the default model, nothing in ./models"
"${COMPOSE[@]}" up -d asr
wait_healthy

step "transcribe over HTTP"
curl -sS --fail-with-body -F "file=@$AUDIO" "http://127.0.0.1:$PORT/transcribe" | tee "$WORK/http.json"; echo
curl -sS --fail-with-body -F "file=@$REAL" "http://127.0.0.1:$PORT/transcribe" | tee "$WORK/real.json"; echo
python3 - "$WORK/http.json" "$WORK/real.json" <<'PY'
import json, sys
result, real = (json.load(open(path)) for path in sys.argv[1:3])
assert result["text"] == "four one five zero two" and result["model"] == "digits" and result["words"], result
assert abs(result["duration"] - 2.475) < 0.01 and result["decoder"] == "beam", result
assert real["text"] == "seven", real
PY
step "transcribe over the websocket"
docker run --rm --network host -v "$AUDIO:/audio.wav:ro" -v "$REPO/tests/docker:/smoke:ro" \
    --entrypoint python3 "$ASR_IMAGE" /smoke/ws_client.py "ws://127.0.0.1:$PORT/v1/stream" /audio.wav | tee "$WORK/ws.json"
python3 - "$WORK/http.json" "$WORK/ws.json" <<'PY'
import json, sys
http, stream = (json.load(open(path)) for path in sys.argv[1:3])
assert stream["text"] == http["text"], (stream["text"], http["text"])
assert stream["partials"] > 0
print("stream final == HTTP text")
PY

step "metrics"
curl -sS "http://127.0.0.1:$PORT/metrics" >"$WORK/metrics.txt"
grep -E '^asr_requests_total\{endpoint="/transcribe",status="200"\} 2' "$WORK/metrics.txt"
grep -E '^asr_audio_seconds_total' "$WORK/metrics.txt"
python3 - deploy/grafana/dashboards/asr.json "$WORK/metrics.txt" <<'PY'
import json, re, sys
exprs = [t["expr"] for p in json.load(open(sys.argv[1]))["panels"] for t in p["targets"]]
names = {n for e in exprs for n in re.findall(r"\basr_[a-z_]+", e)}
samples = {line.split("{")[0].split(" ")[0] for line in open(sys.argv[2]) if not line.startswith("#")}
missing = names - samples
assert not missing, f"dashboard queries metrics the server does not export: {missing}"
print(f"all {len(names)} dashboard metrics are exported")
PY

step "clean shutdown on SIGTERM"
container=$("${COMPOSE[@]}" ps -q asr)
"${COMPOSE[@]}" stop asr
[[ $(docker inspect -f '{{.State.ExitCode}}' "$container") == 0 ]] || fail "non-zero exit after SIGTERM"
docker logs "$container" 2>&1 | tail -3
if [[ ${ASR_SMOKE_TOOLS:-0} == 1 ]]; then
    step "the tools image: a checkpoint becomes an ONNX model in ./models, which compose then serves"
    time "${COMPOSE[@]}" --profile tools build tools
    docker run --rm --user "$(id -u):$(id -g)" -v "$ASR_MODELS_DIR:/models" -v "$REPO/tests/docker:/smoke:ro" \
        --entrypoint python3 "$ASR_TOOLS_IMAGE" /smoke/tiny_model.py /models/my-checkpoint
    # as the README says:
    "${COMPOSE[@]}" --profile tools run --rm --user "$(id -u):$(id -g)" tools \
        export onnx --model /models/my-checkpoint --out /models/onnx
    ASR_MODEL=/models/onnx "${COMPOSE[@]}" up -d asr
    wait_healthy
    curl -sS --fail-with-body -F "file=@$REAL" "http://127.0.0.1:$PORT/transcribe" | tee "$WORK/tools.json"; echo
    grep -q '"model":"onnx"' "$WORK/tools.json" || fail "the mounted model was not served"
fi
echo "SMOKE TEST PASSED"
