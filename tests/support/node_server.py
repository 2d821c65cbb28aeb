"""A node's services for the end-to-end tests: HTTPS on 443 and HTTP on 80.

GET /bytes/N answers N bytes; any other path answers which server was hit
and the proxy headers it saw, so a test can check them.

Also: HTTPS behind a PROXY protocol header on 8443 (it answers the header
it read before the TLS handshake), a TCP echo on 7000 and a UDP echo on 7001.
"""
import http.server
import socket
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


def proxied_tls(ctx):
    """Reads a PROXY v1 line from each connection, then serves TLS on it."""
    listener = socket.create_server(("0.0.0.0", 8443), reuse_port=True)

    def serve(conn):
        with conn:
            conn.settimeout(20)
            header = b""
            while not header.endswith(b"\r\n") and len(header) < 108:
                byte = conn.recv(1)
                if not byte:
                    return
                header += byte
            with ctx.wrap_socket(conn, server_side=True) as tls:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                body = f"node-pp header={header.decode(errors='replace').strip()}\n".encode()
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def tcp_echo():
    listener = socket.create_server(("0.0.0.0", 7000), reuse_port=True)

    def serve(conn):
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def udp_echo():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 7001))
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


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
    for service in [lambda: proxied_tls(ctx), tcp_echo, udp_echo]:
        threading.Thread(target=service, daemon=True).start()
    print("ready", flush=True)
    tls.serve_forever()


main()
