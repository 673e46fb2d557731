"""`GET /docs`: Swagger UI for `/openapi.json`, every asset served from the installed package (no CDN).

The assets are swagger-ui-dist's, from PyPI's `swagger-ui-py` (read as files, never imported).
The page is ours: Litestar's SwaggerRenderPlugin belongs to its own OpenAPI generation, which is
off (`openapi.py` builds the document from the decoding structs).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from litestar import Response, get
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css")

# validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Embedding appliance API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, tryItOutEnabled: true,
      validatorUrl: null, presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout",
    });
  </script>
</body>
</html>
"""


def swagger_ui_dir() -> Path:
    """swagger-ui-dist's files inside the installed `swagger-ui-py` package."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the package swagger-ui-py is not installed (a dependency of the appliance)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    missing = [name for name in ASSETS if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"swagger-ui-py at {folder} lacks {missing}")
    return folder


@get("/docs", include_in_schema=False)
async def docs_page() -> Response[str]:
    return Response(PAGE, media_type="text/html; charset=utf-8")


def docs_handlers() -> list[ControllerRouterHandler]:
    static = create_static_files_router(
        path="/docs/static", directories=[swagger_ui_dir()], include_in_schema=False, send_as_attachment=False
    )
    return [docs_page, static]
