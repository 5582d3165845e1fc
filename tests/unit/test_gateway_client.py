"""The gateway client's HTTP connection: one client per process, its connection reused from
call to call (a pull polls its status; a prolog looks up, then records a use), against a real
local HTTP server. Only the munge credential is replaced (no munged here)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest

from imagegw import client, identity
from shifter_site import config

CONNECTIONS: list[str] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self):
        super().setup()
        CONNECTIONS.append(self.client_address)

    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps({"list": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def gateway(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(identity, "credential", lambda cfg: "MUNGE:test:")
    cfg = config.parse(f"""system: unit
image_dir: /images
gateway: {{urls: ["http://127.0.0.1:{server.server_address[1]}"]}}
registries: {{default: "http://127.0.0.1:5000"}}
""")
    CONNECTIONS.clear()
    yield cfg
    server.shutdown()
    server.server_close()


def test_calls_in_one_process_share_one_connection(gateway):
    for _ in range(5):
        assert client.images(gateway) == []
    assert len(CONNECTIONS) == 1, CONNECTIONS


def test_one_client_per_kind_of_url():
    assert client._http("http://a:1") is client._http("http://b:2")
    assert client._http("https://a:1") is client._http("https://b:2")
    assert client._http("http://a:1") is not client._http("https://a:1")


def test_each_calls_timeout_applies_on_the_shared_client(gateway):
    """A gateway that accepts and never answers: the call fails after the config's timeout,
    not the shared client's default."""
    import socket
    import time

    silent = socket.create_server(("127.0.0.1", 0))
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        short = msgspec.structs.replace(gateway, gateway=msgspec.structs.replace(gateway.gateway, urls=[url],
                                                                               timeout=0.5))
        start = time.monotonic()
        with pytest.raises(client.GatewayError, match="cannot reach the image gateway"):
            client.images(short)
        assert time.monotonic() - start < 3
    finally:
        silent.close()
