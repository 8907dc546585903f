"""A stand-in for a misbehaving Flowise, as a separate process, for fault-injection tests.

The sync itself is tested against the real Flowise; what a real Flowise does not do on demand —
fail with 500, answer 404 or a web page (an older version, a wrong URL), send 5 MiB, trickle its
answer, speak TLS with a certificate nobody trusts — this server does, one behaviour per process:

    python -m credbridge.testing.brokenflowise --port 8123 --mode status:500 [--cert F --key F]

Modes: `ok` (an empty Flowise: no credentials, every type known), `status:<code>`, `html`
(a web page with 200, as Flowise's UI answers unknown paths), `big` (5 MiB of JSON), `slow:<s>`
(waits that long, then trickles the answer a byte at a time), `close` (drops the connection).
"""

from __future__ import annotations

import argparse
import http.server
import json
import ssl
import sys
import time
from collections.abc import Sequence

BIG_BYTES = 5 * 1024 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "ok"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        mode = self.mode
        if mode == "close":
            self.close_connection = True
            self.connection.close()
            return
        if mode.startswith("status:"):
            code = int(mode.split(":", 1)[1])
            self._answer(code, json.dumps({"statusCode": code, "message": f"stand-in failure {code}"}).encode())
            return
        if mode == "html":
            self._answer(200, b"<!DOCTYPE html><html><body>Flowise</body></html>", "text/html")
            return
        if mode == "big":
            filler = json.dumps([{"id": f"{index:08d}", "name": "x" * 200} for index in range(BIG_BYTES // 220 + 1)])
            self._answer(200, filler.encode())
            return
        if mode.startswith("slow:"):
            time.sleep(float(mode.split(":", 1)[1]))
            body = b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            for _ in range(len(body) + 1000):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.5)
            return
        path = self.path.split("?", 1)[0]
        if path.endswith("/version"):
            self._answer(200, b'{"version":"0.0.0-stand-in"}')
        elif path.endswith("/components-credentials"):
            self._answer(200, b'[{"name":"openAIApi"}]')
        elif self.command == "POST":
            self._answer(200, b'{"id":"stand-in","updatedDate":"2026-01-01T00:00:00.000Z"}')
        else:
            self._answer(200, b"[]")

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_DELETE = _serve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args(argv)
    handler = type("Handler", (_Handler,), {"mode": args.mode})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    if args.cert and args.key:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
