"""WSGI entry point for gunicorn: `gunicorn 'web.wsgi:app'` (settings from COINAGE_* variables).

Each gunicorn worker process builds its own app; in production the job worker runs separately
(`coinage worker`, COINAGE_WORKER=process), so no web process ever generates images.
"""
import atexit

from web import create_app

app = create_app()
atexit.register(app.extensions["coinage"].close)  # flush the store and stop the worker thread on exit
