"""A real HTTP server on this machine serving photos, as a shop's CDN would (tests only)."""
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def photo_server(files: dict[str, bytes], busy: dict[str, int] | None = None):
    """Serves `files` by path (/NAME); /to/NAME redirects to /NAME; anything else is a 404.
    `busy`: NAME -> how many times to answer 503 (Retry-After: 0) first, as a CDN under load does.
    Yields the base URL; `requests` lists the paths asked for."""
    requests = []
    busy = dict(busy or {})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            name = self.path.lstrip("/")
            if busy.get(name, 0) > 0:
                busy[name] -= 1
                self.send_response(503)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.startswith("/to/"):
                self.send_response(302)
                self.send_header("Location", self.path[3:])
                self.end_headers()
                return
            body = files.get(self.path.lstrip("/"))
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
