#!/usr/bin/python3
"""The lab's "Internet" origin: HTTP, HTTPS (one certificate for every lab name) and a
TCP/UDP echo service, on the addresses of the namespace it runs in. Started by `igw lab up`
inside the inet namespace; stdlib only. Each HTTP answer names the host and path it
served, so a test can tell which origin a request reached; GET /bytes/N returns N bytes."""

import argparse
import http.server
import socketserver
import ssl
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "igw-lab-origin"

    def _answer(self, with_body):
        host = self.headers.get("Host", "")
        if self.path.startswith("/bytes/"):
            try:
                n = min(int(self.path[len("/bytes/"):]), 64 << 20)
            except ValueError:
                n = 0
            body = b"x" * n
        else:
            body = f"origin {host} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self):
        self._answer(True)

    def do_HEAD(self):
        self._answer(False)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0") or 0)
        self.rfile.read(min(n, 1 << 20))
        self._answer(True)

    def log_message(self, fmt, *args):
        sys.stderr.write("origin: %s %s\n" % (self.address_string(), fmt % args))


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def server_bind(self):
        # HTTPServer.server_bind asks for the host's FQDN, a DNS lookup: the lab's namespaces
        # have no resolver, and must send nothing anywhere else.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "origin", self.server_address[1]


class EchoTCP(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class EchoTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The default backlog (5) overflows when a client opens 100 flows at once: every sixth
    # SYN was dropped and retried a second later.
    request_queue_size = 1024


class EchoUDP(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--echo-port", type=int, default=7)
    # UDP answers leave from the address the socket is bound to: bind the echo service to
    # its own address, or replies to it come from the primary address and are dropped.
    p.add_argument("--echo-addr", default="")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    a = p.parse_args()

    servers = [Server(("", a.http_port), Handler)]
    tls = Server(("", a.https_port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
    servers.append(tls)
    servers.append(EchoTCPServer((a.echo_addr, a.echo_port), EchoTCP))
    servers.append(socketserver.ThreadingUDPServer((a.echo_addr, a.echo_port), EchoUDP))
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("origin: ready", flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
