"""Interactive API docs at ``/api/docs``: Swagger UI over ``/api/v1/openapi.json``, its JS and
CSS served by the package itself (``static/swagger-ui/``, see the NOTICE there): the server
needs no internet, and the page's Content-Security-Policy lets it load nothing from elsewhere.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

DOCS = "/api/docs"
ASSETS = f"{DOCS}/assets"
SWAGGER_UI = Path(__file__).parent / "static" / "swagger-ui"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{root}{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{root}{assets}/swagger-ui-bundle.js"></script>
<script src="{root}{docs}/init.js"></script>
</body>
</html>
"""

# validatorUrl null: Swagger UI would otherwise fetch a badge from a public validator
_INIT = """window.addEventListener("load", function () {{
  window.ui = SwaggerUIBundle({{
    url: {url},
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  }});
}});
"""


def install(app: FastAPI, openapi_url: str) -> None:
    app.mount(ASSETS, StaticFiles(directory=SWAGGER_UI), name="swagger-ui")

    def root(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    @app.get(DOCS, include_in_schema=False)
    def docs(request: Request) -> Response:
        page = _PAGE.format(title=html.escape(app.title), root=html.escape(root(request)), assets=ASSETS, docs=DOCS)
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP})

    @app.get(f"{DOCS}/init.js", include_in_schema=False)
    def init(request: Request) -> Response:
        script = _INIT.format(url=json.dumps(root(request) + openapi_url))
        return Response(script, media_type="text/javascript; charset=utf-8", headers={"Cache-Control": "no-cache"})


__all__ = ["DOCS", "install"]
