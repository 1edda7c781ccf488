"""ladder.fetch end to end against a local stand-in for raw.githubusercontent.com (a network double on
127.0.0.1 serving the shared data files in the source URL layout): verified downloads, a corrupted file, an
interrupted download, the derived stories260K checkpoint. No test touches the real network."""
from __future__ import annotations

import csv
import http.server
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from ladder import fetch as F
from ladder.paths import data_path

SMALL = ["text/tinystories_sample/tinystories_sample.txt", "eval/llm_foundry_icl/copa.jsonl",
         "text/dolma_cc_en_head/cc_en_head-0174.jsonl"]


class Server:
    """Serves each manifest file at its URL path; `corrupt` paths get flipped bytes, `cut` paths are closed
    after half of the body (with the full Content-Length announced)."""

    def __init__(self, data_dir: Path):
        self.files = {urlparse(e.url).path: data_dir / e.path for e in F.manifest() if e.url}
        self.corrupt, self.cut, self.hits = set(), set(), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits.append(self.path)
                f = outer.files.get(self.path)
                if f is None:
                    self.send_error(404)
                    return
                body = f.read_bytes()
                if self.path in outer.corrupt:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if self.path in outer.cut else body)
                if self.path in outer.cut:
                    self.wfile.flush()
                    self.connection.close()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def path_of(self, rel: str) -> str:
        return urlparse(next(e.url for e in F.manifest() if e.path == rel)).path


@pytest.fixture
def server(data_dir):
    s = Server(data_dir)
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_manifest_covers_the_data_with_sources_sizes_hashes_and_licences(data_dir):
    entries = F.manifest()
    assert len({e.path for e in entries}) == len(entries)
    for e in entries:
        assert e.fetch in ("download", "derive", "skip") and len(e.sha256) == 64 and e.licence, e
        if e.fetch == "download":
            assert e.url.startswith(F.ORIGIN + "/") and e.revision in e.url and len(e.revision) == 40, e
        else:
            assert not e.url and e.derived_from, e
    present = {str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file()} - {"MANIFEST.md"}
    assert present <= {e.path for e in entries}  # nothing in the data folder is unaccounted for
    assert {e.path for e in entries if e.fetch != "skip"} <= present
    # data/manifest.csv is the same file (a link into the package, which is what ships in the wheel)
    repo = Path(F.__file__).resolve().parents[1]
    assert (repo / "data" / "manifest.csv").read_bytes() == (repo / "ladder" / "data_manifest.csv").read_bytes()


def test_fetch_downloads_and_verifies(server, tmp_path):
    got = F.fetch(tmp_path, only=SMALL, base_url=server.url, log=lambda m: None)
    assert sorted(got) == sorted(SMALL)
    for rel in SMALL:
        e = next(e for e in F.manifest() if e.path == rel)
        assert F.sha256(tmp_path / rel) == e.sha256
    assert not list(tmp_path.rglob(".*part*"))
    n = len(server.hits)
    assert F.fetch(tmp_path, only=SMALL, base_url=server.url, log=lambda m: None) == []  # verified, not refetched
    assert len(server.hits) == n


def test_corrupted_download_is_named_and_not_kept(server, tmp_path):
    rel = SMALL[1]
    server.corrupt.add(server.path_of(rel))
    with pytest.raises(F.FetchError, match=rf"{rel}: got .* expected .*nothing was kept"):
        F.fetch(tmp_path, only=[rel], base_url=server.url, log=lambda m: None)
    assert not (tmp_path / rel).exists() and not list(tmp_path.rglob(".*part*"))
    server.corrupt.clear()
    assert F.fetch(tmp_path, only=[rel], base_url=server.url, log=lambda m: None) == [rel]


def test_corrupt_local_file_is_named_and_fetched_again(server, tmp_path):
    rel = SMALL[0]
    F.fetch(tmp_path, only=[rel], base_url=server.url, log=lambda m: None)
    (tmp_path / rel).write_text("truncated")
    logs = []
    assert F.fetch(tmp_path, only=[rel], base_url=server.url, log=logs.append) == [rel]
    assert any(rel in m and "does not match" in m for m in logs)
    assert F.is_valid(tmp_path / rel, next(e for e in F.manifest() if e.path == rel))


def test_interrupted_download_leaves_nothing_and_a_retry_works(server, tmp_path):
    rel = SMALL[2]
    server.cut.add(server.path_of(rel))
    with pytest.raises(F.FetchError, match=rf"{rel}: (download from .* failed|got 36247 bytes.*nothing was kept)"):
        F.fetch(tmp_path, only=[rel], base_url=server.url, log=lambda m: None)
    assert not (tmp_path / rel).exists() and not list(tmp_path.rglob(".*part*"))
    server.cut.clear()
    assert F.fetch(tmp_path, only=[rel], base_url=server.url, log=lambda m: None) == [rel]


def test_stories260k_is_derived_byte_identical_from_llama2c(server, tmp_path, data_dir):
    got = F.fetch(tmp_path, only=["models/stories260K/hf"], base_url=server.url, log=lambda m: None)
    assert {"models/stories260K/llama2c/stories260K.bin", "models/stories260K/llama2c/tok512.bin"} <= set(got)
    hf = tmp_path / "models" / "stories260K" / "hf"
    for f in sorted((data_dir / "models" / "stories260K" / "hf").iterdir()):
        assert (hf / f.name).read_bytes() == f.read_bytes(), f.name


def test_data_path_fetches_into_the_user_cache(server, tmp_path, monkeypatch):
    monkeypatch.delenv("LADDER_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("LADDER_FETCH_BASE", server.url)
    monkeypatch.setattr("ladder.root.CHECKOUT", None)  # as an installed wheel: no ../shared/data
    p = data_path("eval", "llm_foundry_icl", "copa.jsonl")
    assert p == tmp_path / "ladder" / "eval" / "llm_foundry_icl" / "copa.jsonl" and p.is_file()
    with pytest.raises(FileNotFoundError, match="run `make data`"):
        data_path("eval", "no_such_set.jsonl")


def test_cli_errors_are_one_line(server, tmp_path, capsys):
    assert F.main(["--dest", str(tmp_path), "--only", "nothing/"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --only") and "Traceback" not in err and err.count("\n") == 1
