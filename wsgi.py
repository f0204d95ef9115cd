"""Entry point for gunicorn: `gunicorn -w 4 'wsgi:app'` (run `connector worker` beside it)."""
from connector import create_app

app = create_app()
