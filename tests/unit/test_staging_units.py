"""Pure parts of the staging program: configs, artifact layout, archives, exit codes, markers."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import re
import tarfile
import zipfile
from pathlib import Path
from unittest import mock

import pytest
from triton_operator.api.tritonmodel import DeclaredConfig, HttpSource, S3Source
from triton_operator.staging import s3
from triton_operator.staging.configs import base_config_text, final_config_text
from triton_operator.staging.errors import PERMANENT_EXIT_CODES, ExitCode, StagingError, reason_for_exit_code
from triton_operator.staging.http import declared_length, file_name, redact
from triton_operator.staging.http import download as http_download
from triton_operator.staging.layout import split_artifact, unpack

from model_builders.config import parse_config
from model_builders.manifest import FileEntry, Manifest
from tests.support.fakes import FakeResponse

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


# --- regressions found by tests/unit/test_fuzz_parsers.py (issue 12: hostile input) --------------


def _raw_tar(tmp_path: Path, name: str, blocks: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(blocks + b"\0" * 1024)
    return path


def _header(name: str, kind: bytes, size: int, fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(fmt)


def _pax_tar(tmp_path: Path, pax: dict[str, str], data: bytes = b"x") -> Path:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("m/1/model.onnx")
        info.size, info.pax_headers = len(data), pax
        tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "pax.tar"
    path.write_bytes(out.getvalue())
    return path


def test_a_tar_member_with_a_negative_size_is_refused(tmp_path: Path) -> None:
    # A PAX size of -1000000 beside a 1000000-byte file summed to 0 bytes: the space check passed.
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        big = tarfile.TarInfo("m/1/big")
        big.size = 1_000_000
        tar.addfile(big, io.BytesIO(b"\0" * big.size))
        liar = tarfile.TarInfo("m/1/liar")
        liar.pax_headers = {"size": "-1000000"}
        tar.addfile(liar)
    (tmp_path / "a.tar").write_bytes(out.getvalue())
    for space_left in (1000, 10**7):
        with pytest.raises(StagingError) as error:
            unpack(tmp_path / "a.tar", tmp_path / f"out-{space_left}", space_left=space_left)
        assert not any((tmp_path / f"out-{space_left}").rglob("*"))
    assert error.value.code == ExitCode.INVALID_ARTIFACT and "negative size -1000000" in str(error.value)


@pytest.mark.timeout(30)
def test_a_tar_whose_negative_size_leads_back_to_an_earlier_header_is_refused_without_hanging(
    tmp_path: Path,
) -> None:
    # tarfile (before Python 3.11.14) seeks back to the first header and lists the members forever.
    path = _raw_tar(
        tmp_path,
        "loop.tar",
        _header("m/a", tarfile.REGTYPE, 5)
        + b"hello".ljust(512, b"\0")
        + _pax_tar(tmp_path, {"size": "-1536"}).read_bytes()[:1536],
    )
    with pytest.raises(StagingError, match="negative size -1536"):
        unpack(path, tmp_path / "out", space_left=10**6)


def test_a_huge_pax_header_is_refused_before_it_is_read_into_memory(tmp_path: Path) -> None:
    # 1.3 MB of .tar.gz declared a 300 MiB PAX header that tarfile reads whole (the Job's limit: 512 MiB).
    path = tmp_path / "bomb.tar.gz"
    with gzip.open(path, "wb") as out:
        out.write(_header("././@PaxHeader", tarfile.XHDTYPE, 300 << 20))
        for _ in range(300):
            out.write(b"0" * (1 << 20))
    with pytest.raises(StagingError, match="PAX or long-name header"):
        unpack(path, tmp_path / "out", space_left=10**6)


@pytest.mark.timeout(30)
def test_a_pax_header_of_digits_is_refused_before_tarfile_searches_it(tmp_path: Path) -> None:
    # tarfile before Python 3.11.10 (CVE-2024-6232) took 8 s on these 64 KiB, and minutes on a MiB.
    path = _raw_tar(
        tmp_path,
        "redos.tar",
        _header("././@PaxHeader", tarfile.XHDTYPE, 65536) + b"0" * 65536 + _header("m/f", tarfile.REGTYPE, 0),
    )
    with pytest.raises(StagingError, match="malformed PAX header"):
        unpack(path, tmp_path / "out", space_left=10**6)
    assert unpack(_pax_tar(tmp_path, {"comment": "1" * 64}), tmp_path / "ok", space_left=10) == 1


@pytest.mark.parametrize(
    ("pax", "what"),
    [
        ({"GNU.sparse.map": "x,y", "GNU.sparse.size": "1"}, "sparse map that is not numbers: ValueError"),
        ({"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}, "sparse 1.0 map missing: ValueError"),
    ],
)
def test_a_sparse_tar_member_is_refused(tmp_path: Path, pax: dict[str, str], what: str) -> None:
    with pytest.raises(StagingError, match="sparse file") as error:
        unpack(_pax_tar(tmp_path, pax), tmp_path / "out", space_left=10**6)
    assert error.value.code == ExitCode.INVALID_ARTIFACT, what


def test_an_old_gnu_sparse_member_at_the_end_is_refused_not_an_index_error(tmp_path: Path) -> None:
    header = bytearray(_header("m/s", tarfile.GNUTYPE_SPARSE, 0, tarfile.GNU_FORMAT))
    header[482] = 1  # "more sparse headers follow": tarfile read past the end (IndexError)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    (tmp_path / "s.tar").write_bytes(bytes(header))
    with pytest.raises(StagingError, match="sparse file"):
        unpack(tmp_path / "s.tar", tmp_path / "out", space_left=10**6)


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_a_chain_of_thousands_of_extension_headers_is_an_invalid_artifact(
    tmp_path: Path, kind: bytes
) -> None:
    # tarfile reads each next header recursively: RecursionError.
    record = b"11 a=bcdef\n" if kind == tarfile.XHDTYPE else b"a\0"
    link = _header("././@x", kind, len(record), tarfile.GNU_FORMAT) + record.ljust(512, b"\0")
    path = _raw_tar(tmp_path, "chain.tar", link * 3000 + _header("m/f", tarfile.REGTYPE, 0))
    with pytest.raises(StagingError, match="headers chained too deep") as error:
        unpack(path, tmp_path / "out", space_left=10**6)
    assert error.value.code == ExitCode.INVALID_ARTIFACT


def test_a_tar_member_path_with_a_nul_is_refused(tmp_path: Path) -> None:
    # A PAX path keeps its NUL; open() raised ValueError.
    with pytest.raises(StagingError, match="unsafe path"):
        unpack(_pax_tar(tmp_path, {"path": "m/a\x00b"}), tmp_path / "out", space_left=10**6)


def test_a_member_path_deeper_than_the_stack_is_refused(tmp_path: Path) -> None:
    # Path.mkdir(parents=True) recursed once per missing folder: RecursionError at 1500 folders.
    with pytest.raises(StagingError, match="1501 folders deep"):
        unpack(_pax_tar(tmp_path, {"path": "a/" * 1500 + "f"}), tmp_path / "out", space_left=10**6)


def test_a_corrupt_xz_tar_is_an_invalid_artifact(tmp_path: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:xz") as tar:
        info = tarfile.TarInfo("m/1/model.onnx")
        info.size = 100_000
        tar.addfile(info, io.BytesIO(bytes(range(256)) * 390 + b"x" * 160))
    raw = bytearray(out.getvalue())
    raw[200:260] = b"\xff" * 60  # lzma.LZMAError escaped
    (tmp_path / "c.tar").write_bytes(bytes(raw))
    with pytest.raises(StagingError, match="not a readable archive") as error:
        unpack(tmp_path / "c.tar", tmp_path / "out", space_left=10**6)
    assert error.value.code == ExitCode.INVALID_ARTIFACT


def test_an_archive_with_too_many_entries_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("triton_operator.staging.layout.MAX_ENTRIES", 10)
    empty = [tarfile.TarInfo(f"m/1/f{i}") for i in range(11)]  # empty files: 0 bytes, an inode each
    with pytest.raises(StagingError, match="more than 10 entries"):
        unpack(_tar(tmp_path, empty), tmp_path / "out", space_left=0)
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(11):
            zf.writestr(f"m/1/f{i}", b"")
    with pytest.raises(StagingError, match="more than 10 entries"):
        unpack(path, tmp_path / "out2", space_left=0)


def _zip(tmp_path: Path, method: int = zipfile.ZIP_STORED, data: bytes = b"x") -> bytearray:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        zf.writestr("m/1/model.onnx", data)
    return bytearray(out.getvalue())


def _central(raw: bytearray) -> int:
    return raw.find(b"PK\x01\x02")


def test_an_encrypted_zip_member_is_refused(tmp_path: Path) -> None:
    raw = _zip(tmp_path)
    raw[_central(raw) + 8] |= 0x1  # zipfile raised RuntimeError("... password required ...")
    (tmp_path / "e.zip").write_bytes(bytes(raw))
    with pytest.raises(StagingError, match=re.escape("encrypted 'm/1/model.onnx'")) as error:
        unpack(tmp_path / "e.zip", tmp_path / "out", space_left=100)
    assert error.value.code == ExitCode.INVALID_ARTIFACT


def test_a_zip_member_without_a_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo(""), b"x")  # ZipInfo.is_dir() raised IndexError on the empty name
    with pytest.raises(StagingError, match="unsafe path ''") as error:
        unpack(path, tmp_path / "out", space_left=100)
    assert error.value.code == ExitCode.INVALID_ARTIFACT


def test_a_zip_needing_a_newer_version_to_extract_is_an_invalid_artifact(tmp_path: Path) -> None:
    raw = _zip(tmp_path)
    raw[_central(raw) + 6] = 64  # "version 6.4 needed": zipfile raised NotImplementedError
    (tmp_path / "v.zip").write_bytes(bytes(raw))
    with pytest.raises(StagingError, match=re.escape("zip file version 6.4")) as error:
        unpack(tmp_path / "v.zip", tmp_path / "out", space_left=100)
    assert error.value.code == ExitCode.INVALID_ARTIFACT


def test_a_zip_with_an_unsupported_compression_method_is_refused(tmp_path: Path) -> None:
    raw = _zip(tmp_path)
    raw[_central(raw) + 10] = 99  # AES: zipfile raised NotImplementedError
    (tmp_path / "m.zip").write_bytes(bytes(raw))
    with pytest.raises(StagingError, match="with method 99"):
        unpack(tmp_path / "m.zip", tmp_path / "out", space_left=100)


def test_a_bzip2_zip_member_is_refused_before_it_inflates_in_memory(tmp_path: Path) -> None:
    # zipfile inflates bzip2 without bound: 905 bytes of zip took 2 GiB of memory on the first read,
    # whatever size the central directory declared.
    raw = _zip(tmp_path, zipfile.ZIP_BZIP2, b"\0" * 1_000_000)
    raw[_central(raw) + 24 : _central(raw) + 28] = (10).to_bytes(4, "little")  # declares 10 bytes
    (tmp_path / "b.zip").write_bytes(bytes(raw))
    with pytest.raises(StagingError, match="only stored and deflate"):
        unpack(tmp_path / "b.zip", tmp_path / "out", space_left=100)


def test_a_zip_member_inflating_past_its_declared_size_writes_no_more_than_declared(tmp_path: Path) -> None:
    raw = _zip(tmp_path, zipfile.ZIP_DEFLATED, b"\0" * 1_000_000)
    raw[_central(raw) + 24 : _central(raw) + 28] = (10).to_bytes(4, "little")
    (tmp_path / "d.zip").write_bytes(bytes(raw))
    with pytest.raises(StagingError, match="Bad CRC-32"):
        unpack(tmp_path / "d.zip", tmp_path / "out", space_left=100)
    assert (tmp_path / "out/m/1/model.onnx").stat().st_size <= 10


def test_a_zip_name_that_is_not_utf8_is_an_invalid_artifact(tmp_path: Path) -> None:
    raw = _zip(tmp_path)
    at = _central(raw)
    raw[at + 9] |= 0x08  # the "name is UTF-8" flag, on a name starting with 0xff: UnicodeDecodeError
    raw[at + 46] = 0xFF
    (tmp_path / "u.zip").write_bytes(bytes(raw))
    with pytest.raises(StagingError, match="not a readable archive") as error:
        unpack(tmp_path / "u.zip", tmp_path / "out", space_left=100)
    assert error.value.code == ExitCode.INVALID_ARTIFACT


def test_a_version_folder_named_with_a_superscript_digit_is_not_a_version(tmp_path: Path) -> None:
    # '²'.isdigit() is True and int('²') raises ValueError.
    out, config = _layout(tmp_path, {"config.pbtxt": "c", "1/a": "one", "²/a": "two"}, 1)
    assert config == "c" and (out / "a").read_text() == "one"
    out, _ = _layout(tmp_path / "b", {"²/a": "two"}, 1)  # not a version: the folder is the content
    assert (out / "a").read_text() == "two"


def test_an_artifact_config_that_is_not_utf8_is_rejected(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "1").mkdir(parents=True)
    (src / "1/model.onnx").write_bytes(b"x")
    (src / "config.pbtxt").write_bytes(b'name: "\xff\xfe"')  # read_text() raised UnicodeDecodeError
    with pytest.raises(StagingError, match="not UTF-8 text") as error:
        split_artifact(src, 1, tmp_path / "version")
    assert error.value.code == ExitCode.CONFIG_REJECTED


def test_a_config_error_quoting_a_huge_line_stays_short() -> None:
    with pytest.raises(StagingError) as error:
        base_config_text("m", None, "{ " * 100_000)  # protobuf quoted all 200 kB in the message
    assert error.value.code == ExitCode.CONFIG_REJECTED and len(str(error.value)) < 700


def _manifest_json(files: list[dict[str, object]], digest: str | None = None) -> bytes:
    entries = tuple(FileEntry(str(f["path"]), int(str(f["size"])), str(f["sha256"])) for f in files)
    data = {
        "model": "m",
        "versions": [1],
        "files": files,
        "digest": digest or Manifest("m", (1,), entries).digest,
    }
    return json.dumps(data).encode()


SHA = "0" * 64


@pytest.mark.parametrize(
    ("files", "text"),
    [
        ([{"path": "../../etc/cron.d/x", "size": 1, "sha256": SHA}], "unsafe path '../../etc/cron.d/x'"),
        ([{"path": "/etc/passwd", "size": 1, "sha256": SHA}], "unsafe path '/etc/passwd'"),
        ([{"path": "1/./../../x", "size": 1, "sha256": SHA}], "unsafe path"),
        ([{"path": "1/a\x00b", "size": 1, "sha256": SHA}], "unsafe path"),
        (
            [
                {"path": "1/big", "size": 10**12, "sha256": SHA},
                {"path": "1/x", "size": -(10**12), "sha256": SHA},
            ],
            "negative size",
        ),
        ([{"path": "1/a", "size": 1, "sha256": SHA}, {"path": "1/a", "size": 1, "sha256": SHA}], "twice"),
        (
            [{"path": "1/a", "size": 1, "sha256": SHA}, {"path": "1/a/b", "size": 1, "sha256": SHA}],
            "file and as a folder",
        ),
    ],
    ids=["dot-dot", "absolute", "dot-dot-inside", "nul", "negative-size", "twice", "file-and-folder"],
)
def test_a_manifest_path_leading_outside_the_model_folder_or_not_adding_up_is_refused(
    tmp_path: Path, files: list[dict[str, object]], text: str
) -> None:
    # The unsigned download wrote each file to dest / path: '../..' and absolute paths wrote anywhere.
    with pytest.raises(StagingError, match=re.escape(text)) as error:
        s3.parse_manifest(_manifest_json(files), where="s3://b/m/manifest.json")
    assert error.value.code == ExitCode.INVALID_ARTIFACT
    manifest = Manifest("m", (1,), tuple(FileEntry(str(f["path"]), int(str(f["size"])), SHA) for f in files))
    with mock.patch.object(s3, "_client") as client, pytest.raises(StagingError, match=re.escape(text)):
        s3.download(S3Source(bucket="bucket", prefix="m"), manifest, tmp_path / "dest")
    assert not client.called and not (tmp_path / "dest").exists()


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"model": "\xff"}', "is not UTF-8 text"),  # was InternalError (UnicodeDecodeError)
        (b"[" * 100_000 + b"]" * 100_000, "RecursionError"),  # was InternalError
        (
            b'{"model": "m", "versions": [1], "files": [{"path": "a", "size": Infinity, "sha256": ""}]}',
            "OverflowError",  # was InternalError
        ),
        (b"x" * (s3.MANIFEST_LIMIT + 1), "larger than"),
    ],
    ids=["not-utf8", "nested", "infinite-size", "too-large"],
)
def test_a_manifest_that_is_not_json_a_manifest_is_an_invalid_artifact(body: bytes, text: str) -> None:
    with pytest.raises(StagingError, match=text) as error:
        s3.parse_manifest(body, where="s3://b/m/manifest.json")
    assert error.value.code == ExitCode.INVALID_ARTIFACT


def test_a_published_manifest_still_parses() -> None:
    files = [
        {"path": "config.pbtxt", "size": 3, "sha256": SHA},
        {"path": "1/model.onnx", "size": 5, "sha256": SHA},
    ]
    manifest = s3.parse_manifest(_manifest_json(files), where="s3://b/m/manifest.json")
    assert [(f.path, f.size) for f in manifest.files] == [("config.pbtxt", 3), ("1/model.onnx", 5)]


@pytest.mark.parametrize(
    "url",
    [
        "https://host:abc/m.onnx",
        "https://[fd00::1/m.onnx",
        "https://host:99999/m.onnx",
        "https://hôst/m.onnx",
    ],
    ids=["port-not-a-number", "unclosed-bracket", "port-out-of-range", "not-ascii"],
)
def test_a_url_urllib_cannot_request_is_refused_not_a_crash(tmp_path: Path, url: str) -> None:
    # redact() and file_name() raised ValueError; urlopen() raised InvalidURL or UnicodeEncodeError.
    assert "user" not in redact(url.replace("https://", "https://user:pw@"))
    with pytest.raises(StagingError, match="not a valid URL") as error:
        file_name(url)
    assert error.value.code == ExitCode.SOURCE_NOT_FOUND
    with pytest.raises(StagingError, match="not a valid URL"):
        http_download(
            HttpSource(url=url, sha256=SHA), tmp_path / "m.onnx", space_left=10, sleep=lambda _: None
        )


@pytest.mark.parametrize("url", ["https://host/m%00.onnx", "https://host/" + "m" * 256], ids=["nul", "long"])
def test_a_url_file_name_that_cannot_be_a_file_is_refused(url: str) -> None:
    # open() raised ValueError for the NUL; a 256-byte name failed as SourceUnavailable, retried.
    with pytest.raises(StagingError, match="cannot name the file") as error:
        file_name(url)
    assert error.value.code == ExitCode.INVALID_ARTIFACT


def test_a_content_length_of_unicode_digits_is_ignored_not_a_crash(tmp_path: Path) -> None:
    # '²'.isdigit() is True (headers are latin-1) and int('²') raised ValueError.
    assert declared_length("²") is None and declared_length(" 12 ") == 12 and declared_length("-1") is None
    body = b"model"
    response = FakeResponse({"Content-Length": "²"}, [body])
    with mock.patch("urllib.request.urlopen", lambda *_, **__: response):
        source = HttpSource(url="https://host/m.onnx", sha256=hashlib.sha256(body).hexdigest())
        assert http_download(source, tmp_path / "m.onnx", space_left=10) == 5


@pytest.mark.parametrize(
    "failure",
    [http.client.IncompleteRead(b"par"), ValueError("invalid literal for int() with base 16: 'zz'")],
    ids=["chunked-body-cut-short", "chunk-size-not-hex"],
)
def test_a_malformed_http_answer_is_a_transient_failure(tmp_path: Path, failure: Exception) -> None:
    # http.client raised these past the OSError handler: InternalError instead of SourceUnavailable.
    responses = iter(FakeResponse({}, [b"par"], failure) for _ in range(2))
    with (
        mock.patch("urllib.request.urlopen", lambda *_, **__: next(responses)),
        pytest.raises(StagingError, match="malformed HTTP") as error,
    ):
        http_download(
            HttpSource(url="https://host/m.onnx", sha256=SHA),
            tmp_path / "m.onnx",
            space_left=10,
            attempts=2,
            sleep=lambda _: None,
        )
    assert error.value.code == ExitCode.SOURCE_UNAVAILABLE and not (tmp_path / "m.onnx").exists()
