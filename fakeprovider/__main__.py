"""`python -m fakeprovider`: the fake provider as a process of its own."""

from __future__ import annotations

import argparse
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
    args = parser.parse_args(argv)

    provider = FakeProvider(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        timeout_window_s=args.timeout_window_s,
    )

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    provider.start()
    print(f"Fake payment provider listening on {provider.url}", flush=True)
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
