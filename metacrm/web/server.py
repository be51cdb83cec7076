"""``metacrm serve``: the app on uvicorn. Workers are separate processes, so each builds its
own app from the environment (``METACRM_MODEL``, ``METACRM_DB``): :func:`from_env` is the
factory uvicorn calls in each of them."""

from __future__ import annotations

import os


def from_env():
    """The app for the model and database the environment names (one CRM per process)."""
    from ..model.loader import load_model
    from ..runtime.crm import CRM
    from ..runtime.engine import make_engine
    from . import create_app

    model = load_model(os.environ["METACRM_MODEL"])
    crm = CRM(model, make_engine(os.environ["METACRM_DB"]))
    return create_app(crm, max_body=int(os.environ.get("METACRM_MAX_BODY", 1 << 20)))


def serve(model: str, db: str, *, host: str, port: int, workers: int, log_level: str = "info") -> None:
    import uvicorn

    os.environ["METACRM_MODEL"] = model
    os.environ["METACRM_DB"] = db
    uvicorn.run(
        "metacrm.web.server:from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        timeout_graceful_shutdown=30,  # SIGTERM: in-flight requests finish (for up to 30 s)
        proxy_headers=False,
    )
