"""`triton-operator repository serve` and `... sync` as the pods run them: real subprocesses on 127.0.0.1.

A repository server over a temp root written the way staging writes (a temp folder, then a rename), and
sync agents over their own temp roots. Every wait is bounded; only the processes started here are stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from triton_operator.repository.manifest import MARKER, FileEntry, ModelContent, RepositoryContent

from tests.support.s3server import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
RESCAN_S = 0.3
CONVERGE_S = 15.0  # generous for a loaded 2-core machine; it takes about a second


# --- the programs -------------------------------------------------------------------------------------------


class Program:
    """One started subprocess: its URL, its log, and a way to stop it (SIGTERM, then SIGKILL)."""

    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.url = f"http://{HOST}:{port}"
        self.log = log
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)])}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "triton_operator.repository",
                    *args,
                    "--address",
                    HOST,
                    "--port",
                    str(port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def wait_healthy(self, timeout_s: float = 20.0) -> None:
        wait_until(lambda: status(self.url + "/healthz") == 200, timeout_s, f"{self.url}/healthz", self.log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextlib.contextmanager
def started(args: list[str], log: Path) -> Iterator[Program]:
    program = Program(args, free_port(HOST), log)
    try:
        program.wait_healthy()
        yield program
    finally:
        program.stop()


def server(root: Path, logs: Path) -> contextlib.AbstractContextManager[Program]:
    return started(["serve", "--root", str(root), "--rescan-interval", str(RESCAN_S)], logs / "server.log")


def agent(source: str, root: Path, logs: Path, name: str) -> contextlib.AbstractContextManager[Program]:
    return started(["sync", "--source", source, "--root", str(root)], logs / f"{name}.log")


# --- HTTP and waiting ---------------------------------------------------------------------------------------


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def raw_get(program: Program, path: str) -> tuple[int, bytes, dict[str, str]]:
    """GET a path exactly as written (no normalization, no quoting by the client)."""
    host, port = program.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"not within {timeout_s} s: {what}\n{tail}")


# --- the repository as staging writes it --------------------------------------------------------------------


def digest_of(files: dict[str, bytes]) -> str:
    return (
        "sha256:"
        + hashlib.sha256(json.dumps(sorted((k, v.hex()) for k, v in files.items())).encode()).hexdigest()
    )


def stage(root: Path, model: str, version: int, files: dict[str, bytes]) -> str:
    """Place a version like staging/place.py: built in `.staging-*`, marker included, renamed into place."""
    temp = Path(tempfile.mkdtemp(prefix=f".staging-{model}-", dir=root))
    new_version = temp / "new"
    for rel, data in files.items():
        (new_version / rel).parent.mkdir(parents=True, exist_ok=True)
        (new_version / rel).write_bytes(data)
    digest = digest_of(files)
    (new_version / MARKER).write_text(json.dumps({"digest": digest, "source": {}, "bytes": 0}))
    model_dir = root / model
    if not model_dir.exists():
        staged = temp / "model"
        staged.mkdir()
        os.rename(new_version, staged / str(version))
        (staged / "config.pbtxt").write_text(f'name: "{model}"\n')
        os.rename(staged, model_dir)
    else:
        os.rename(new_version, model_dir / str(version))
    shutil.rmtree(temp)
    return digest


def unstage(root: Path, model: str, version: int | None = None) -> None:
    """Remove a version (or the model) like staging/remove.py: renamed into a trash folder, then deleted."""
    trash = Path(tempfile.mkdtemp(prefix=f".trash-{model}-", dir=root))
    os.rename(root / model if version is None else root / model / str(version), trash / "old")
    shutil.rmtree(trash)


def tree(root: Path) -> dict[str, str]:
    """`model/path` -> sha256 of every file a replica serves from, read independently of manifest.py."""
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            rel = (rel_folder / name).as_posix()
            if len(rel_folder.parts) < 1 or (name.startswith(".") and name != MARKER):
                continue
            found[rel] = hashlib.sha256((Path(folder) / name).read_bytes()).hexdigest()
    return found


def listed(content: dict[str, Any]) -> dict[str, str]:
    """`model/path` -> sha256 as a `/v1/content` body lists them."""
    return {f"{m}/{p}": sha for m, item in content["models"].items() for p, _size, sha in item["files"]}


def held(program: Program) -> dict[str, Any]:
    data: dict[str, Any] = get_json(program.url + "/v1/held")
    return data


class Watch:
    """Polls the server's content and the agents' held state; every `synced` seen is checked on disk."""

    def __init__(self, source: Program, agents: dict[str, tuple[Program, Path]]) -> None:
        self.source = source
        self.agents = agents
        self.contents: dict[str, dict[str, Any]] = {}  # every generation the server was seen to publish
        self.synced_checks = 0

    def _record(self) -> None:
        content = get_json(self.source.url + "/v1/content")
        self.contents[content["generation"]] = content

    def poll(self) -> None:
        self._record()
        for name, (program, root) in self.agents.items():
            before = held(program)
            on_disk = tree(root)
            after = held(program)
            self._record()  # what the agent copied may have been published since the first read
            # Every file an agent holds is one the server listed (for that path) at some time.
            ever = {(k, v) for c in self.contents.values() for k, v in listed(c).items()}
            stray = {k: v for k, v in on_disk.items() if (k, v) not in ever}
            assert not stray, f"{name} holds files the server never listed: {stray}"
            if before["synced"] and after["synced"] and before["generation"] == after["generation"]:
                wanted = self.contents.get(before["source_generation"])
                if wanted is not None:
                    assert on_disk == listed(wanted), f"{name} says synced but its files differ"
                    self.synced_checks += 1

    def until(self, check: Callable[[], bool], what: str, timeout_s: float = CONVERGE_S) -> None:
        def polled() -> bool:
            self.poll()
            return check()

        wait_until(polled, timeout_s, what)

    def all_synced(self) -> bool:
        content = get_json(self.source.url + "/v1/content")
        return all(
            (h := held(p))["synced"] and h["source_generation"] == content["generation"]
            for p, _ in self.agents.values()
        )


# --- tests --------------------------------------------------------------------------------------------------


def test_agents_mirror_staging_and_removals(tmp_path: Path) -> None:
    source_root, a_root, b_root = tmp_path / "server", tmp_path / "a", tmp_path / "b"
    for folder in (source_root, a_root, b_root):
        folder.mkdir()
    weights = os.urandom(300_000)
    d1 = stage(source_root, "mnist", 1, {"model.onnx": weights, "extra/labels.txt": b"0\n1\n"})
    # Staging's leftovers never travel.
    (source_root / ".staging-mnist-dead").mkdir()
    (source_root / ".staging-mnist-dead" / "model.onnx").write_bytes(b"half")
    (source_root / "mnist" / "1" / ".partial").write_bytes(b"x")
    with (
        server(source_root, tmp_path) as srv,
        agent(srv.url, a_root, tmp_path, "a") as a,
        agent(srv.url, b_root, tmp_path, "b") as b,
    ):
        watch = Watch(srv, {"a": (a, a_root), "b": (b, b_root)})
        watch.until(watch.all_synced, "both agents synced")
        assert tree(a_root) == tree(b_root) == tree(source_root)
        assert "mnist/1/.staged.json" in tree(a_root) and "mnist/1/.partial" not in tree(a_root)
        assert not (a_root / ".staging-mnist-dead").exists()
        assert held(a)["models"]["mnist"]["versions"] == {"1": d1}

        # A new version (its weights repeat v1's: linked from the held copy, not downloaded again).
        served = get_json(srv.url + "/v1/stats")["files_served"]
        v1_times = {p: os.stat(a_root / "mnist" / p).st_mtime_ns for p in ("1", "1/extra", "1/model.onnx")}
        started_at = time.monotonic()
        d2 = stage(source_root, "mnist", 2, {"model.onnx": weights, "model.py": b"print(2)\n"})
        watch.until(
            lambda: (
                all(held(p)["models"]["mnist"]["versions"] == {"1": d1, "2": d2} for p in (a, b))
                and watch.all_synced()
            ),
            "version 2 on both agents",
        )
        took = time.monotonic() - started_at
        assert took < 10, f"version 2 took {took:.1f} s to reach both agents"
        assert tree(a_root) == tree(b_root) == tree(source_root)
        # Two agents, two new files each (model.py and the marker); model.onnx was linked.
        assert get_json(srv.url + "/v1/stats")["files_served"] - served == 4
        assert held(a)["files_linked"] >= 4  # config, v1's three files, v2's weights
        assert (
            os.stat(a_root / "mnist" / "2" / "model.onnx").st_ino
            == os.stat(a_root / "mnist" / "1" / "model.onnx").st_ino
        )
        # Triton reloads a version whose folder or files are newer than at its last load: version 1's
        # times must not move when version 2 arrives.
        assert {p: os.stat(a_root / "mnist" / p).st_mtime_ns for p in v1_times} == v1_times

        # A second model, then version 1 removed, then the second model removed.
        stage(source_root, "other", 3, {"w.bin": b"other"})
        watch.until(lambda: watch.all_synced() and "other/3/w.bin" in tree(b_root), "model other mirrored")
        unstage(source_root, "mnist", 1)
        watch.until(
            lambda: (
                watch.all_synced()
                and all(held(p)["models"]["mnist"]["versions"] == {"2": d2} for p in (a, b))
            ),
            "version 1 removed on both",
        )
        assert not (a_root / "mnist" / "1").exists() and tree(a_root) == tree(source_root)
        unstage(source_root, "other")
        watch.until(lambda: watch.all_synced() and not (b_root / "other").exists(), "model other removed")
        assert tree(a_root) == tree(b_root) == tree(source_root)
        assert sorted(os.listdir(a_root)) == ["mnist"]  # no build or trash folder left behind
        assert watch.synced_checks > 0
    for log in ("server.log", "a.log", "b.log"):
        text = (tmp_path / log).read_text()
        assert "Traceback" not in text, text
        assert "GET /v1" not in text  # no line per request


def test_a_source_changing_between_two_replicas_copies(tmp_path: Path) -> None:
    """The file is rewritten in place after the server listed it (mtime kept, so the server's cache still
    lists the old bytes): the agent that copies next must refuse it; once the server sees the new bytes,
    both agents converge on them. No agent ever holds bytes the server did not list."""
    source_root, a_root, b_root = tmp_path / "server", tmp_path / "a", tmp_path / "b"
    for folder in (source_root, a_root, b_root):
        folder.mkdir()
    old = os.urandom(1_500_000)  # two read chunks
    stage(source_root, "m", 1, {"model.onnx": old})
    weights = source_root / "m" / "1" / "model.onnx"
    st = os.stat(weights)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns - 60_000_000_000))  # old enough to be cached
    with server(source_root, tmp_path) as srv, agent(srv.url, a_root, tmp_path, "a") as a:
        watch = Watch(srv, {"a": (a, a_root)})
        watch.until(watch.all_synced, "agent a synced")
        listed_before = get_json(srv.url + "/v1/content")
        mtime = os.stat(weights).st_mtime_ns
        new = os.urandom(len(old))
        with open(weights, "r+b") as out:  # in place: same inode, same size
            out.write(new)
        os.utime(weights, ns=(mtime, mtime))
        time.sleep(3 * RESCAN_S)
        assert get_json(srv.url + "/v1/content") == listed_before  # the server still lists the old bytes

        with agent(srv.url, b_root, tmp_path, "b") as b:
            watch.agents["b"] = (b, b_root)
            watch.until(lambda: held(b)["error"] is not None, "agent b reports the mismatch")
            state = held(b)
            assert not state["synced"] and "m" not in state["models"], state
            assert "model.onnx" in state["error"], state
            assert "m/1/model.onnx" not in tree(b_root)
            for _ in range(10):  # it keeps refusing, and keeps nothing half-built
                watch.poll()
                time.sleep(0.1)
            assert held(a)["synced"] and tree(a_root) == listed(listed_before)

            os.utime(weights)  # the change becomes visible: the server hashes the file again
            watch.until(
                lambda: (
                    watch.all_synced() and listed(get_json(srv.url + "/v1/content")) != listed(listed_before)
                ),
                "both agents on the new bytes",
            )
            new_sha = hashlib.sha256(new).hexdigest()
            assert tree(a_root)["m/1/model.onnx"] == tree(b_root)["m/1/model.onnx"] == new_sha
            assert held(b)["error"] is None
    assert "changed since it was listed" in (tmp_path / "server.log").read_text()


class _LyingServer(http.server.BaseHTTPRequestHandler):
    """Lists one file and serves other bytes of the same size (what a corrupted transfer would look like)."""

    content = RepositoryContent(
        {"m": ModelContent("m", (FileEntry("1/w", 4, hashlib.sha256(b"good").hexdigest()),), {1: None})}
    )

    def do_GET(self) -> None:
        body = (self.content.to_json() if self.path.startswith("/v1/content") else "evil").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_agent_checks_every_download(tmp_path: Path) -> None:
    fake = http.server.ThreadingHTTPServer((HOST, 0), _LyingServer)
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        with agent(f"http://{HOST}:{fake.server_address[1]}", tmp_path / "a", tmp_path, "a") as a:
            wait_until(lambda: held(a)["error"], 10, "the agent's error")
            state = held(a)
            assert "sha256" in state["error"] and not state["synced"] and state["models"] == {}
            assert not (tmp_path / "a" / "m").exists()
    finally:
        fake.shutdown()
        fake.server_close()


def test_only_listed_files_are_served(tmp_path: Path) -> None:
    source_root = tmp_path / "server"
    source_root.mkdir()
    stage(source_root, "m", 1, {"model.onnx": b"weights"})
    (source_root / "m" / "1" / ".hidden").write_bytes(b"hidden")
    (source_root / ".staging-m-x").mkdir()
    (source_root / ".staging-m-x" / "model.onnx").write_bytes(b"half")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"secret")
    os.symlink(secret, source_root / "m" / "1" / "link")
    os.symlink(tmp_path, source_root / "m" / "2")
    os.symlink(tmp_path, source_root / "outside")
    with server(source_root, tmp_path) as srv:
        code, body, headers = raw_get(srv, "/v1/files/m/1/model.onnx")
        assert (code, body) == (200, b"weights")
        assert headers["x-sha256"] == hashlib.sha256(b"weights").hexdigest()
        assert headers["content-length"] == "7"
        assert raw_get(srv, "/v1/files/m/1/.staged.json")[0] == 200  # markers are served
        refused = [
            "/v1/files/m/../m/1/model.onnx",
            "/v1/files/m/1/../1/model.onnx",
            "/v1/files/m/%2e%2e/%2e%2e/secret.txt",
            "/v1/files/m/1/%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt",
            "/v1/files/%2e%2e/secret.txt",
            "/v1/files//etc/passwd",
            "/v1/files/m//etc/passwd",
            "/v1/files/m/%2fetc%2fpasswd",
            "/v1/files/m/1/.hidden",
            "/v1/files/.staging-m-x/model.onnx",
            "/v1/files/m/1/link",
            "/v1/files/m/2/secret.txt",
            "/v1/files/outside/secret.txt",
            "/v1/files/m/1/model.onnx%00",
            "/v1/files/m",
            "/v1/files/",
            "/v1/files/m/1/",
            "/../../etc/passwd",
        ]
        answers = {path: raw_get(srv, path) for path in refused}
        assert {path: code for path, (code, _b, _h) in answers.items()} == dict.fromkeys(refused, 404)
        assert all(b"secret" not in body for _c, body, _h in answers.values())
        stats = get_json(srv.url + "/v1/stats")
        assert stats["files_served"] == 2
        assert listed(get_json(srv.url + "/v1/content")) == {
            "m/1/model.onnx": hashlib.sha256(b"weights").hexdigest(),
            "m/1/.staged.json": hashlib.sha256((source_root / "m" / "1" / MARKER).read_bytes()).hexdigest(),
            "m/config.pbtxt": hashlib.sha256(b'name: "m"\n').hexdigest(),
        }


def test_long_poll_answers_on_change_or_at_the_timeout(tmp_path: Path) -> None:
    source_root = tmp_path / "server"
    source_root.mkdir()
    with server(source_root, tmp_path) as srv:
        first = get_json(srv.url + "/v1/content")
        assert first["models"] == {}
        started_at = time.monotonic()
        same = get_json(f"{srv.url}/v1/content?wait={first['generation']}&timeout=1")
        assert same == first and 0.9 <= time.monotonic() - started_at < 5
        result: dict[str, Any] = {}

        def poll() -> None:
            result["content"] = get_json(f"{srv.url}/v1/content?wait={first['generation']}&timeout=20")
            result["at"] = time.monotonic()

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        time.sleep(0.5)
        staged_at = time.monotonic()
        stage(source_root, "m", 1, {"w": b"w"})
        poller.join(15)
        assert "content" in result and list(result["content"]["models"]) == ["m"]
        assert result["at"] - staged_at < 5
        assert status(f"{srv.url}/v1/content?timeout=x") == 400


def test_a_restarted_agent_keeps_what_it_holds(tmp_path: Path) -> None:
    source_root, a_root = tmp_path / "server", tmp_path / "a"
    source_root.mkdir()
    a_root.mkdir()
    stage(source_root, "m", 1, {"model.onnx": os.urandom(200_000), "model.py": b"x"})
    stage(source_root, "n", 1, {"w": b"n"})
    with server(source_root, tmp_path) as srv:
        with agent(srv.url, a_root, tmp_path, "a") as a:
            wait_until(lambda: held(a)["synced"], CONVERGE_S, "agent synced", tmp_path / "a.log")
        inodes = {p: os.stat(a_root / p).st_ino for p in tree(a_root)}
        served = get_json(srv.url + "/v1/stats")["files_served"]
        # What a sidecar killed mid-round leaves behind in the emptyDir.
        (a_root / ".sync-m-killed" / "1").mkdir(parents=True)
        (a_root / ".sync-m-killed" / "1" / "model.onnx").write_bytes(b"half")
        (a_root / ".trash-sync-m-killed").mkdir()
        with agent(srv.url, a_root, tmp_path, "a") as a:
            wait_until(lambda: held(a)["synced"], CONVERGE_S, "restarted agent synced", tmp_path / "a.log")
            state = held(a)
        assert state["files_downloaded"] == 0 and state["models_built"] == 0
        assert get_json(srv.url + "/v1/stats")["files_served"] == served
        assert {p: os.stat(a_root / p).st_ino for p in tree(a_root)} == inodes
        assert sorted(os.listdir(a_root)) == ["m", "n"]


def _held_copy(root: Path, model: str, files: dict[str, bytes]) -> None:
    """What an agent's root holds after an earlier round (written directly)."""
    for rel, data in files.items():
        (root / model / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / model / rel).write_bytes(data)


def test_a_round_links_held_files_before_it_replaces_any(tmp_path: Path) -> None:
    """Model b's file changes while the new model c repeats b's old bytes: c must get the old bytes
    (linked before b is swapped), not whatever b holds after its swap."""
    from triton_operator.repository.manifest import plan_sync
    from triton_operator.repository.sync import Mirror, Source, fetch_content

    old, new = os.urandom(5000), os.urandom(5000)
    source_root, a_root = tmp_path / "server", tmp_path / "a"
    _held_copy(source_root, "b", {"config.pbtxt": b"b", "1/w": new})
    _held_copy(source_root, "c", {"config.pbtxt": b"c", "1/w": old})
    _held_copy(a_root, "b", {"config.pbtxt": b"b", "1/w": old})
    with server(source_root, tmp_path) as srv:
        mirror = Mirror(a_root, Source.parse(srv.url))
        wanted = fetch_content(mirror.source, None)
        plan = plan_sync(wanted, mirror.scan())
        assert [(r.entry.path, r.model, r.path) for b in plan.build if b.name == "c" for r in b.reuse] == [
            ("1/w", "b", "1/w")
        ]
        done = mirror.apply(plan)
        assert not done.problems
        assert mirror.scan() == wanted
        assert (a_root / "c" / "1" / "w").read_bytes() == old and (
            a_root / "b" / "1" / "w"
        ).read_bytes() == new


def test_files_are_copied_where_links_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from triton_operator.repository import manifest, sync

    source_root, a_root = tmp_path / "server", tmp_path / "a"
    _held_copy(source_root, "m", {"config.pbtxt": b"m", "1/w": b"one", "2/w": b"two"})
    _held_copy(a_root, "m", {"config.pbtxt": b"m", "1/w": b"one"})
    held_time = os.stat(a_root / "m" / "1" / "w").st_mtime_ns - 10_000_000_000
    os.utime(a_root / "m" / "1" / "w", ns=(held_time, held_time))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)  # the agent calls os.link
    with server(source_root, tmp_path) as srv:
        mirror = sync.Mirror(a_root, sync.Source.parse(srv.url))
        wanted = sync.fetch_content(mirror.source, None)
        done = mirror.apply(manifest.plan_sync(wanted, mirror.scan()))
        assert not done.problems and mirror.scan() == wanted
        assert (mirror.counters.copied, mirror.counters.linked, mirror.counters.downloaded) == (2, 0, 1)
        assert os.stat(a_root / "m" / "1" / "w").st_mtime_ns == held_time


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (
            ["-m", "triton_operator.cli", "repository", "sync", "--source", "ftp://x", "--root", "R"],
            "http://",
        ),
        (
            [
                "-m",
                "triton_operator.repository",
                "sync",
                "--source",
                "http://h:1",
                "--root",
                "R",
                "--port",
                "BUSY",
            ],
            "listen",
        ),
        (
            ["-m", "triton_operator.cli", "repository", "serve", "--root", "R", "--rescan-interval", "0"],
            "interval",
        ),
        (["-m", "triton_operator.repository", "serve", "--root", "R", "--port", "BUSY"], "cannot listen"),
    ],
)
def test_bad_arguments_end_with_one_line(tmp_path: Path, args: list[str], problem: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)])}
    with contextlib.closing(socket.socket()) as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        args = [
            a.replace("BUSY", port).replace("R", str(tmp_path)) if a in ("BUSY", "R") else a for a in args
        ]
        done = subprocess.run(
            [sys.executable, *args, "--address", HOST], env=env, capture_output=True, text=True, timeout=30
        )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0], done.stderr


def test_a_model_that_does_not_fit_is_refused_before_any_download(tmp_path: Path) -> None:
    from triton_operator.repository import manifest, sync

    source_root, a_root = tmp_path / "server", tmp_path / "a"
    _held_copy(source_root, "small", {"config.pbtxt": b"s", "1/w": b"s" * 100})
    _held_copy(source_root, "big", {"config.pbtxt": b"b", "1/w": os.urandom(2_000_000)})
    a_root.mkdir()
    with server(source_root, tmp_path) as srv:
        mirror = sync.Mirror(a_root, sync.Source.parse(srv.url), capacity_bytes=1_000_000)
        done = mirror.apply(manifest.plan_sync(sync.fetch_content(mirror.source, None), mirror.scan()))
        assert [b.name for b in done.built] == ["small"]
        assert (
            len(done.problems) == 1
            and done.problems[0].startswith("model big: ")
            and "--capacity-bytes" in (done.problems[0])
        )
        assert get_json(srv.url + "/v1/stats")["files_served"] == 2  # small's two files, none of big's
        assert sorted(os.listdir(a_root)) == ["small"]


def test_fresh_content_includes_what_was_just_staged(tmp_path: Path) -> None:
    """`?fresh=1` scans for the asking (the operator asks so before it loads a model on a pod)."""
    source_root = tmp_path / "server"
    source_root.mkdir()
    args = ["serve", "--root", str(source_root), "--rescan-interval", "600"]  # no timed scan after the first
    with started(args, tmp_path / "server.log") as srv:
        assert get_json(srv.url + "/v1/content")["models"] == {}
        digest = stage(source_root, "m", 1, {"w": b"w"})
        assert get_json(srv.url + "/v1/content")["models"] == {}  # the next timed scan is minutes away
        fresh = get_json(srv.url + "/v1/content?fresh=1")
        assert fresh["models"]["m"]["versions"] == {"1": digest}
        assert get_json(srv.url + "/v1/content") == fresh
