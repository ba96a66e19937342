"""The web server of `ltx2 ui`: a FastAPI app that serves the Gradio page, behind a guard that lets file requests
through only for files inside the output folder (where the outputs, their settings and the uploads live), and
uvicorn bound to 127.0.0.1 unless told otherwise.

Gradio serves files through `/gradio_api/file=PATH` (and the older `/file/PATH`); it also proxies URLs given
there. `OutputFilesOnly` refuses (403) any such request whose path, decoded as often as it decodes, resolves
outside the output folder (`..`, absolute paths, links leading out) or names a URL, before Gradio sees it.
"""

from __future__ import annotations

import os
import urllib.parse

_FILE_ROUTES = ("/file=", "/file/")


def requested_file(path: str) -> str | None:
    """The file a request path asks for (`/gradio_api/file=/x/y.mp4` -> `/x/y.mp4`), or None for other routes.
    Percent-escapes are decoded until nothing changes (a doubly escaped `%252e%252e` is `..`)."""
    for _ in range(5):
        decoded = urllib.parse.unquote(path)
        if decoded == path:
            break
        path = decoded
    for marker in _FILE_ROUTES:
        at = path.find(marker)
        if at >= 0 and (marker == "/file=" or path[:at] in ("", "/gradio_api")):
            return path[at + len(marker):]
    return None


def inside(path: str, root: str) -> bool:
    """`path` (absolute, or relative to the working folder as Gradio takes it) resolves, links followed, to
    `root` or below it."""
    if "://" in path or path.startswith("//"):
        return False
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


class OutputFilesOnly:
    """ASGI middleware: file requests outside `root` get 403 (see the module docstring)."""

    def __init__(self, app, root: str):
        self.app, self.root = app, os.path.realpath(root)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope.get("path", "").encode()
            target = requested_file(raw.decode("latin-1").split("?", 1)[0])
            if target is not None and not inside(target, self.root):
                body = b"403: only files of the output folder are served\n"
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def make_app(blocks, output_dir: str, *, max_file_size: int, theme=None, css: str | None = None):
    """The FastAPI app: `blocks` mounted at `/` (files of `output_dir` allowed, uploads up to `max_file_size`
    bytes), wrapped in `OutputFilesOnly`."""
    import fastapi
    import gradio as gr

    app = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app = gr.mount_gradio_app(app, blocks, path="", allowed_paths=[output_dir], max_file_size=max_file_size,
                              footer_links=[], ssr_mode=False, show_error=False, theme=theme, css=css)
    return OutputFilesOnly(app, output_dir)


def serve(app, host: str, port: int, *, log_level: str = "warning"):
    """A uvicorn server for `app` (not started): `.run()` blocks; tests start it on a thread."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False))
