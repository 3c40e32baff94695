#!/usr/bin/env bash
# `make run`: the service on SQLite with the fake provider, in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

host=${HOST:-127.0.0.1}
port=${PORT:-8000}
provider_port=${PROVIDER_PORT:-8099}
export PAYMENT_SERVICE_URL=${PAYMENT_SERVICE_URL:-http://127.0.0.1:${provider_port}/v1/charges}
export PAYMENT_API_KEY=${PAYMENT_API_KEY:-sk_test_local_fake_provider}
export PAYMENT_FAKE_PROVIDER=${PAYMENT_FAKE_PROVIDER:-true}
export LOG_FORMAT=${LOG_FORMAT:-console}
export DJANGO_DEBUG=${DJANGO_DEBUG:-true}

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "Stopped."
}
trap cleanup INT TERM EXIT

.venv/bin/python manage.py migrate --noinput >/dev/null
.venv/bin/python manage.py collectstatic --noinput >/dev/null
token=$(.venv/bin/python manage.py create_api_client demo --password demo-password 2>/dev/null)

# tok_timeout holds answers for 15 s: longer than the two 5 s attempts that fit in the
# 10 s deadline, so the demo shows the 504 and then a safe "Try again".
.venv/bin/python -m payments.fake_provider --host 127.0.0.1 --port "$provider_port" \
  --api-key "$PAYMENT_API_KEY" --latency-ms 150 --jitter-ms 100 --timeout-window-s 15 &
pids+=($!)

.venv/bin/python manage.py runserver "$host:$port" --noreload &
pids+=($!)

for _ in $(seq 1 50); do
  curl -fsS "http://$host:$port/health/live" >/dev/null 2>&1 && break
  sleep 0.2
done

cat <<MSG

Paymentsite is running at http://$host:$port/
  Payment page:  http://$host:$port/pay/   (log in as demo / demo-password)
  Admin:         http://$host:$port/admin/
  Health:        http://$host:$port/health/
  API token:     $token

Charge 19.99 USD:
  curl -sS -X POST http://$host:$port/api/v1/charges -H "Authorization: Token $token" -H "Content-Type: application/json" -H "Idempotency-Key: \$(date +%s%N)" -d '{"amount": 1999, "currency": "USD", "source": "tok_visa"}'

Press Ctrl-C to stop.
MSG

wait -n "${pids[@]}"
