#!/usr/bin/env bash
# `make run`: the service on SQLite with the fake provider, in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

host=${HOST:-127.0.0.1}
port=${PORT:-8000}
provider_port=${PROVIDER_PORT:-8099}
export PAYMENT_SERVICE_URL=${PAYMENT_SERVICE_URL:-http://127.0.0.1:${provider_port}/v1/charges}
export PAYMENT_API_KEY=${PAYMENT_API_KEY:-sk_test_fake}
export PAYMENT_FAKE_PROVIDER=${PAYMENT_FAKE_PROVIDER:-true}
export LOG_FORMAT=${LOG_FORMAT:-console}
export DJANGO_DEBUG=${DJANGO_DEBUG:-true}
# The fake provider signs its events with this secret and posts them to /webhooks/provider.
export PAYMENT_WEBHOOK_SECRET=${PAYMENT_WEBHOOK_SECRET:-whsec_$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(24)).decode())')}

support_user=support
support_password=support-password

# Both ports must be free before anything starts: otherwise another process answers the
# health check below, and the banner and token would point at it.
port_is_free() {  # host port: can we listen there, as runserver and the fake provider will?
  .venv/bin/python -c 'import socket, sys
with socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET) as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind((sys.argv[1].strip("[]"), int(sys.argv[2])))' "$1" "$2" 2>/dev/null
}
port_holder() {  # port: who listens there, when ss can tell
  command -v ss >/dev/null || return 0
  ss -Hltnp "sport = :$1" 2>/dev/null | sed -nE 's/.*users:\(\("([^"]+)",pid=([0-9]+).*/\1 (pid \2)/p' | head -n 1
}
if [[ "$port" == "$provider_port" ]]; then
  echo "make run: PORT and PROVIDER_PORT are both $port; choose two ports." >&2
  exit 1
fi
busy=0
for pair in "$host $port PORT" "127.0.0.1 $provider_port PROVIDER_PORT"; do
  read -r bind_host bind_port variable <<<"$pair"
  if ! port_is_free "$bind_host" "$bind_port"; then
    busy=1
    holder=$(port_holder "$bind_port")
    echo "make run: port $bind_port on $bind_host ($variable) is in use${holder:+ by $holder}." >&2
  fi
done
if (( busy )); then
  echo "Nothing was started. Stop that process, or choose free ports: PORT=8001 PROVIDER_PORT=8100 make run" >&2
  exit 1
fi

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # At most 5 s, then SIGKILL: a Python process can miss a signal that lands on one of
  # its other threads while its main thread sleeps.
  for _ in $(seq 1 50); do
    running=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=1; done
    (( running )) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "Stopped."
}
trap cleanup INT TERM EXIT

.venv/bin/python manage.py migrate --noinput >/dev/null
.venv/bin/python manage.py collectstatic --noinput >/dev/null
# --replace: each run revokes the previous run's key, so demo keeps one active "make run" key.
token=$(API_CLIENT_PASSWORD=demo-password .venv/bin/python manage.py create_api_client demo --set-password --key-name "make run" --replace 2>/dev/null)
SUPPORT_USER_PASSWORD=$support_password .venv/bin/python manage.py create_support_user "$support_user" >/dev/null

# tok_timeout holds answers for 15 s: longer than the two 5 s attempts that fit in the
# 10 s deadline, so the demo shows the 504 and then a safe "Try again".
.venv/bin/python -m fakeprovider --host 127.0.0.1 --port "$provider_port" \
  --api-key "$PAYMENT_API_KEY" --latency-ms 150 --jitter-ms 100 --timeout-window-s 15 \
  --events-url "http://$host:$port/webhooks/provider" --events-secret "${PAYMENT_WEBHOOK_SECRET%% *}" &
pids+=($!)

.venv/bin/python manage.py runserver "$host:$port" --noreload &
server_pid=$!
pids+=("$server_pid")

started=0
for _ in $(seq 1 100); do
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  if curl -fsS "http://$host:$port/health/live" >/dev/null 2>&1; then started=1; break; fi
  sleep 0.2
done
if (( ! started )) || ! kill -0 "$server_pid" 2>/dev/null; then
  echo "make run: the server did not start on $host:$port (see the lines above)." >&2
  exit 1
fi

# The retry and reconcile loops (README, Operators): its warnings and errors show here
# (-v 0: not its summary line on stopping).
LOG_LEVEL=WARNING .venv/bin/python manage.py run_worker -v 0 &
pids+=($!)

cat <<MSG

Paymentsite is running at http://$host:$port/
  Payment page:  http://$host:$port/pay/   (log in as demo / demo-password)
  Admin:         http://$host:$port/admin/   (log in as $support_user / $support_password)
  Health:        http://$host:$port/health/
  API token:     $token

Charge 19.99 USD:
  curl -sS -X POST http://$host:$port/api/v1/charges -H "Authorization: Token $token" -H "Content-Type: application/json" -H "Idempotency-Key: \$(date +%s%N)" -d '{"amount": 1999, "currency": "USD", "source": "tok_visa"}'

Press Ctrl-C to stop.
MSG

wait -n "${pids[@]}"
