"""The web UI: server-rendered pages (Jinja2, autoescaped), a little hand-written CSS and JavaScript,
charts drawn on the server as SVG. `install` adds its routes and static files to the control plane's app."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_PATH = "/static"


def install(app: FastAPI) -> None:
    from mlgate.interfaces.web.core import STATIC
    from mlgate.interfaces.web.routes import router

    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC), name="static")
