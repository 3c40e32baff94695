"""gunicorn's threaded worker, with a new connection waiting for its first bytes in the poller
instead of in a pool thread.

Stock `gthread` (gunicorn 24 and later) hands each accepted connection straight to a pool
thread, which waits up to five seconds (`DEFAULT_WORKER_DATA_TIMEOUT`, not a setting) for the
request to arrive before giving the connection back to the poller. A client that opens
connections before it uses them (an HTTP client's pool warming up, a browser's speculative
connections, a load generator's connections waiting for their turn) holds one thread per
connection for up to those five seconds. Under the provider incident most threads are already
waiting on the provider, so the few left over for `/health/` went to idle connections: the
incident bench measured `/health/` p99 1.6 s, every worker thread busy at its start (py-spy:
24 in the provider call, the rest in `wait_for_data`). gunicorn's own fix is open upstream
(benoitc/gunicorn#3634, PR #3635); until it lands, this subclass accepts a connection into the
poller as a pending one, exactly as stock gthread treats a connection that sent nothing within
its wait (the same deque, timeout and callback): a pool thread takes it only once it is
readable, and it is closed if it sends nothing within five seconds plus `keepalive`, as stock
gthread closes it.

Written by hand because no setting or worker class of gunicorn does this; it uses gthread's
`pending_conns`, `on_pending_socket_readable`, `murder_pending` and `TConn`, checked on import so that a
gunicorn without them stops at start-up with a clear error rather than serving differently.
tests/paymentsite/test_gunicorn_worker.py proves the behaviour on a real gunicorn.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn.workers import gthread

_NEEDED = ("on_pending_socket_readable", "enqueue_req", "murder_pending")
_missing = [name for name in _NEEDED if not hasattr(gthread.ThreadWorker, name)]
_missing += [name for name in ("TConn", "DEFAULT_WORKER_DATA_TIMEOUT") if not hasattr(gthread, name)]
if _missing:
    raise ImportError(
        f"paymentsite.gunicorn_worker needs gthread's {', '.join(_missing)}, which this "
        "gunicorn has not: run the gunicorn requirements.lock pins, or worker_class 'gthread'"
    )


class ThreadWorker(gthread.ThreadWorker):
    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn: Any = gthread.TConn(self.cfg, client, address, listener.getsockname())
        # As long as stock gthread gives it: its five-second wait in a thread, then keepalive in the poller.
        conn.timeout = time.monotonic() + gthread.DEFAULT_WORKER_DATA_TIMEOUT + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(client, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))
