#!/usr/bin/env python3
"""The stand-in for "the internet" in the network tests.

Run inside a network namespace the test creates (`ip netns exec NS python3
upstream.py DIR`). Serves HTTP on port 80 and HTTPS on port 443 (with
DIR/cert.pem and DIR/key.pem), and appends one line per accepted
connection, `PORT PEER_ADDRESS`, to DIR/connections, so the test can check
that nothing but the agent's proxy ever reached it.

  GET /hello   "hello from upstream"
  GET /big     1,000,000 bytes of "x"
  POST /echo   the request body
"""

import http.server
import os
import socketserver
import ssl
import sys
import threading

DIR = sys.argv[1]
LOG_LOCK = threading.Lock()


def log_connection(port, peer):
    with LOG_LOCK, open(os.path.join(DIR, "connections"), "a") as f:
        f.write(f"{port} {peer[0]}\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, body):
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/hello":
            self.reply(b"hello from upstream\n")
        elif self.path == "/big":
            self.reply(b"x" * 1_000_000)
        else:
            self.send_error(404)

    def do_POST(self):
        n = int(self.headers.get("content-length", "0"))
        self.reply(self.rfile.read(n))

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port, tls):
        super().__init__(("0.0.0.0", port), Handler)
        self.port = port
        self.tls = tls

    def get_request(self):
        sock, peer = self.socket.accept()
        log_connection(self.port, peer)
        if self.tls:
            sock = self.tls.wrap_socket(sock, server_side=True)
        return sock, peer


def main():
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(os.path.join(DIR, "cert.pem"), os.path.join(DIR, "key.pem"))
    servers = [Server(80, None), Server(443, tls)]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    open(os.path.join(DIR, "ready"), "w").close()
    servers[0].serve_forever()


main()
