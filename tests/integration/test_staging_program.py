"""`triton-operator stage` as the Job runs it: a real S3 server (moto), a real HTTP server, folders.

Loopback addresses 127.40.0.1-30 only. Each run is a real subprocess; failures must leave the repository
byte for byte as it was and say what to fix in one line, on stderr and in the termination log.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import tritonclient.http as tclient
from triton_operator.staging.errors import ExitCode

from model_builders.config import parse_config
from model_builders.publish import publish
from model_builders.repository import ModelEntry, write_entry
from model_builders.targets import FolderTarget, S3Target
from sandbox.tritonserver import run_tritonserver
from tests.support.s3server import FAKE_AWS_ENV, run_s3_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "models"
# Credentials the staging runs use: moto accepts any; the tests check they are never printed.
SECRET = "s3cr3t-Staging-Key-9f2c"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIASTAGINGTEST", "AWS_SECRET_ACCESS_KEY": SECRET}
CONFIG = """
name: "addone"
backend: "python"
input { name: "INPUT0" data_type: TYPE_FP32 dims: [4] }
output { name: "OUTPUT0" data_type: TYPE_FP32 dims: [4] }
"""
MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (x + {add}).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""


def build_model(repo: Path, add: int = 1, version: int = 1) -> Path:
    """REPO/addone: a python-backend model adding `add` to its input."""
    entry = ModelEntry(parse_config(CONFIG), version, {"model.py": MODEL_PY.format(add=add).encode()})
    return write_entry(repo, entry)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under a folder with its bytes (None for folders)."""
    return {
        p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
    }


def stage(
    spec: dict[str, Any],
    repo: Path,
    *,
    env: dict[str, str] | None = None,
    capacity: int | None = None,
    source_root: Path | None = None,
    termination_log: Path | None = None,
    remove: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`triton-operator stage [--remove]` as a subprocess (python -m triton_operator)."""
    argv = [
        sys.executable,
        "-m",
        "triton_operator",
        "stage",
        "--spec",
        json.dumps(spec),
        "--repository",
        str(repo),
    ]
    argv += ["--termination-log", str(termination_log or repo.parent / "termination-log")]
    if capacity is not None:
        argv += ["--capacity-bytes", str(capacity)]
    if source_root is not None:
        argv += ["--source-root", str(source_root)]
    if remove:
        argv.append("--remove")
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    run_env = {**base, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}", **(env or {})}
    return subprocess.run(argv, capture_output=True, text=True, env=run_env, timeout=120)


def result_of(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1, run.stdout
    data: dict[str, Any] = json.loads(lines[0])
    return data


def assert_failed(run: subprocess.CompletedProcess[str], code: ExitCode, *words: str, log: Path) -> str:
    """Exit code, one line on stderr naming the problem, the same line in the termination log."""
    assert run.returncode == int(code), run.stderr
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1, run.stderr
    line = run.stderr.strip()
    for word in words:
        assert word in line, line
    assert log.read_text().strip() == line
    assert SECRET not in run.stderr
    return line


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with run_s3_server("127.40.0.1") as endpoint:
        client = _s3(endpoint)
        client.create_bucket(Bucket=BUCKET)
        yield endpoint


def _s3(endpoint: str) -> Any:
    """A boto3 client of the test itself (moto's fake credentials)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


@pytest.fixture(scope="module")
def published(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """addone (adds 1) published to s3://models/addone/v1; its s3 source with digest."""
    work = tmp_path_factory.mktemp("published")
    model = build_model(work / "repo")
    with _aws_env():
        manifest = publish(model, S3Target(BUCKET, "addone/v1"), endpoint_url=s3_endpoint)
    return {
        "s3": {
            "bucket": BUCKET,
            "prefix": "addone/v1",
            "endpoint": s3_endpoint,
            "credentialsSecret": {"name": "s3"},
        },
        "digest": manifest.digest,
    }


@contextlib.contextmanager
def _aws_env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in FAKE_AWS_ENV}
    os.environ.update(FAKE_AWS_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _spec(source: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"modelName": "addone", "version": 1, "source": source, **extra}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


def test_stage_from_s3_writes_the_version_and_config(repo: Path, published: dict[str, Any]) -> None:
    run = stage(_spec(published), repo, env=CREDENTIALS)
    result = result_of(run)
    assert result["skipped"] is False and result["digest"] == published["digest"]
    assert result["model"] == "addone" and result["version"] == 1 and result["bytes"] > 0
    assert (repo / "addone/1/model.py").read_text() == MODEL_PY.format(add=1)
    config = parse_config((repo / "addone/config.pbtxt").read_text())
    assert config.name == "addone" and list(config.version_policy.specific.versions) == [1]
    marker = json.loads((repo / "addone/1/.staged.json").read_text())
    assert marker["digest"] == published["digest"] and marker["source"]["s3"]["prefix"] == "addone/v1"
    # Nothing else: no temp folders, no manifest.json in the repository.
    assert sorted(snapshot(repo)) == [
        "addone",
        "addone/1",
        "addone/1/.staged.json",
        "addone/1/model.py",
        "addone/config.pbtxt",
    ]
    for text in (run.stdout, run.stderr, json.dumps(marker)):
        assert SECRET not in text


def test_rerun_is_a_fast_no_op_without_s3_and_config_change_rewrites_only_the_config(
    repo: Path, tmp_path: Path
) -> None:
    with run_s3_server("127.40.0.2") as endpoint:
        client = _s3(endpoint)
        client.create_bucket(Bucket=BUCKET)
        with _aws_env():
            manifest = publish(build_model(tmp_path / "src"), S3Target(BUCKET, "m/v1"), endpoint_url=endpoint)
        source = {
            "s3": {
                "bucket": BUCKET,
                "prefix": "m/v1",
                "endpoint": endpoint,
                "credentialsSecret": {"name": "s"},
            },
            "digest": manifest.digest,
        }
        assert result_of(stage(_spec(source), repo, env=CREDENTIALS))["skipped"] is False
    before = snapshot(repo)
    model_mtime = (repo / "addone/1/model.py").stat().st_mtime_ns

    # The S3 server is gone: a re-run that tried to download would fail.
    started = time.monotonic()
    again = result_of(stage(_spec(source), repo, env=CREDENTIALS))
    assert again["skipped"] is True and again["configUpdated"] is False
    assert time.monotonic() - started < 15
    assert snapshot(repo) == before

    declared = {
        "backend": "python",
        "maxBatchSize": 8,
        "inputs": [{"name": "INPUT0", "dataType": "FP32", "dims": [4]}],
        "outputs": [{"name": "OUTPUT0", "dataType": "FP32", "dims": [4]}],
        "dynamicBatching": {"maxQueueDelayMicroseconds": 500},
    }
    changed = result_of(stage(_spec(source, config=declared), repo, env=CREDENTIALS))
    assert changed["skipped"] is True and changed["configUpdated"] is True
    config = parse_config((repo / "addone/config.pbtxt").read_text())
    assert config.max_batch_size == 8 and config.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(config.version_policy.specific.versions) == [1]
    assert (repo / "addone/1/model.py").stat().st_mtime_ns == model_mtime
    after = snapshot(repo)
    assert {k for k in after if after[k] != before.get(k)} == {"addone/config.pbtxt", "addone/1/.staged.json"}

    # Dropping the declared config goes back to the artifact's, still without S3.
    reverted = result_of(stage(_spec(source), repo, env=CREDENTIALS))
    assert reverted["configUpdated"] is True and snapshot(repo) == before


@pytest.fixture
def staged_repo(repo: Path, published: dict[str, Any]) -> Path:
    """A repository that already serves addone version 1 (so failures have something to spoil)."""
    result_of(stage(_spec(published), repo, env=CREDENTIALS))
    return repo


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        (
            {"digest": "sha256:" + "0" * 64},
            ExitCode.DIGEST_MISMATCH,
            ("DigestMismatch", "sha256:" + "0" * 64),
        ),
        ({"s3.prefix": "addone/nothing-here"}, ExitCode.SOURCE_NOT_FOUND, ("SourceNotFound", "publish")),
        ({"s3.bucket": "no-such-bucket"}, ExitCode.SOURCE_NOT_FOUND, ("no-such-bucket", "does not exist")),
    ],
)
def test_s3_failures_leave_the_repository_unchanged(
    staged_repo: Path,
    published: dict[str, Any],
    change: dict[str, str],
    code: ExitCode,
    words: tuple[str, ...],
) -> None:
    source = json.loads(json.dumps(published))
    for path, value in change.items():
        node = source
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    before = snapshot(staged_repo)
    log = staged_repo.parent / "termination-log"
    # Version 2 so nothing can be skipped: the run must reach S3.
    run = stage(_spec(source, version=2), staged_repo, env=CREDENTIALS, termination_log=log)
    assert_failed(run, code, *words, log=log)
    assert snapshot(staged_repo) == before


def test_too_large_is_refused_before_downloading(staged_repo: Path, published: dict[str, Any]) -> None:
    before = snapshot(staged_repo)
    used = sum(len(v) for v in before.values() if v is not None)
    log = staged_repo.parent / "termination-log"
    run = stage(
        _spec(published, version=2), staged_repo, env=CREDENTIALS, capacity=used + 10, termination_log=log
    )
    line = assert_failed(
        run, ExitCode.TOO_LARGE, "TooLarge", "only 10 bytes", "spec.modelRepository.size", log=log
    )
    assert "needs " in line and f"size is {used + 10} bytes" in line
    assert snapshot(staged_repo) == before


def test_wrong_credentials_are_access_denied(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto checks signatures against its IAM users only when told to; with no user, every key is unknown.
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    with run_s3_server("127.40.0.4") as endpoint:
        monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
        source = {
            "s3": {
                "bucket": BUCKET,
                "prefix": "m/v1",
                "endpoint": endpoint,
                "credentialsSecret": {"name": "s"},
            }
        }
        log = tmp_path / "log"
        run = stage(_spec(source), repo, env=CREDENTIALS, termination_log=log)
        assert_failed(run, ExitCode.ACCESS_DENIED, "AccessDenied", "credentialsSecret", log=log)
    assert snapshot(repo) == {}


def test_missing_credentials_env_is_access_denied(repo: Path, published: dict[str, Any]) -> None:
    log = repo.parent / "log"
    run = stage(_spec(published), repo, env={}, termination_log=log)
    assert_failed(run, ExitCode.ACCESS_DENIED, "AWS_SECRET_ACCESS_KEY", "Secret", log=log)
    assert snapshot(repo) == {}


# --- HTTP ----------------------------------------------------------------------------------------


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_server(folder: Path, address: str) -> Iterator[tuple[str, list[str]]]:
    """A real http.server serving `folder`; yields (base URL, paths requested)."""
    requests: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer((address, 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _tar_gz(model_dir: Path, dest: Path) -> str:
    """model_dir packed as dest (.tar.gz, top folder = the model's name); returns its sha256."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(model_dir, arcname=model_dir.name)
    dest.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def test_stage_from_http_archive_and_refuse_a_wrong_sha256(repo: Path, tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    sha = _tar_gz(build_model(tmp_path / "src", add=5), served / "addone.tar.gz")
    with http_server(served, "127.40.0.5") as (base, requests):
        url = f"{base}/addone.tar.gz"
        log = tmp_path / "log"
        wrong = stage(_spec({"http": {"url": url, "sha256": "1" * 64}}), repo, termination_log=log)
        assert_failed(
            wrong, ExitCode.DIGEST_MISMATCH, "DigestMismatch", sha, "spec.source.http.sha256", log=log
        )
        assert snapshot(repo) == {}

        missing = stage(
            _spec({"http": {"url": f"{base}/nope.tar.gz", "sha256": sha}}), repo, termination_log=log
        )
        assert_failed(missing, ExitCode.SOURCE_NOT_FOUND, "404", "spec.source.http.url", log=log)

        result = result_of(stage(_spec({"http": {"url": url, "sha256": sha}}), repo))
        assert result["digest"] == "sha256:" + sha and result["skipped"] is False
        assert (repo / "addone/1/model.py").read_text() == MODEL_PY.format(add=5)
        assert list(
            parse_config((repo / "addone/config.pbtxt").read_text()).version_policy.specific.versions
        ) == [1]
        count = len(requests)
        assert result_of(stage(_spec({"http": {"url": url, "sha256": sha}}), repo))["skipped"] is True
        assert len(requests) == count  # the re-run downloaded nothing


def test_stage_a_single_http_file_with_a_declared_config(repo: Path, tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    (served / "model.py").write_text(MODEL_PY.format(add=2))
    sha = hashlib.sha256((served / "model.py").read_bytes()).hexdigest()
    declared = {
        "backend": "python",
        "inputs": [{"name": "INPUT0", "dataType": "FP32", "dims": [4]}],
        "outputs": [{"name": "OUTPUT0", "dataType": "FP32", "dims": [4]}],
    }
    with http_server(served, "127.40.0.6") as (base, _):
        source = {"http": {"url": f"{base}/model.py", "sha256": sha}}
        log = tmp_path / "log"
        no_config = stage(_spec(source), repo, termination_log=log)
        assert_failed(no_config, ExitCode.CONFIG_REJECTED, "no config.pbtxt", "spec.config", log=log)
        assert snapshot(repo) == {}
        result_of(stage(_spec(source, config=declared), repo))
    assert (repo / "addone/1/model.py").read_text() == MODEL_PY.format(add=2)
    assert parse_config((repo / "addone/config.pbtxt").read_text()).backend == "python"


# --- folder (pvc) --------------------------------------------------------------------------------


def test_stage_from_a_folder_with_the_published_digest(repo: Path, tmp_path: Path) -> None:
    claim = tmp_path / "claim"
    manifest = publish(build_model(tmp_path / "src", add=3), FolderTarget(claim / "exports" / "addone"))
    source = {"pvc": {"claimName": "training", "path": "exports/addone"}, "digest": manifest.digest}
    result = result_of(stage(_spec(source), repo, source_root=claim))
    assert result["digest"] == manifest.digest and result["skipped"] is False
    assert (repo / "addone/1/model.py").read_text() == MODEL_PY.format(add=3)
    assert result_of(stage(_spec(source), repo, source_root=claim))["skipped"] is True

    before = snapshot(repo)
    log = tmp_path / "log"
    wrong = {**source, "digest": "sha256:" + "2" * 64}
    run = stage(_spec(wrong, version=2), repo, source_root=claim, termination_log=log)
    assert_failed(run, ExitCode.DIGEST_MISMATCH, "DigestMismatch", manifest.digest, log=log)
    missing = {"pvc": {"claimName": "training", "path": "exports/nothing"}}
    run = stage(_spec(missing, version=2), repo, source_root=claim, termination_log=log)
    assert_failed(run, ExitCode.SOURCE_NOT_FOUND, "exports/nothing", "spec.source.pvc.path", log=log)
    assert snapshot(repo) == before


# --- a real Triton serves what was staged ---------------------------------------------------------


def test_staged_versions_load_and_serve_on_a_real_tritonserver(repo: Path, tmp_path: Path) -> None:
    claim = tmp_path / "claim"
    build_model(claim / "v1", add=1)
    build_model(claim / "v2", add=2)
    for version in (1, 2):
        source = {"pvc": {"claimName": "c", "path": f"v{version}/addone"}}
        result_of(stage(_spec(source, version=version), repo, source_root=claim))
    config = parse_config((repo / "addone/config.pbtxt").read_text())
    assert list(config.version_policy.specific.versions) == [1, 2]

    x = np.arange(4, dtype=np.float32)
    with run_tritonserver(repo, address="127.40.0.10") as server:
        triton = tclient.InferenceServerClient(server.http_url)
        triton.load_model("addone")
        ready = triton.is_model_ready("addone", "1") and triton.is_model_ready("addone", "2")
        assert ready, server.log()[-3000:]
        index = {(m["name"], m.get("version")): m.get("state") for m in triton.get_model_repository_index()}
        assert index[("addone", "1")] == index[("addone", "2")] == "READY"
        for served, add in (("1", 1), ("2", 2)):
            tensor = tclient.InferInput("INPUT0", [4], "FP32")
            tensor.set_data_from_numpy(x)
            out = triton.infer("addone", [tensor], model_version=served).as_numpy("OUTPUT0")
            np.testing.assert_allclose(out, x + add)


# --- removal (--remove) ----------------------------------------------------------------------------


def _infer_addone(triton: tclient.InferenceServerClient, version: str) -> np.ndarray[Any, Any]:
    x = np.arange(4, dtype=np.float32)
    tensor = tclient.InferInput("INPUT0", [4], "FP32")
    tensor.set_data_from_numpy(x)
    out: np.ndarray[Any, Any] = triton.infer("addone", [tensor], model_version=version).as_numpy("OUTPUT0")
    return out - x


def _stage_versions(repo: Path, claim: Path, *versions: int) -> None:
    """addone at each version (adding the version number), staged from a folder."""
    for version in versions:
        build_model(claim / f"v{version}", add=version)
        source = {"pvc": {"claimName": "c", "path": f"v{version}/addone"}}
        result_of(stage(_spec(source, version=version), repo, source_root=claim))


def test_remove_one_version_keeps_the_other_serving_then_the_last_takes_the_model(
    repo: Path, tmp_path: Path
) -> None:
    _stage_versions(repo, tmp_path / "claim", 1, 2)
    spec = _spec({"pvc": {"claimName": "c", "path": "v1/addone"}}, version=1)
    with run_tritonserver(repo, address="127.40.0.11") as server:
        triton = tclient.InferenceServerClient(server.http_url)
        triton.load_model("addone")
        assert triton.is_model_ready("addone", "1") and triton.is_model_ready("addone", "2"), server.log()

        removed = result_of(stage(spec, repo, remove=True))
        assert removed == {
            "model": "addone",
            "version": 1,
            "removed": True,
            "remainingVersions": [2],
            "modelRemoved": False,
        }
        config = parse_config((repo / "addone/config.pbtxt").read_text())
        assert list(config.version_policy.specific.versions) == [2]
        paths = set(snapshot(repo))  # Triton's python backend may have added __pycache__ folders
        assert {"addone/2/model.py", "addone/2/.staged.json", "addone/config.pbtxt"} <= paths
        assert not [p for p in paths if p == "addone/1" or p.startswith(("addone/1/", ".trash-"))]
        # Reloading (what the operator does on a change) serves the remaining version only.
        triton.load_model("addone")
        assert triton.is_model_ready("addone", "2"), server.log()[-3000:]
        assert not triton.is_model_ready("addone", "1")
        np.testing.assert_allclose(_infer_addone(triton, "2"), 2)

    last = result_of(stage({**spec, "version": 2}, repo, remove=True))
    assert last["removed"] is True and last["modelRemoved"] is True and last["remainingVersions"] == []
    assert snapshot(repo) == {}

    again = result_of(stage({**spec, "version": 2}, repo, remove=True))
    assert again["removed"] is False and again["modelRemoved"] is False
    assert snapshot(repo) == {}
    log = repo.parent / "termination-log"
    assert json.loads(log.read_text()) == again  # the operator reads the result from here


def test_remove_finishes_what_a_killed_run_left(repo: Path, tmp_path: Path) -> None:
    _stage_versions(repo, tmp_path / "claim", 1, 3)
    # Killed after moving version 1 into the trash, before rewriting the config (the worst order).
    trash = repo / ".trash-addone-killed"
    trash.mkdir()
    os.rename(repo / "addone/1", trash / "version")
    spec = _spec({"pvc": {"claimName": "c", "path": "v1/addone"}}, version=1)
    result = result_of(stage(spec, repo, remove=True))
    assert result["removed"] is False and result["remainingVersions"] == [3]
    config = parse_config((repo / "addone/config.pbtxt").read_text())
    assert list(config.version_policy.specific.versions) == [3]
    assert not trash.exists() and not list(repo.glob(".trash-*"))


def test_remove_with_an_unreadable_config_is_refused_and_changes_nothing(repo: Path, tmp_path: Path) -> None:
    _stage_versions(repo, tmp_path / "claim", 1, 2)
    (repo / "addone/config.pbtxt").write_text("this is { not a config")
    before = snapshot(repo)
    log = tmp_path / "log"
    spec = _spec({"pvc": {"claimName": "c", "path": "v1/addone"}}, version=1)
    run = stage(spec, repo, remove=True, termination_log=log)
    assert_failed(run, ExitCode.CONFIG_REJECTED, "ConfigRejected", "config.pbtxt", "stage the model", log=log)
    assert snapshot(repo) == before
