"""fetch against a local HTTP server in a thread: never the internet."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from glassformer.data import fetch as fetch_mod
from glassformer.data.fetch import DATASETS, FetchError, fetch

SHAKESPEARE = Path("/work/shared/data/tinyshakespeare/input.txt")


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory and counts GET requests, so a test can see that a cache hit asks nothing."""

    requests: list[str]  # set per server by the fixture

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server(tmp_path):
    """(base_url, served_dir, requests): a ThreadingHTTPServer on 127.0.0.1, shut down afterwards."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []
    handler = type("Handler", (CountingHandler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_env_url(monkeypatch):
    # A developer's own mirror setting must not redirect these tests.
    monkeypatch.delenv("GLASSFORMER_DATA_URL", raising=False)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_checksums_are_well_formed():
    for dataset in DATASETS.values():
        assert dataset.files and dataset.about
        for file in dataset.files:
            assert len(file.sha256) == 64 and int(file.sha256, 16) >= 0
            assert file.url.startswith("https://") and file.url.endswith("/" + file.filename)


def test_fetch_verifies_and_caches(server, tmp_path):
    if not SHAKESPEARE.exists():
        pytest.skip("no local copy of tiny-shakespeare")
    base_url, served, requests = server
    (served / "input.txt").write_bytes(SHAKESPEARE.read_bytes())
    cache = tmp_path / "cache"
    seen = []

    directory = fetch("shakespeare", cache_dir=cache, base_url=base_url, progress=lambda d, t: seen.append((d, t)))

    assert directory == cache / "shakespeare"
    data = (directory / "input.txt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == DATASETS["shakespeare"].files[0].sha256
    assert leftovers(directory) == ["input.txt"]  # no temporary file left
    assert requests == ["/input.txt"]
    assert seen[-1] == (len(data), len(data))

    assert fetch("shakespeare", cache_dir=cache, base_url=base_url) == directory
    assert requests == ["/input.txt"]  # the verified copy was reused


def test_env_var_sets_base_url(server, tmp_path, monkeypatch):
    base_url, served, requests = server
    (served / "input.txt").write_text("not shakespeare\n")
    monkeypatch.setenv("GLASSFORMER_DATA_URL", base_url)
    with pytest.raises(FetchError):
        fetch("shakespeare", cache_dir=tmp_path / "cache")
    assert requests == ["/input.txt"]


def test_corrupt_download_is_rejected(server, tmp_path):
    base_url, served, _ = server
    (served / "input.txt").write_text("First Citizen:\nthis is not the real file\n")
    cache = tmp_path / "cache"
    with pytest.raises(FetchError) as info:
        fetch("shakespeare", cache_dir=cache, base_url=base_url)
    message = str(info.value)
    assert "checksum" in message and "input.txt" in message
    assert DATASETS["shakespeare"].files[0].sha256 in message
    assert hashlib.sha256(b"First Citizen:\nthis is not the real file\n").hexdigest() in message
    assert "\n" not in message
    assert leftovers(cache / "shakespeare") == []


def test_http_404_gives_the_local_copy_hint(server, tmp_path):
    base_url, _, requests = server  # nothing served: every request is a 404
    with pytest.raises(FetchError) as info:
        fetch("multi30k", cache_dir=tmp_path / "cache", base_url=base_url)
    message = str(info.value)
    assert "train.de.gz" in message and "404" in message
    assert "pass it directly" in message and "--train-src" in message
    assert "\n" not in message
    assert leftovers(tmp_path / "cache" / "multi30k") == []


def test_closed_port_gives_the_local_copy_hint(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FetchError) as info:
        fetch("shakespeare", cache_dir=tmp_path / "cache", base_url=f"http://127.0.0.1:{port}")
    message = str(info.value)
    assert "could not download input.txt" in message
    assert "pass it directly: glassformer train lm --data" in message
    assert isinstance(info.value, OSError)


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="multi30k.*shakespeare"):
        fetch("imagenet", cache_dir=tmp_path)


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GLASSFORMER_CACHE", str(tmp_path))
    assert fetch_mod.default_cache_dir() == tmp_path
    monkeypatch.delenv("GLASSFORMER_CACHE")
    assert fetch_mod.default_cache_dir() == Path.home() / ".cache" / "glassformer"
