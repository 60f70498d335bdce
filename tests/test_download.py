"""The download tool against an HTTP server on 127.0.0.1 that supports Range
requests and can cut a transfer short or serve the wrong bytes."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deconvnet.data.download import Asset, DownloadError, download, extract

from helpers import ROOT

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
GOOD = Asset("test", "unused", "payload.bin", size=len(PAYLOAD), md5=hashlib.md5(PAYLOAD).hexdigest(),
             sha1=hashlib.sha1(PAYLOAD).hexdigest())


class Server:
    """Serves PAYLOAD at /payload.bin. ``cut_after``: close the connection
    after that many bytes of the next response(s); ``corrupt``: flip a byte."""

    def __init__(self) -> None:
        self.cut_after: int | None = None
        self.cuts_left = 0
        self.corrupt = False
        self.ranges: list[str | None] = []
        self.payload = PAYLOAD
        self.status: int | None = None   # answer every request with this error status
        self.send_length = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                body = bytearray(server.payload)
                if server.corrupt:
                    body[1000] ^= 0xFF
                start = 0
                header = self.headers.get("Range")
                server.ranges.append(header)
                if server.status is not None:
                    self.send_error(server.status)
                    return
                if header and int(header.split("=")[1].split("-")[0]) >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if header:
                    start = int(header.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                if server.send_length:
                    self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                data = bytes(body[start:])
                if server.cuts_left and server.cut_after is not None:
                    server.cuts_left -= 1
                    data = data[:server.cut_after]
                self.wfile.write(data)
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/payload.bin"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


def test_plain_download(server, tmp_path):
    path = download(GOOD, tmp_path, server.url, show_progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [None]
    # A second call finds the verified file and fetches nothing.
    download(GOOD, tmp_path, server.url, show_progress=False)
    assert len(server.ranges) == 1


def test_truncated_transfer_fails_without_final_file(server, tmp_path):
    server.cut_after, server.cuts_left = 300_000, 10
    with pytest.raises(DownloadError, match="ended early: 300000 of 1048576 bytes"):
        download(GOOD, tmp_path, server.url, retries=0, show_progress=False)
    assert not (tmp_path / "payload.bin").exists()
    assert (tmp_path / "payload.bin.part").stat().st_size == 300_000


def test_resume_after_interruption(server, tmp_path):
    server.cut_after, server.cuts_left = 400_000, 1
    with pytest.raises(DownloadError):
        download(GOOD, tmp_path, server.url, retries=0, show_progress=False)
    # Rerun: the request asks only for the rest.
    path = download(GOOD, tmp_path, server.url, retries=0, show_progress=False)
    assert server.ranges == [None, "bytes=400000-"]
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "payload.bin.part").exists()


def test_retries_resume_within_one_call(server, tmp_path):
    server.cut_after, server.cuts_left = 250_000, 3
    path = download(GOOD, tmp_path, server.url, retries=3, show_progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=250000-", "bytes=500000-", "bytes=750000-"]


def test_checksum_mismatch(server, tmp_path):
    server.corrupt = True
    with pytest.raises(DownloadError, match="md5 checksum mismatch"):
        download(GOOD, tmp_path, server.url, show_progress=False)
    assert not (tmp_path / "payload.bin").exists()
    assert not (tmp_path / "payload.bin.part").exists()


def test_wrong_size(server, tmp_path):
    wrong = Asset("test", "unused", "payload.bin", size=len(PAYLOAD) + 1)
    with pytest.raises(DownloadError, match="1048576 bytes, expected 1048577"):
        download(wrong, tmp_path, server.url, show_progress=False)
    assert not (tmp_path / "payload.bin").exists()


def test_extract_archive(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("VOCdevkit/VOC2012/readme.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    archive = tmp_path / "a.tar"
    archive.write_bytes(buffer.getvalue())
    extract(archive, tmp_path / "data")
    assert (tmp_path / "data" / "VOCdevkit" / "VOC2012" / "readme.txt").read_text() == "hello"
    assert not list((tmp_path / "data").glob(".extract-*"))


def test_cli_with_url_override(server, tmp_path):
    """The tool, pointed at the loopback server, reports the checksum failure
    of the real asset's expected md5 and exits 1."""
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "download.py"), "voc2012",
                             "--url", f"voc2012={server.url}", "--data", str(tmp_path), "--retries", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "1048576 bytes, expected 1999639040" in result.stderr
    assert not (tmp_path / "downloads" / "VOCtrainval_11-May-2012.tar").exists()


def test_models_readme_lists_the_downloaded_weights_with_their_sums():
    from deconvnet.data.download import ASSETS

    table = (ROOT / "models" / "README.md").read_text()
    for asset in (a for a in ASSETS.values() if a.kind == "model"):
        row = next(line for line in table.splitlines() if f"`{asset.filename}`" in line)
        assert f"tools/download.py {asset.name}" in row
        assert (f"sha1 `{asset.sha1}`" if not asset.locked else "`downloads.lock.json`") in row


# --- assets without a published checksum: the lock file ------------------------

SED_PAYLOAD = gzip.compress(b"%YAML:1.0\noptions:\n   numberOfTrees: 8\n" + random.Random(0).randbytes(200_000))


def sed_asset():
    from deconvnet.data.download import ASSETS

    return ASSETS["sed-model"]


def test_locked_urls_are_pinned():
    from deconvnet.data.download import ASSETS

    sed = ASSETS["sed-model"].url
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/opencv/opencv_extra/[0-9a-f]{40}/"
                        r"testdata/cv/ximgproc/model\.yml\.gz", sed)
    assert ASSETS["fcn8s-pascal-2014"].url == "http://dl.caffe.berkeleyvision.org/fcn-8s-pascal.caffemodel"
    assert all(ASSETS[n].locked and not (ASSETS[n].md5 or ASSETS[n].sha1) for n in ("sed-model", "fcn8s-pascal-2014"))


def test_first_download_writes_the_lock_later_ones_must_match(server, tmp_path):
    server.payload = SED_PAYLOAD
    lock = tmp_path / "lock.json"
    path = download(sed_asset(), tmp_path / "m", server.url, show_progress=False, lock_file=lock)
    entry = json.loads(lock.read_text())["sed-model"]
    assert entry == dict(url=server.url, size=len(SED_PAYLOAD), sha256=hashlib.sha256(SED_PAYLOAD).hexdigest())
    # The same bytes again: accepted; the file on disk is checked against the lock too.
    path.unlink()
    download(sed_asset(), tmp_path / "m", server.url, show_progress=False, lock_file=lock)
    path.write_bytes(gzip.compress(b"%YAML:1.0\nother\n"))
    with pytest.raises(DownloadError, match="differs from the first verified copy"):
        download(sed_asset(), tmp_path / "m", server.url, show_progress=False, lock_file=lock)
    # Upstream serves other (valid-looking) bytes: refused, nothing left behind.
    path.unlink()
    server.payload = gzip.compress(b"%YAML:1.0\nchanged upstream\n")
    with pytest.raises(DownloadError, match=f"recorded {len(SED_PAYLOAD)} bytes"):
        download(sed_asset(), tmp_path / "m", server.url, show_progress=False, lock_file=lock)
    assert not path.exists() and not path.with_name(path.name + ".part").exists()
    assert json.loads(lock.read_text())["sed-model"] == entry


def test_locked_download_resumes_and_checks_content(server, tmp_path):
    server.payload = SED_PAYLOAD
    server.cut_after, server.cuts_left = 50_000, 1
    lock = tmp_path / "lock.json"
    with pytest.raises(DownloadError):
        download(sed_asset(), tmp_path, server.url, retries=0, show_progress=False, lock_file=lock)
    assert not lock.exists()  # a partial file is never recorded
    path = download(sed_asset(), tmp_path, server.url, retries=0, show_progress=False, lock_file=lock)
    assert server.ranges[-1] == "bytes=50000-" and path.read_bytes() == SED_PAYLOAD
    assert json.loads(lock.read_text())["sed-model"]["size"] == len(SED_PAYLOAD)
    # A first download that is not a model is not recorded.
    server.payload = b"<html>not found</html>"
    with pytest.raises(DownloadError, match="not a complete gzip file"):
        download(sed_asset(), tmp_path / "other", server.url, retries=0, show_progress=False,
                 lock_file=tmp_path / "lock2.json")
    assert not (tmp_path / "lock2.json").exists()


def test_cli_sed_model_against_loopback(server, tmp_path):
    server.payload = SED_PAYLOAD
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "download.py"), "sed-model",
                             "--url", f"sed-model={server.url}", "--models", str(tmp_path),
                             "--lock-file", str(tmp_path / "lock.json")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sed_model.yml.gz").read_bytes() == SED_PAYLOAD
    assert "sed-model" in json.loads((tmp_path / "lock.json").read_text())


# --- issue 12, item 9: 416, error statuses, no Content-Length -------------------

def test_part_longer_than_the_remote_file_starts_over(server, tmp_path):
    """A .part longer than the file: a Range request gets 416; no loop of retries."""
    (tmp_path / "payload.bin.part").write_bytes(PAYLOAD + b"extra bytes")
    path = download(GOOD, tmp_path, server.url, retries=0, show_progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD) + 11}-", None]


@pytest.mark.parametrize("status, retried, phrase",
                         [(404, False, "check the address"), (500, True, "retrying may help")])
def test_error_statuses_are_named_not_resumed(server, tmp_path, caplog, status, retried, phrase):
    server.status = status
    with pytest.raises(DownloadError, match=f"HTTP {status}") as err:
        download(GOOD, tmp_path, server.url, retries=2, show_progress=False)
    assert phrase in str(err.value) and "resum" not in str(err.value)
    assert len(server.ranges) == (3 if retried else 1)
    assert not any("resuming" in r.getMessage() for r in caplog.records)


def test_transfer_without_length_keeps_the_partial_file(server, tmp_path):
    """Cut short with no Content-Length: the checksum fails, but the file is
    kept so that a rerun resumes it instead of starting over."""
    sha1_only = Asset("test", "unused", "payload.bin", sha1=GOOD.sha1)  # as vgg16: no size known
    server.send_length = False
    server.cut_after, server.cuts_left = 300_000, 1
    with pytest.raises(DownloadError, match="may be incomplete: rerun to resume"):
        download(sha1_only, tmp_path, server.url, retries=0, show_progress=False)
    assert (tmp_path / "payload.bin.part").stat().st_size == 300_000
    path = download(sha1_only, tmp_path, server.url, retries=0, show_progress=False)
    assert path.read_bytes() == PAYLOAD and server.ranges[-1] == "bytes=300000-"


def test_models_readme_lists_what_the_guide_writes_into_models():
    """Every file docs/REPRODUCE.md's steps write under models/ has a row."""
    import re

    table = (ROOT / "models" / "README.md").read_text()
    guide = (ROOT / "docs" / "REPRODUCE.md").read_text()
    written = set(re.findall(r"--out(?:-weights|-model)? models/([\w.-]+)", guide))
    assert {"deconvnet_init_vgg16.caffemodel", "deconvnet.caffemodel", "deconvnet_folded.caffemodel",
            "deconvnet_deploy_folded.prototxt"} <= written
    missing = [name for name in written if f"`{name}`" not in table]
    assert missing == []


# --- issue 27: the DeconvNet authors' release, --from, an unreachable host ---------

def _release_stand_in(tmp_path, snapshot: bool):
    from deconvnet.net.architecture import Size
    from deconvnet.net.stand_in_weights import deconvnet_release_layers, write_v1_caffemodel

    name = "stage_2_train_result" if snapshot else "DeconvNet_trainval_inference"
    return write_v1_caffemodel(tmp_path / f"{name}.caffemodel", name, deconvnet_release_layers(Size(64, 16), snapshot))


def download_tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "download.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_release_urls_are_the_authors_and_not_in_all():
    from deconvnet.data.download import ASSETS, GROUPS

    assert GROUPS["deconvnet-release"] == ("deconvnet-inference", "deconvnet-stage2")
    assert ASSETS["deconvnet-inference"].url == ("http://cvlab.postech.ac.kr/research/deconvnet/model/DeconvNet/"
                                                 "DeconvNet_trainval_inference.caffemodel")
    assert ASSETS["deconvnet-stage2"].url == ("http://cvlab.postech.ac.kr/research/deconvnet/model/"
                                              "stage_2_train_result/stage_2_train_result.caffemodel")
    assert all(ASSETS[name].locked for name in GROUPS["deconvnet-release"])


def test_the_release_from_a_server_is_recorded_in_the_lock_file(server, tmp_path):
    """Both files through --url (the loopback server in place of the
    authors' host); each size and sha256 is recorded on first use, and a
    later, different copy is refused."""
    served = tmp_path / "served"
    served.mkdir()
    inference, snapshot = _release_stand_in(served, False), _release_stand_in(served, True)
    lock, models = tmp_path / "lock.json", tmp_path / "models"
    for source in (inference, snapshot):
        server.payload = source.read_bytes()
        name = "deconvnet-stage2" if source == snapshot else "deconvnet-inference"
        done = download_tool(name, "--url", f"{name}={server.url}", "--models", models, "--lock-file", lock)
        assert done.returncode == 0, done.stderr
        assert (models / source.name).read_bytes() == source.read_bytes()
    entries = json.loads(lock.read_text())
    assert entries["deconvnet-inference"]["sha256"] == hashlib.sha256(inference.read_bytes()).hexdigest()
    assert entries["deconvnet-stage2"]["size"] == snapshot.stat().st_size
    (models / inference.name).unlink()
    server.payload = snapshot.read_bytes()
    done = download_tool("deconvnet-inference", "--url", f"deconvnet-inference={server.url}", "--models", models,
                         "--lock-file", lock)
    assert done.returncode == 1 and "differs from the first verified copy" in done.stderr
    assert not (models / inference.name).exists()


def test_from_a_folder_a_file_or_an_address(server, tmp_path):
    copies = tmp_path / "copies"
    copies.mkdir()
    inference, snapshot = _release_stand_in(copies, False), _release_stand_in(copies, True)
    models, lock = tmp_path / "models", tmp_path / "lock.json"
    done = download_tool("deconvnet-release", "--from", copies, "--models", models, "--lock-file", lock)
    assert done.returncode == 0, done.stderr
    assert (models / snapshot.name).read_bytes() == snapshot.read_bytes()
    assert set(json.loads(lock.read_text())) == {"deconvnet-inference", "deconvnet-stage2"}
    # One file under another name, to its asset's name.
    renamed = tmp_path / "from_a_colleague.caffemodel"
    renamed.write_bytes(inference.read_bytes())
    done = download_tool("deconvnet-inference", "--from", renamed, "--models", tmp_path / "m2", "--lock-file", lock)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m2" / inference.name).read_bytes() == inference.read_bytes()
    # Another address; one file for two assets is refused.
    server.payload = inference.read_bytes()
    done = download_tool("deconvnet-inference", "--from", server.url, "--models", tmp_path / "m3", "--lock-file", lock)
    assert done.returncode == 0, done.stderr
    done = download_tool("deconvnet-release", "--from", renamed, "--models", tmp_path / "m4")
    assert done.returncode == 2 and "names one file" in done.stderr


def test_a_host_that_does_not_answer_is_named_with_the_way_out(tmp_path):
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = download_tool("deconvnet-inference", "--url", f"deconvnet-inference=http://127.0.0.1:{port}/x.caffemodel",
                         "--models", tmp_path, "--retries", "0", "--timeout", "5")
    assert done.returncode == 1
    assert "failed after 1 attempt(s)" in done.stderr and "--from PATH_OR_URL" in done.stderr
    assert not list(tmp_path.iterdir())
