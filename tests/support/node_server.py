"""A node's services for the end-to-end tests: HTTPS on 443 and HTTP on 80.

GET /bytes/N answers N bytes; any other path answers which server was hit
and the proxy headers it saw, so a test can check them.
"""
import http.server
import socketserver
import ssl
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/bytes/"):
            body = b"x" * int(self.path.split("/")[2])
        else:
            h = self.headers
            body = (
                f"{self.server.label} host={h.get('Host')} real={h.get('X-Real-IP')} "
                f"xff={h.get('X-Forwarded-For')} upgrade={h.get('Upgrade')} connection={h.get('Connection')}\n"
            ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    cert, key = sys.argv[1], sys.argv[2]
    plain = Server(("0.0.0.0", 80), Handler)
    plain.label = "node-http"
    tls = Server(("0.0.0.0", 443), Handler)
    tls.label = "node-https"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    print("ready", flush=True)
    tls.serve_forever()


main()
