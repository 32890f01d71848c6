"""Pure parts of the staging program: configs, artifact layout, archives, exit codes, markers."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from triton_operator.api.tritonmodel import DeclaredConfig
from triton_operator.staging.configs import base_config_text, final_config_text
from triton_operator.staging.errors import PERMANENT_EXIT_CODES, ExitCode, StagingError, reason_for_exit_code
from triton_operator.staging.http import file_name, redact
from triton_operator.staging.layout import split_artifact, unpack

from model_builders.config import parse_config

pytestmark = pytest.mark.unit

DECLARED = DeclaredConfig.model_validate(
    {
        "backend": "python",
        "maxBatchSize": 8,
        "inputs": [{"name": "x", "dataType": "FP32", "dims": [-1, 3]}],
        "outputs": [{"name": "y", "dataType": "INT64", "dims": [1]}],
        "dynamicBatching": {"preferredBatchSizes": [2, 4], "maxQueueDelayMicroseconds": 100},
        "instanceGroups": [{"kind": "CPU", "count": 2}],
        "parameters": {"k": "v"},
    }
)
ARTIFACT = (
    'name: "built_as_other" platform: "onnxruntime_onnx" max_batch_size: 0 '
    "version_policy { latest { num_versions: 3 } }"
)


def test_declared_config_wins_and_is_named_after_the_model() -> None:
    cfg = parse_config(base_config_text("mnist", DECLARED, ARTIFACT))
    assert (cfg.name, cfg.backend, cfg.platform, cfg.max_batch_size) == ("mnist", "python", "", 8)
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("x", 11, [-1, 3])]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(2, 2)]  # KIND_CPU
    assert cfg.parameters["k"].string_value == "v"


def test_artifact_config_is_renamed_and_versions_are_ours() -> None:
    base = base_config_text("mnist", None, ARTIFACT)
    cfg = parse_config(final_config_text(base, [3, 1, 3]))
    assert cfg.name == "mnist" and cfg.platform == "onnxruntime_onnx"
    assert list(cfg.version_policy.specific.versions) == [1, 3]
    assert not cfg.version_policy.HasField("latest")


@pytest.mark.parametrize(
    ("declared", "artifact", "text"),
    [
        (None, None, "no config.pbtxt"),
        (None, "name: 'x' max_batch_size: -1", "max_batch_size"),
        (None, "not a config {", "invalid"),
        (
            DeclaredConfig.model_validate(
                {"backend": "python", "maxBatchSize": 2, "dynamicBatching": {"preferredBatchSizes": [4]}}
            ),
            None,
            "preferred_batch_size 4",
        ),
    ],
)
def test_rejected_configs(declared: DeclaredConfig | None, artifact: str | None, text: str) -> None:
    with pytest.raises(StagingError) as info:
        base_config_text("m", declared, artifact)
    assert info.value.code == ExitCode.CONFIG_REJECTED and text in str(info.value)
    assert info.value.line().startswith("ConfigRejected: ") and "\n" not in info.value.line()


def test_exit_codes_and_reasons() -> None:
    assert PERMANENT_EXIT_CODES == (2, 11, 12, 13, 14, 15, 16)
    assert reason_for_exit_code(13) == "DigestMismatch" and reason_for_exit_code(99) == "InternalError"
    assert reason_for_exit_code(10) == "SourceUnavailable"


def _layout(tmp_path: Path, files: dict[str, str], version: int = 1) -> tuple[Path, str | None]:
    src = tmp_path / "src"
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    out = tmp_path / "version"
    return out, split_artifact(src, version, out)


def test_layout_picks_the_requested_version(tmp_path: Path) -> None:
    out, config = _layout(
        tmp_path, {"config.pbtxt": "c", "1/a": "one", "2/a": "two", "manifest.json": "{}"}, 2
    )
    assert config == "c" and (out / "a").read_text() == "two"


def test_layout_single_version_is_renamed_and_plain_files_become_the_version(tmp_path: Path) -> None:
    out, _ = _layout(tmp_path / "a", {"config.pbtxt": "c", "7/a": "seven"}, 1)
    assert (out / "a").read_text() == "seven"
    out, config = _layout(tmp_path / "b", {"model.onnx": "bytes"})
    assert config is None and sorted(p.name for p in out.iterdir()) == ["model.onnx"]
    out, config = _layout(tmp_path / "c", {"wrapped/config.pbtxt": "c", "wrapped/1/m": "x"})
    assert config == "c" and (out / "m").read_text() == "x"


def test_layout_ambiguous_versions(tmp_path: Path) -> None:
    with pytest.raises(StagingError, match=r"holds versions 1, 2 but not 3: set spec\.version") as info:
        _layout(tmp_path, {"1/a": "", "2/a": ""}, 3)
    assert info.value.code == ExitCode.INVALID_ARTIFACT


def _tar(tmp_path: Path, members: list[tarfile.TarInfo]) -> Path:
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return path


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "a/../../evil"])
def test_unsafe_tar_paths_are_refused(tmp_path: Path, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.size = 1
    with pytest.raises(StagingError, match="unsafe path") as error:
        unpack(_tar(tmp_path, [info]), tmp_path / "out", space_left=100)
    assert error.value.code == ExitCode.INVALID_ARTIFACT
    assert not (tmp_path / "evil").exists()


def test_tar_links_and_oversize_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("m/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(StagingError, match="not a regular file"):
        unpack(_tar(tmp_path, [link]), tmp_path / "out", space_left=100)
    big = tarfile.TarInfo("m/big")
    big.size = 1000
    with pytest.raises(StagingError, match="needs 1000 bytes but only 999") as error:
        unpack(_tar(tmp_path, [big]), tmp_path / "out2", space_left=999)
    assert error.value.code == ExitCode.TOO_LARGE


def test_zip_unpacks_and_bad_archives_are_invalid(tmp_path: Path) -> None:
    path = tmp_path / "m.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("m/config.pbtxt", "c")
        zf.writestr("m/1/model.py", "x")
    assert unpack(path, tmp_path / "out", space_left=100) == 2
    assert (tmp_path / "out/m/1/model.py").read_text() == "x"
    (tmp_path / "bad.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(StagingError) as error:
        unpack(tmp_path / "bad.tar.gz", tmp_path / "out3", space_left=100)
    assert error.value.code == ExitCode.INVALID_ARTIFACT


def test_urls_are_redacted_and_named() -> None:
    url = "https://user:pw@host.example:8443/a/model%20x.onnx?X-Amz-Signature=abc"
    assert redact(url) == "https://host.example:8443/a/model%20x.onnx"
    assert file_name(url) == "model x.onnx"
    with pytest.raises(StagingError, match="end the URL's path with the file name"):
        file_name("https://host/")
