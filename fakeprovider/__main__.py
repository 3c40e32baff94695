"""`python -m fakeprovider`: the fake provider as a process of its own."""

from __future__ import annotations

import argparse
import os
import signal
import time
from types import FrameType

from fakeprovider.provider import FakeProvider


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the fake payment provider.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--api-key", default="sk_test_fake")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--jitter-ms", type=int, default=0)
    parser.add_argument("--timeout-window-s", type=float, default=10.0)
    parser.add_argument(
        "--events-url",
        help="post a signed event for each settled charge and refund here, "
        "e.g. http://127.0.0.1:8000/webhooks/provider",
    )
    parser.add_argument(
        "--events-secret",
        default=(os.environ.get("PAYMENT_WEBHOOK_SECRET") or "").split(" ")[0],
        help="the whsec_... secret to sign them with (default: the first of $PAYMENT_WEBHOOK_SECRET)",
    )
    args = parser.parse_args(argv)
    if args.events_url and not args.events_secret.startswith("whsec_"):
        parser.error("--events-url needs --events-secret whsec_... (or PAYMENT_WEBHOOK_SECRET set)")

    provider = FakeProvider(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        timeout_window_s=args.timeout_window_s,
        events_url=args.events_url,
        events_secret=args.events_secret,
    )

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    provider.start()
    print(f"Fake payment provider listening on {provider.url}", flush=True)
    if args.events_url:
        print(f"Sending its events to {args.events_url}", flush=True)
    try:
        while True:
            # Short sleeps: the kernel may deliver SIGINT/SIGTERM to a server thread, which does not
            # interrupt a long sleep here; Python runs the handler when this thread next wakes.
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        provider.stop()


if __name__ == "__main__":
    main()
