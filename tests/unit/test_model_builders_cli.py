"""The CLI end to end in-process (main(argv)): entries written, bad input refused, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import yaml
from onnx import TensorProto, helper
from triton_operator.api.tritonmodel import MAX_VERSION as API_MAX_VERSION
from triton_operator.api.tritonmodel import RolloutStrategy, TritonModelSpec

from model_builders.cli import _parser, main
from model_builders.config import parse_config
from model_builders.errors import BuildError, ConfigError
from model_builders.manifest import MANIFEST_FILE, build_manifest, publish_view
from model_builders.repository import MAX_VERSION, ModelEntry, write_entry
from model_builders.targets import parse_target, resolve_version
from model_builders.triton_model import ROLLOUT_STRATEGIES
from tests.support.examples import load_example

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def mnist_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "mnist_mlp.onnx"
    onnx.save(load_example("mnist_mlp").build_mnist_mlp(), str(path))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository that already holds another model, which every failure must leave alone."""
    repo = tmp_path / "repo"
    (repo / "other" / "1").mkdir(parents=True)
    (repo / "other" / "config.pbtxt").write_text('name: "other"\n')
    return repo


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every path under `folder` (hidden temp folders included) with its content."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
    }


def run_failing(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("model-builders: error: ") and err.count("\n") == 1, err
    return err


def _graph_model(path: Path, elem_type: int, batch: str | int) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", elem_type, [batch, 4])],
        [helper.make_tensor_value_info("y", elem_type, [batch, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_python_writes_entry_with_graph_tensors(mnist_onnx: Path, repo: Path) -> None:
    argv = ["onnx-python", str(mnist_onnx), "--name", "mnist_mlp", "--output", str(repo)]
    assert main([*argv, "--dynamic-batching", "--max-batch-size", "16"]) == 0
    entry = repo / "mnist_mlp"
    assert sorted(p.relative_to(entry).as_posix() for p in entry.rglob("*") if p.is_file()) == [
        "1/model.onnx",
        "1/model.py",
        "config.pbtxt",
    ]
    assert (entry / "1" / "model.onnx").read_bytes() == mnist_onnx.read_bytes()
    cfg = parse_config((entry / "config.pbtxt").read_text())
    assert (cfg.max_batch_size, cfg.input[0].name, list(cfg.input[0].dims)) == (16, "input", [1, 28, 28])
    assert cfg.HasField("dynamic_batching")
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_new_version_keeps_the_old_one(mnist_onnx: Path, repo: Path) -> None:
    base = ["onnx", str(mnist_onnx), "--name", "mnist_mlp", "--output", str(repo)]
    assert main(base) == 0
    assert main([*base, "--version", "2", "--max-batch-size", "4"]) == 0
    entry = repo / "mnist_mlp"
    assert (entry / "1" / "model.onnx").is_file() and (entry / "2" / "model.onnx").is_file()
    assert parse_config((entry / "config.pbtxt").read_text()).max_batch_size == 4


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["--preferred-batch-size", "16", "--max-batch-size", "8"],
            ["preferred_batch_size 16", "--max-batch-size"],
        ),
        (["--dynamic-batching", "--max-batch-size", "0"], ["dynamic_batching needs max_batch_size > 0"]),
        (["--instances", "tpu:2"], ["--instances 'tpu:2'", "gpu, cpu"]),
        (["--max-queue-delay-us", "-5"], ["--max-queue-delay-us -5"]),
        (["--version", "0"], ["--version 0", ">= 1"]),
    ],
)
def test_conflicting_options_are_refused(
    mnist_onnx: Path, repo: Path, capsys: pytest.CaptureFixture[str], extra: list[str], expected: list[str]
) -> None:
    before = snapshot(repo)
    err = run_failing(["onnx", str(mnist_onnx), "--name", "mnist_mlp", "--output", str(repo), *extra], capsys)
    for part in expected:
        assert part in err
    assert snapshot(repo) == before


def test_corrupt_onnx_is_refused(tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"\x08\x07garbage that is not an onnx model\xff\xfe")
    before = snapshot(repo)
    err = run_failing(["onnx-python", str(corrupt), "--name", "m", "--output", str(repo)], capsys)
    assert "is not a valid ONNX model" in err and "re-export" in err
    assert snapshot(repo) == before


def test_unsupported_datatype_is_refused(
    tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _graph_model(tmp_path / "complex.onnx", TensorProto.COMPLEX64, "batch")
    before = snapshot(repo)
    err = run_failing(["onnx", str(model), "--name", "m", "--output", str(repo)], capsys)
    assert "'x' has ONNX type COMPLEX64" in err and "cast it to one of" in err
    assert snapshot(repo) == before


def test_batching_a_graph_without_batch_axis_is_refused(
    tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _graph_model(tmp_path / "fixed.onnx", TensorProto.FLOAT, 1)
    before = snapshot(repo)
    err = run_failing(
        ["onnx", str(model), "--name", "m", "--output", str(repo), "--max-batch-size", "8"], capsys
    )
    assert "has no batch dimension" in err and "--max-batch-size 0" in err
    assert snapshot(repo) == before
    # Without the flag the builder sees the fixed axis and does not batch.
    assert main(["onnx", str(model), "--name", "m", "--output", str(repo)]) == 0
    assert parse_config((repo / "m" / "config.pbtxt").read_text()).max_batch_size == 0


def test_declared_models_need_tensors(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = Path(__file__).resolve().parents[2] / "examples" / "models" / "argmax_postprocess.py"
    err = run_failing(["python", str(module), "--name", "argmax", "--output", str(repo)], capsys)
    assert "--input NAME:TYPE:DIMS" in err
    ok = ["--input", "logits:FP32:10", "--output-tensor", "label:INT64:1", "--max-batch-size", "8"]
    assert main(["python", str(module), "--name", "argmax", "--output", str(repo), *ok]) == 0
    assert (repo / "argmax" / "1" / "model.py").read_bytes() == module.read_bytes()


def test_python_module_without_model_class_is_refused(
    tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "model.py"
    module.write_text("def execute(requests):\n    return []\n")
    argv = ["python", str(module), "--name", "p", "--output", str(repo), "--input", "x:FP32:1"]
    err = run_failing([*argv, "--output-tensor", "y:FP32:1"], capsys)
    assert "no top-level class TritonPythonModel" in err


def test_ensemble_with_dangling_tensor_is_refused(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["ensemble", "--name", "pipe", "--output", str(repo), "--input", "IMAGE:FP32:4"]
    argv += [
        "--output-tensor",
        "LABEL:INT64:1",
        "--step",
        "a x=IMAGE -> y=mid",
        "--step",
        "b x=typo -> y=LABEL",
    ]
    before = snapshot(repo)
    err = run_failing(argv, capsys)
    assert "reads tensor 'typo'" in err
    assert snapshot(repo) == before


def test_failed_write_leaves_no_trace(tmp_path: Path, repo: Path) -> None:
    """A file that vanishes mid-write aborts the entry; the repository is exactly as before."""
    cfg = parse_config('name: "m" backend: "python" input { name: "x" data_type: TYPE_FP32 dims: [1] }')
    before = snapshot(repo)
    entry = ModelEntry(cfg, 1, {"a.txt": b"written first", "z.bin": tmp_path / "missing.bin"})
    with pytest.raises(FileNotFoundError):
        write_entry(repo, entry)
    assert snapshot(repo) == before


def test_publish_to_folder_prints_triton_model_and_fetch_verifies(
    mnist_onnx: Path, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["onnx-python", str(mnist_onnx), "--name", "mnist_mlp", "--output", str(repo)]) == 0
    capsys.readouterr()
    published = tmp_path / "published" / "mnist_mlp"
    # A local folder alone is nothing a cluster can read: no TritonModel, and the reason.
    assert main(["publish", str(repo / "mnist_mlp"), "--to", published.as_uri(), "--server", "pool-a"]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "pass --claim" in out.err
    # The same folder as the root of a PVC: the printed TritonModel reads it from there.
    args = ["publish", str(repo / "mnist_mlp"), "--to", published.as_uri(), "--server", "pool-a", "--force"]
    assert main([*args, "--claim", "models-nfs"]) == 0
    resource = yaml.safe_load(capsys.readouterr().out)
    digest = build_manifest(repo / "mnist_mlp").digest
    assert resource["kind"] == "TritonModel" and resource["apiVersion"] == "tritonoperator.dev/v1alpha1"
    assert resource["metadata"]["name"] == "mnist-mlp"
    assert resource["spec"]["serverRef"] == {"name": "pool-a"}
    assert (resource["spec"]["modelName"], resource["spec"]["version"]) == ("mnist_mlp", 1)
    assert resource["spec"]["source"] == {
        "pvc": {"claimName": "models-nfs", "path": "mnist_mlp"},
        "digest": digest,
    }
    # What publish prints is what the operator's API accepts.
    TritonModelSpec.model_validate(resource["spec"])

    fetched = tmp_path / "fresh" / "mnist_mlp"
    assert main(["fetch", str(published), "--output", str(fetched), "--digest", digest]) == 0
    assert (fetched / "1" / "model.onnx").read_bytes() == mnist_onnx.read_bytes()

    # A file changed after publishing is caught, and the earlier fetch result stays as it was.
    (published / "config.pbtxt").write_text((published / "config.pbtxt").read_text() + "\n")
    before = snapshot(fetched.parent)
    err = run_failing(["fetch", str(published), "--output", str(fetched)], capsys)
    assert "config.pbtxt does not match its manifest" in err
    assert snapshot(fetched.parent) == before
    err = run_failing(
        ["fetch", str(published), "--output", str(fetched), "--digest", "sha256:" + "0" * 64], capsys
    )
    assert "not the expected sha256:000" in err


def test_publish_refuses_a_different_model_in_a_non_empty_folder(
    mnist_onnx: Path, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["onnx", str(mnist_onnx), "--name", "mnist_mlp", "--output", str(repo)]) == 0
    target = tmp_path / "pub"
    argv = ["publish", str(repo / "mnist_mlp"), "--to", str(target), "--server", "s"]
    assert main(argv) == 0
    assert main(argv) == 0  # the same content again is a no-op
    assert (
        main(["onnx", str(mnist_onnx), "--name", "mnist_mlp", "--output", str(repo), "--max-batch-size", "2"])
        == 0
    )
    capsys.readouterr()
    before = snapshot(target)
    err = run_failing(argv, capsys)
    assert "is not empty" in err and "--force" in err
    assert snapshot(target) == before
    assert main([*argv, "--force"]) == 0
    assert parse_config((target / "config.pbtxt").read_text()).max_batch_size == 2


# --- publish --version: the version folder published and the TritonModel's spec.version agree ----------


def test_max_version_is_the_apis() -> None:
    assert MAX_VERSION == API_MAX_VERSION


def test_publish_parses_version() -> None:
    base = ["publish", "repo/m", "--to", "s3://models/m/2", "--server", "s"]
    assert _parser().parse_args(base).version is None
    assert _parser().parse_args([*base, "--version", "2"]).version == 2
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args([*base, "--version", "two"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("to", "version", "expected"),
    [
        ("s3://models/mnist/2", None, 2),
        ("s3://models/mnist/02", None, 2),
        ("/srv/models/mnist/3", None, 3),
        ("file:///srv/models/mnist/3", None, 3),
        ("s3://models/mnist/v2", None, None),  # not a number: the folder as it is (1 for a default build)
        ("s3://models", None, None),  # the prefix defaults to the model name, which names no version
        ("/srv/models/mnist", None, None),
        ("s3://models/mnist", 4, 4),
        ("s3://models/mnist/4", 4, 4),
        ("/srv/models/mnist/4", 4, 4),
        ("s3://models/mnist/v2", MAX_VERSION, MAX_VERSION),
    ],
)
def test_publish_version_is_given_or_inferred_from_the_target(
    to: str, version: int | None, expected: int | None
) -> None:
    target = parse_target(to, default_prefix="7")
    assert resolve_version(version, target, to=to) == expected


@pytest.mark.parametrize(
    ("to", "version", "expected"),
    [
        ("s3://models/mnist/2", 3, ["--version 3", "--to s3://models/mnist/2", "version 2", "/3"]),
        ("/srv/models/mnist/1", 2, ["--version 2", "--to /srv/models/mnist/1", "version 1"]),
        ("s3://models/mnist", 0, ["--version 0", ">= 1", str(MAX_VERSION)]),
        ("s3://models/mnist", MAX_VERSION + 1, [f"--version {MAX_VERSION + 1}", str(MAX_VERSION)]),
        ("s3://models/mnist/0", None, ["--to s3://models/mnist/0: version 0", ">= 1"]),
        (f"/srv/m/{MAX_VERSION + 1}", None, [f"version {MAX_VERSION + 1}", str(MAX_VERSION)]),
    ],
)
def test_publish_version_conflicts_and_out_of_range_are_refused(
    to: str, version: int | None, expected: list[str]
) -> None:
    with pytest.raises(BuildError) as exc:
        resolve_version(version, parse_target(to), to=to)
    for part in expected:
        assert part in str(exc.value)


def test_publish_version_conflict_fails_before_writing(
    mnist_onnx: Path, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["onnx", str(mnist_onnx), "--name", "mnist_mlp", "--output", str(repo)]) == 0
    capsys.readouterr()
    target = tmp_path / "published" / "mnist_mlp" / "2"
    argv = ["publish", str(repo / "mnist_mlp"), "--to", str(target), "--server", "s", "--claim", "nfs"]
    err = run_failing([*argv, "--version", "3"], capsys)
    assert f"--version 3 conflicts with --to {target}" in err and "says version 2" in err
    err = run_failing([*argv, "--version", "2", "--claim-path", "mnist_mlp/1"], capsys)
    assert "--claim-path mnist_mlp/1 ends in version 1" in err and "version 2" in err
    # s3 too: refused before any connection is tried (no endpoint exists here).
    s3 = ["publish", str(repo / "mnist_mlp"), "--to", "s3://models/mnist/2", "--server", "s"]
    err = run_failing([*s3, "--version", "1", "--endpoint-url", "http://127.0.0.1:9"], capsys)
    assert "--version 1 conflicts with --to s3://models/mnist/2" in err
    assert not (tmp_path / "published").exists()


def test_publish_second_version_to_a_folder_per_version(
    mnist_onnx: Path, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model built as version 1 published as 2 (inferred from .../2): 2/ lands, spec.version is 2."""
    assert main(["onnx", str(mnist_onnx), "--name", "mnist_mlp", "--output", str(repo)]) == 0
    capsys.readouterr()
    model_dir = repo / "mnist_mlp"
    root = tmp_path / "nfs"
    for version in ("1", "2"):
        argv = ["publish", str(model_dir), "--to", str(root / "mnist_mlp" / version), "--server", "pool-a"]
        assert main([*argv, "--claim", "models-nfs"]) == 0
        out = capsys.readouterr()
        resource = yaml.safe_load(out.out)
        spec = resource["spec"]
        assert f"as version {version}" in out.err
        assert spec["version"] == int(version)
        assert spec["source"] == {
            "pvc": {"claimName": "models-nfs", "path": f"mnist_mlp/{version}"},
            "digest": build_manifest(model_dir, version=int(version)).digest,
        }
        TritonModelSpec.model_validate(spec)
    assert "(from its version folder 1)" in out.err
    published = root / "mnist_mlp" / "2"
    assert sorted(p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file()) == [
        "2/model.onnx",
        "config.pbtxt",
        "manifest.json",
    ]
    assert (published / "2" / "model.onnx").read_bytes() == mnist_onnx.read_bytes()
    assert json.loads((published / MANIFEST_FILE).read_text())["versions"] == [2]
    assert (root / "mnist_mlp" / "1" / "1" / "model.onnx").is_file()  # v1 stays next to it
    # The explicit flag gives the same artifact; publishing it again is a no-op.
    argv = ["publish", str(model_dir), "--to", str(published), "--server", "s", "--version", "2"]
    assert main(argv) == 0
    fetched = tmp_path / "fresh" / "mnist_mlp"
    assert main(["fetch", str(published), "--output", str(fetched)]) == 0
    assert sorted(p.name for p in fetched.iterdir()) == ["2", "config.pbtxt", "manifest.json"]


def test_publish_version_picks_one_of_several_version_folders(
    mnist_onnx: Path, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["onnx", str(mnist_onnx), "--name", "mnist_mlp", "--output", str(repo)]
    assert main(base) == 0 and main([*base, "--version", "2"]) == 0
    capsys.readouterr()
    model_dir = repo / "mnist_mlp"
    target = tmp_path / "pub" / "mnist_mlp" / "1"
    assert main(["publish", str(model_dir), "--to", str(target), "--server", "s"]) == 0
    assert sorted(p.name for p in target.iterdir()) == ["1", "config.pbtxt", "manifest.json"]
    # Without a version the folder goes as it is: both versions, the highest served.
    whole = tmp_path / "pub" / "mnist_mlp" / "all"
    assert main(["publish", str(model_dir), "--to", str(whole), "--server", "s", "--claim", "c"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["spec"]["version"] == 2
    assert sorted(p.name for p in whole.iterdir()) == ["1", "2", "config.pbtxt", "manifest.json"]
    # A version the folder does not hold, among several, is ambiguous.
    before = snapshot(tmp_path / "pub")
    err = run_failing(
        ["publish", str(model_dir), "--to", str(tmp_path / "pub" / "x" / "3"), "--server", "s"], capsys
    )
    assert "holds versions 1, 2 but not 3" in err and "--version 3" in err
    assert snapshot(tmp_path / "pub") == before


def test_publish_version_outside_the_configs_version_policy_is_refused(tmp_path: Path) -> None:
    cfg = parse_config(
        'name: "m" backend: "python" input { name: "x" data_type: TYPE_FP32 dims: [1] } '
        "version_policy { specific { versions: [1] } }"
    )
    model_dir = write_entry(tmp_path / "repo", ModelEntry(cfg, 1, {"model.py": b"# m\n"}))
    assert publish_view(model_dir, version=1).manifest.versions == (1,)
    with pytest.raises(ConfigError, match="version_policy serves versions \\[1\\], not 2"):
        publish_view(model_dir, version=2)


def test_publish_rollout_canary_sets_the_strategy(
    mnist_onnx: Path, repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert {RolloutStrategy(v) for v in ROLLOUT_STRATEGIES.values()} == {RolloutStrategy.CANARY}
    assert main(["onnx", str(mnist_onnx), "--name", "mnist_mlp", "--output", str(repo)]) == 0
    capsys.readouterr()
    target = tmp_path / "nfs" / "mnist_mlp" / "2"
    argv = ["publish", str(repo / "mnist_mlp"), "--to", str(target), "--server", "s", "--claim", "nfs"]
    assert main([*argv, "--rollout", "canary"]) == 0
    spec = yaml.safe_load(capsys.readouterr().out)["spec"]
    assert (spec["version"], spec["rollout"]) == (2, {"strategy": "Canary"})
    assert TritonModelSpec.model_validate(spec).rollout is not None
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args([*argv, "--rollout", "blue-green"])
    assert exc.value.code == 2
