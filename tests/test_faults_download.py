"""Fault injection, second ring (issue 23): dataset downloads against a real HTTP server on 127.0.0.1 that
drops the connection early. data/common.download_file must check the bytes against the server's Content-Length,
retry a dropped connection a few times, and never leave a short file under the final name (nor a temporary one).
No internet is needed; each case takes a few milliseconds (backoff 0)."""
import http.server
import threading
from pathlib import Path

import pytest

import data.common as common

BODY = bytes(range(256)) * 400  # 102,400 bytes


class Server(http.server.ThreadingHTTPServer):
    """Serves BODY at /file with its full Content-Length; the first `drops` requests are cut after 1,000 bytes
    (the connection closes), and /missing is a 404."""

    def __init__(self, drops: int):
        super().__init__(("127.0.0.1", 0), Handler)
        self.drops, self.requests = drops, 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests += 1
        if self.path == "/missing":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        cut = self.server.requests <= self.server.drops
        self.wfile.write(BODY[:1000] if cut else BODY)
        self.close_connection = True

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def server(request):
    srv = Server(getattr(request, "param", 0))
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv: Server, path: str = "/file") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


@pytest.mark.parametrize("server", [2], indirect=True)
def test_a_dropped_connection_is_retried_and_the_file_is_whole(server, tmp_path, capsys):
    dest = common.download_file(url(server), tmp_path / "shard.bin", attempts=4, backoff=0)
    assert dest.read_bytes() == BODY and server.requests == 3
    assert "the connection closed after 1,000 of 102,400 bytes; retrying" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["shard.bin"]


@pytest.mark.parametrize("server", [10], indirect=True)
def test_a_connection_that_always_drops_leaves_no_file_under_the_final_name(server, tmp_path):
    with pytest.raises(RuntimeError, match=r"could not download .*\(3 attempt\(s\); ShortDownload: the connection "
                                           r"closed after 1,000 of 102,400 bytes\).*--local-files"):
        common.download_file(url(server), tmp_path / "shard.bin", attempts=3, backoff=0)
    assert server.requests == 3 and list(tmp_path.iterdir()) == [], "a short or temporary file was left behind"


def test_a_client_error_is_not_retried(server, tmp_path):
    with pytest.raises(RuntimeError, match="HTTP Error 404"):
        common.download_file(url(server, "/missing"), tmp_path / "x.bin", attempts=3, backoff=0)
    assert server.requests == 1 and not list(tmp_path.iterdir())


def test_a_missing_local_file_is_not_retried(tmp_path, capsys):
    with pytest.raises(RuntimeError, match=r"\(1 attempt\(s\); URLError"):
        common.download_file((tmp_path / "absent").as_uri(), tmp_path / "x.bin", attempts=3, backoff=30)
    assert "retrying" not in capsys.readouterr().err


def test_a_refused_connection_is_retried_then_explained(tmp_path):
    srv = Server(0)
    port = srv.server_address[1]
    srv.server_close()  # nothing listens on the port any more
    with pytest.raises(RuntimeError, match=r"\(2 attempt\(s\); URLError"):
        common.download_file(f"http://127.0.0.1:{port}/file", tmp_path / "x.bin", attempts=2, backoff=0)
    assert not list(Path(tmp_path).iterdir())
