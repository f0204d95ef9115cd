"""Access to the runtime and the per-request database session from views."""
from __future__ import annotations

from flask import current_app, g
from sqlalchemy.orm import Session

from ..runtime import Runtime


def runtime() -> Runtime:
    return current_app.extensions["connector"]


def db() -> Session:
    """The request's session; committed by the view that changes something."""
    if "db_session" not in g:
        g.db_session = runtime().db.sessionmaker()
    return g.db_session
