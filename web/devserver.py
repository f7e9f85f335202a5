"""The dev server of `coinage serve` and `coinage demo`: werkzeug, threaded, with the job worker thread."""
from __future__ import annotations

import signal
import sys
import threading

from werkzeug.serving import make_server

from . import create_app


def serve(settings, host: str, port: int, banner: str = "") -> int:
    """The dev server (werkzeug, threaded) with the worker thread, until Ctrl-C."""
    if settings.env == "production":
        print("error: production mode serves through gunicorn; run `coinage serve --gunicorn` for the command",
              file=sys.stderr)
        return 2
    app = create_app(settings)
    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as e:
        app.extensions["coinage"].close()
        print(f"error: cannot listen on {host}:{port} ({e}); pass --port with a free port", file=sys.stderr)
        return 1
    url = f"http://{host}:{server.server_port}"
    print(f"{banner}Coinage is serving at {url}   (admin: {url}/admin, API: {url}/openapi.json; Ctrl-C stops)",
          flush=True)
    _stop_on_sigterm(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.extensions["coinage"].close()
    return 0


def _stop_on_sigterm(server) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
