"""The CLI end to end in-process (main(argv)): entries written, bad input refused, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import yaml
from onnx import TensorProto, helper
from triton_operator.api.tritonmodel import TritonModelSpec

from model_builders.cli import main
from model_builders.config import parse_config
from model_builders.manifest import build_manifest
from model_builders.repository import ModelEntry, write_entry
from tests.unit.test_model_builders_golden import load_example

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
