"""repository/manifest.py: hashes, the dotfile and marker rules, the wire format, scan and plan_sync."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from triton_operator.repository.manifest import (
    FileEntry,
    HashCache,
    ModelContent,
    RepositoryContent,
    ScanUnstable,
    is_listed_path,
    plan_sync,
    safe_join,
    scan,
)

pytestmark = pytest.mark.unit

A = "a" * 64
B = "b" * 64
C = "c" * 64


def model(
    name: str, *files: tuple[str, int, str], versions: dict[int, str | None] | None = None
) -> ModelContent:
    return ModelContent(
        name, tuple(FileEntry(*f) for f in files), versions if versions is not None else {1: None}
    )


def repo(*models: ModelContent) -> RepositoryContent:
    return RepositoryContent({m.name: m for m in models})


# --- hashes -----------------------------------------------------------------------------------------------


def test_hash_does_not_depend_on_the_order_of_entries() -> None:
    one = model("m", ("1/a", 1, A), ("config.pbtxt", 2, B))
    two = model("m", ("config.pbtxt", 2, B), ("1/a", 1, A))
    assert one.hash == two.hash and one.hash.startswith("sha256:") and len(one.hash) == 71


@pytest.mark.parametrize(
    ("other", "why"),
    [
        (model("m", ("1/a", 2, A), ("config.pbtxt", 2, B)), "size"),
        (model("m", ("1/a", 1, C), ("config.pbtxt", 2, B)), "sha256"),
        (model("m", ("1/b", 1, A), ("config.pbtxt", 2, B)), "path"),
        (model("m", ("1/a", 1, A)), "a file less"),
        (model("m", ("1/a", 1, A), ("config.pbtxt", 2, B), versions={1: None, 2: None}), "an empty version"),
    ],
)
def test_hash_changes_with_any_field(other: ModelContent, why: str) -> None:
    assert other.hash != model("m", ("1/a", 1, A), ("config.pbtxt", 2, B)).hash, why


def test_hash_is_stable_across_releases() -> None:
    # The agents and the server may run different images during an upgrade: the hash must not move.
    m = model("m", ("1/a", 1, A), versions={1: "sha256:x"})
    expected = "sha256:" + hashlib.sha256(f"{A} 1 1/a\n1/\n".encode()).hexdigest()
    assert m.hash == expected


def test_generation_depends_on_names_and_hashes() -> None:
    a = repo(model("m", ("1/a", 1, A)))
    assert a.generation == repo(model("m", ("1/a", 1, A))).generation
    assert a.generation != repo(model("n", ("1/a", 1, A))).generation
    assert a.generation != repo(model("m", ("1/a", 1, B))).generation
    assert a.generation != repo().generation


# --- paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "listed"),
    [
        ("config.pbtxt", True),
        ("1/model.onnx", True),
        ("1/sub/deep/file.bin", True),
        ("labels/x.txt", True),
        ("1/.staged.json", True),  # the marker, mirrored
        ("12/.staged.json", True),
        (".staged.json", False),  # a marker only in a version folder
        ("1/sub/.staged.json", False),
        ("x/.staged.json", False),
        ("01/.staged.json", False),
        ("1/.hidden", False),
        (".staging-m-x/1/model.onnx", False),
        ("1/.git/config", False),
        ("../etc/passwd", False),
        ("1/../../x", False),
        ("./config.pbtxt", False),
        ("/etc/passwd", False),
        ("1//a", False),
        ("1/a/", False),
        ("", False),
        ("1\\..\\x", False),
        ("a\0b", False),
    ],
)
def test_listed_paths(path: str, listed: bool) -> None:
    assert is_listed_path(path) is listed


@pytest.mark.parametrize(
    ("model_name", "path"), [("..", "x"), (".trash-x", "1/a"), ("m", "../x"), ("a/b", "c")]
)
def test_safe_join_refuses_what_is_not_listed(tmp_path: Path, model_name: str, path: str) -> None:
    with pytest.raises(ValueError):
        safe_join(tmp_path, model_name, path)


# --- wire format ------------------------------------------------------------------------------------------


def test_wire_format_round_trip() -> None:
    content = repo(
        model(
            "m",
            ("1/.staged.json", 10, A),
            ("1/model.onnx", 5, B),
            ("config.pbtxt", 3, C),
            versions={1: "sha256:d"},
        ),
        model("e", ("config.pbtxt", 3, C), versions={1: None}),
    )
    data = json.loads(content.to_json())
    assert data["generation"] == content.generation
    assert data["models"]["m"] == {
        "hash": content.models["m"].hash,
        "versions": {"1": "sha256:d"},
        "files": [["1/.staged.json", 10, A], ["1/model.onnx", 5, B], ["config.pbtxt", 3, C]],
    }
    assert data["models"]["e"]["versions"] == {"1": None}
    again = RepositoryContent.from_json(content.to_json())
    assert again == content and again.generation == content.generation


def _tampered(change: str) -> str:
    content = repo(model("m", ("1/a", 1, A), ("config.pbtxt", 2, B)))
    data = json.loads(content.to_json())
    m = data["models"]["m"]
    if change == "hash":
        m["files"][0][2] = C
    elif change == "generation":
        data["generation"] = "sha256:" + "0" * 64
    elif change == "traversal":
        m["files"][0][0] = "../../etc/cron.d/x"
    elif change == "absolute":
        m["files"][0][0] = "/etc/passwd"
    elif change == "dotfile":
        m["files"][0][0] = "1/.bashrc"
    elif change == "model name":
        data["models"] = {"../x": m}
    elif change == "version":
        m["versions"] = {"one": None}
    elif change == "sha":
        m["files"][0][2] = "XYZ"
    elif change == "shape":
        m["files"] = [["1/a", 1]]
    else:
        data = {"models": 3}
    return json.dumps(data)


@pytest.mark.parametrize(
    "change",
    [
        "hash",
        "generation",
        "traversal",
        "absolute",
        "dotfile",
        "model name",
        "version",
        "sha",
        "shape",
        "junk",
    ],
)
def test_from_json_refuses(change: str) -> None:
    with pytest.raises(ValueError):
        RepositoryContent.from_json(_tampered(change))


# --- scan -------------------------------------------------------------------------------------------------


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def staged_tree(root: Path) -> None:
    write(root / "m" / "config.pbtxt", "name: 'm'\n")
    write(root / "m" / "1" / "model.onnx", b"\x00" * 100)
    write(root / "m" / "1" / ".staged.json", json.dumps({"digest": "sha256:one"}))
    write(root / "m" / "2" / "model.onnx", b"\x01" * 50)  # no marker: still a version
    (root / "m" / "3").mkdir()  # an empty version folder (ensembles)
    write(root / "m" / "1" / ".hidden", "x")
    write(root / "m" / "1" / "sub" / "w.bin", "w")
    write(root / ".staging-m-abc" / "1" / "model.onnx", "half written")
    write(root / ".trash-m-x" / "old" / "model.onnx", "old")
    write(root / ".lock", "")
    write(root / "toplevel.txt", "not a model")
    write(root / "m" / "__pycache__" / "x.pyc", "c")


def test_scan_lists_models_markers_and_skips_dotfiles(tmp_path: Path) -> None:
    staged_tree(tmp_path)
    content = scan(tmp_path, HashCache())
    assert list(content.models) == ["m"]
    m = content.models["m"]
    assert [f.path for f in m.files] == [
        "1/.staged.json",
        "1/model.onnx",
        "1/sub/w.bin",
        "2/model.onnx",
        "__pycache__/x.pyc",
        "config.pbtxt",
    ]
    assert m.versions == {1: "sha256:one", 2: None, 3: None}
    onnx = next(f for f in m.files if f.path == "1/model.onnx")
    assert onnx.size == 100 and onnx.sha256 == hashlib.sha256(b"\x00" * 100).hexdigest()


@pytest.mark.parametrize("marker", ["not json", "[1, 2]", '{"digest": 3}', '{"other": "x"}'])
def test_an_unreadable_marker_is_a_version_without_digest(tmp_path: Path, marker: str) -> None:
    write(tmp_path / "m" / "1" / ".staged.json", marker)
    content = scan(tmp_path, HashCache())
    assert content.models["m"].versions == {1: None}
    assert [f.path for f in content.models["m"].files] == ["1/.staged.json"]


def test_scan_skips_links(tmp_path: Path) -> None:
    outside = write(tmp_path / "outside" / "secret", "secret")
    root = tmp_path / "root"
    write(root / "m" / "1" / "model.onnx", "x")
    os.symlink(outside, root / "m" / "1" / "link")
    os.symlink(outside.parent, root / "m" / "2")
    os.symlink(outside.parent, root / "linked-model")
    content = scan(root, HashCache())
    assert list(content.models) == ["m"]
    assert [f.path for f in content.models["m"].files] == ["1/model.onnx"]
    assert content.models["m"].versions == {1: None}


def _age(root: Path, seconds: float = 60) -> None:
    """Push every mtime into the past so the hash cache may remember the files (its racy rule)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(folder, name))
            os.utime(os.path.join(folder, name), ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def test_a_rescan_of_an_unchanged_tree_hashes_nothing(tmp_path: Path) -> None:
    staged_tree(tmp_path)
    _age(tmp_path)
    cache = HashCache()
    first = scan(tmp_path, cache)
    hashed = cache.hashed
    assert hashed == 5  # markers are read every scan, not counted
    assert scan(tmp_path, cache) == first and cache.hashed == hashed
    write(tmp_path / "m" / "2" / "model.onnx", b"\x02" * 50)  # same size, new content
    changed = scan(tmp_path, cache)
    assert cache.hashed == hashed + 1 and changed.models["m"].hash != first.models["m"].hash


def test_a_fresh_file_is_hashed_again_until_it_is_old_enough(tmp_path: Path) -> None:
    # A write within the same mtime tick as the one seen would go unnoticed: such files are not cached.
    write(tmp_path / "m" / "1" / "model.onnx", "fresh")
    cache = HashCache()
    scan(tmp_path, cache)
    scan(tmp_path, cache)
    assert cache.hashed == 2


def test_a_model_removed_during_the_scan_is_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from triton_operator.repository import manifest

    write(tmp_path / "a" / "1" / "x", "x")
    write(tmp_path / "b" / "1" / "x", "x")
    real = manifest.scan_model

    def vanishing(model_dir: Path, cache: HashCache) -> ModelContent:
        if model_dir.name == "a":
            os.rename(model_dir, tmp_path / ".trash-a")
            raise FileNotFoundError(model_dir)
        return real(model_dir, cache)

    monkeypatch.setattr(manifest, "scan_model", vanishing)
    assert list(scan(tmp_path, HashCache()).models) == ["b"]


def test_a_version_met_mid_rename_is_scanned_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from triton_operator.repository import manifest

    write(tmp_path / "m" / "1" / "x", "x")
    calls = []
    real = manifest.scan_model

    def renamed_once(model_dir: Path, cache: HashCache) -> ModelContent:
        calls.append(1)
        if len(calls) == 1:
            raise ScanUnstable("moved")
        return real(model_dir, cache)

    monkeypatch.setattr(manifest, "scan_model", renamed_once)
    assert list(scan(tmp_path, HashCache()).models) == ["m"] and len(calls) == 2


def test_a_tree_that_never_settles_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from triton_operator.repository import manifest

    write(tmp_path / "m" / "1" / "x", "x")

    def always(model_dir: Path, cache: HashCache) -> ModelContent:
        raise ScanUnstable("moved")

    monkeypatch.setattr(manifest, "scan_model", always)
    with pytest.raises(ScanUnstable, match="kept changing"):
        scan(tmp_path, HashCache())


def test_a_folder_changed_while_read_is_unstable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from triton_operator.repository import manifest

    write(tmp_path / "m" / "1" / "x", "x")
    real = manifest.hash_file

    def adds_a_file(path: Path | str, cache: HashCache) -> tuple[int, str]:
        write(tmp_path / "m" / "2" / "y", "y")  # a version renamed in while the model is read
        return real(path, cache)

    monkeypatch.setattr(manifest, "hash_file", adds_a_file)
    with pytest.raises(ScanUnstable):
        manifest.scan_model(tmp_path / "m", HashCache())


# --- plan_sync --------------------------------------------------------------------------------------------

V1 = model("m", ("1/.staged.json", 9, A), ("1/w", 4, B), ("config.pbtxt", 3, C), versions={1: "sha256:1"})


@pytest.mark.parametrize(
    ("wanted", "held", "build", "download", "reuse", "remove"),
    [
        pytest.param(repo(V1), repo(V1), [], [], [], [], id="identical: empty plan"),
        pytest.param(repo(), repo(), [], [], [], [], id="both empty"),
        pytest.param(
            repo(V1), repo(), ["m"], ["1/.staged.json", "1/w", "config.pbtxt"], [], [], id="new model"
        ),
        pytest.param(
            repo(model("m", ("1/.staged.json", 9, A), ("1/w", 4, "d" * 64), ("config.pbtxt", 3, C))),
            repo(V1),
            ["m"],
            ["1/w"],
            [("1/.staged.json", "m", "1/.staged.json"), ("config.pbtxt", "m", "config.pbtxt")],
            [],
            id="changed file",
        ),
        pytest.param(
            repo(model("m", ("config.pbtxt", 3, C), versions={})),
            repo(V1),
            ["m"],
            [],
            [("config.pbtxt", "m", "config.pbtxt")],
            [],
            id="removed version",
        ),
        pytest.param(
            repo(
                model(
                    "m",
                    *[("1/.staged.json", 9, A), ("1/w", 4, B), ("config.pbtxt", 3, C)],
                    ("2/w", 4, B),
                    versions={1: "sha256:1", 2: None},
                )
            ),
            repo(V1),
            ["m"],
            [],
            [
                ("1/.staged.json", "m", "1/.staged.json"),
                ("1/w", "m", "1/w"),
                ("2/w", "m", "1/w"),  # same bytes elsewhere: linked, not downloaded
                ("config.pbtxt", "m", "config.pbtxt"),
            ],
            [],
            id="new version repeating an old file",
        ),
        pytest.param(repo(), repo(V1), [], [], [], ["m"], id="removed model"),
        pytest.param(
            repo(model("n", ("config.pbtxt", 3, C))),
            repo(V1),
            ["n"],
            [],
            [("config.pbtxt", "m", "config.pbtxt")],
            ["m"],
            id="renamed model reuses the other's files",
        ),
        pytest.param(
            repo(model("m", ("1/w", 5, B))),
            repo(model("m", ("1/w", 4, B))),
            ["m"],
            ["1/w"],
            [],
            [],
            id="same sha256, other size: downloaded",
        ),
    ],
)
def test_plan_sync(
    wanted: RepositoryContent,
    held: RepositoryContent,
    build: list[str],
    download: list[str],
    reuse: list[tuple[str, str, str]],
    remove: list[str],
) -> None:
    plan = plan_sync(wanted, held)
    assert [b.name for b in plan.build] == build
    assert [f.path for b in plan.build for f in b.download] == download
    assert [(r.entry.path, r.model, r.path) for b in plan.build for r in b.reuse] == reuse
    assert list(plan.remove) == remove
    assert plan.empty is (not build and not remove)
    for b in plan.build:  # every wanted file is either reused or downloaded, once
        assert sorted([f.path for f in b.download] + [r.entry.path for r in b.reuse]) == sorted(
            f.path for f in b.wanted.files
        )


@pytest.mark.parametrize(
    ("wanted", "held", "keep"),
    [
        pytest.param(V1, V1, ["1"], id="same content"),
        pytest.param(
            model(
                "m",
                ("1/.staged.json", 9, A),
                ("1/w", 4, B),
                ("2/w", 4, B),
                ("config.pbtxt", 3, C),
                versions={1: "sha256:1", 2: None},
            ),
            V1,
            ["1"],
            id="a version added: the old one keeps its time",
        ),
        pytest.param(
            model("m", ("1/.staged.json", 9, A), ("1/w", 4, C), ("config.pbtxt", 3, C), versions={1: None}),
            V1,
            [],
            id="a file changed: its version is new",
        ),
        pytest.param(
            model("m", ("1/a/b/x", 1, A), ("1/a/y", 1, B), ("1/c/z", 1, C)),
            model("m", ("1/a/b/x", 1, A), ("1/a/y", 1, B), ("1/c/z", 1, A)),
            ["1/a/b", "1/a"],
            id="nested folders, deepest first",
        ),
        pytest.param(
            model("m", ("1/w", 1, A), versions={1: None, 2: None}),
            model("m", ("1/w", 1, A), versions={1: None, 2: None, 3: None}),
            ["1", "2"],
            id="empty version folders",
        ),
        pytest.param(model("m", ("2/w", 1, A), versions={2: None}), V1, [], id="nothing in common"),
    ],
)
def test_unchanged_folders_keep_their_times(
    wanted: ModelContent, held: ModelContent, keep: list[str]
) -> None:
    (build,) = plan_sync(repo(wanted), repo(held)).build if wanted != held else (None,)
    if build is None:
        from triton_operator.repository.manifest import unchanged_folders

        assert list(unchanged_folders(wanted, held)) == keep
        return
    assert list(build.keep_times) == keep


def test_an_oversized_marker_is_listed_as_a_file_without_digest(tmp_path: Path) -> None:
    from triton_operator.repository.manifest import MAX_MARKER_BYTES

    data = json.dumps({"digest": "sha256:x", "pad": "x" * MAX_MARKER_BYTES}).encode()
    write(tmp_path / "m" / "1" / ".staged.json", data)
    m = scan(tmp_path, HashCache()).models["m"]
    assert m.versions == {1: None}
    assert m.files == (FileEntry("1/.staged.json", len(data), hashlib.sha256(data).hexdigest()),)
