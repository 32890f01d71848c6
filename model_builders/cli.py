"""`model-builders`: build Triton model repository entries and publish them (see README.md)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model_builders import builders
from model_builders.config import BatchingOptions, parse_config, parse_instance_group, validate_config
from model_builders.errors import BuildError
from model_builders.repository import ModelEntry, write_entry
from model_builders.signature import parse_tensor_spec
from model_builders.targets import S3Target, parse_target, resolve_version
from model_builders.triton_model import ROLLOUT_STRATEGIES

PROG = "model-builders"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 a problem the message explains, 2 usage)."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BuildError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Build Triton model repository entries and publish them."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("onnx", help="an onnxruntime entry from an .onnx file (tensors read from the graph)")
    p.add_argument("model", type=Path, metavar="MODEL.onnx")
    _entry_options(p)
    _batching_options(p)
    p.set_defaults(run=_run_onnx)

    p = sub.add_parser(
        "onnx-python", help="a python-backend entry serving an .onnx file with onnxruntime on CPU"
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx")
    _entry_options(p)
    _batching_options(p)
    p.add_argument(
        "--threads", type=int, default=1, help="onnxruntime intra-op threads per instance (default 1)"
    )
    p.set_defaults(run=_run_onnx_python)

    p = sub.add_parser(
        "torchscript", help="a libtorch entry from a TorchScript archive with declared tensors"
    )
    p.add_argument("model", type=Path, metavar="MODEL.pt")
    _entry_options(p)
    _tensor_options(p)
    _batching_options(p)
    p.set_defaults(run=_run_torchscript)

    p = sub.add_parser("python", help="a python-backend entry from a module defining TritonPythonModel")
    p.add_argument("module", type=Path, metavar="MODULE.py")
    _entry_options(p)
    _tensor_options(p)
    _batching_options(p)
    p.set_defaults(run=_run_python)

    p = sub.add_parser("ensemble", help="an ensemble chaining other models' inputs and outputs")
    _entry_options(p)
    _tensor_options(p)
    p.add_argument("--max-batch-size", type=int, default=0, help="0 = no batching (default)")
    p.add_argument(
        "--step",
        action="append",
        default=[],
        required=True,
        metavar="'MODEL[:VER] IN=TENSOR,... -> OUT=TENSOR,...'",
        help="one step; keys are the step model's tensor names, values the ensemble's tensors",
    )
    p.set_defaults(run=_run_ensemble)

    p = sub.add_parser("publish", help="upload REPO_DIR/NAME to S3 or a folder; print its TritonModel YAML")
    p.add_argument("model_dir", type=Path, metavar="REPO_DIR/NAME")
    p.add_argument("--to", required=True, metavar="s3://BUCKET/PREFIX | file:///PATH | PATH")
    p.add_argument("--server", required=True, help="TritonServer the model goes to (spec.serverRef.name)")
    p.add_argument(
        "--version",
        type=int,
        metavar="N",
        help="publish as version N (spec.version); default: the target's last segment when it is a number "
        "(s3://models/mnist/2 -> 2), else the model folder as it is (version 1 for a default build)",
    )
    _s3_options(p)
    p.add_argument("--credentials-secret", help="Secret with the AWS keys the staging Job uses")
    p.add_argument("--resource-name", help="metadata.name of the TritonModel (default: from the model name)")
    p.add_argument("--namespace", help="metadata.namespace of the TritonModel")
    p.add_argument(
        "--claim",
        help="for a folder target: the PersistentVolumeClaim that folder is the root of "
        "(the printed TritonModel then reads it as spec.source.pvc)",
    )
    p.add_argument(
        "--claim-path", help="the model folder's path inside the claim (default: the target folder's name)"
    )
    p.add_argument(
        "--rollout",
        choices=sorted(ROLLOUT_STRATEGIES),
        help="canary: the printed TritonModel sets spec.rollout.strategy Canary (the new version takes "
        "traffic step by step while analysis passes); default: unset (Immediate)",
    )
    p.add_argument("--force", action="store_true", help="replace a different model already at the target")
    p.set_defaults(run=_run_publish)

    p = sub.add_parser(
        "fetch", help="download a published model into a model folder, verified by its manifest"
    )
    p.add_argument("source", metavar="s3://BUCKET/PREFIX | file:///PATH | PATH")
    p.add_argument("--output", required=True, type=Path, metavar="REPO_DIR/NAME")
    p.add_argument("--digest", help="refuse unless the manifest's digest is this sha256:...")
    _s3_options(p)
    p.set_defaults(run=_run_fetch)

    p = sub.add_parser("validate", help="check a config.pbtxt offline (optionally against an .onnx graph)")
    p.add_argument("config", type=Path, metavar="config.pbtxt")
    p.add_argument("--onnx", type=Path, metavar="MODEL.onnx", help="also check tensors against this graph")
    p.set_defaults(run=_run_validate)
    return parser


def _entry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="model name (the repository folder name)")
    p.add_argument(
        "--output", "-o", required=True, type=Path, metavar="REPO_DIR", help="model repository folder"
    )
    p.add_argument("--version", type=int, default=1, help="version folder to write (default 1)")


def _tensor_options(p: argparse.ArgumentParser) -> None:
    help_dims = "NAME:TYPE:DIMS, dims without the batch dimension, e.g. input:FP32:1,28,28"
    p.add_argument("--input", action="append", default=[], metavar="NAME:TYPE:DIMS", help=help_dims)
    # --output names the repository folder in every command, so declared outputs take --output-tensor.
    p.add_argument("--output-tensor", dest="outputs", action="append", default=[], metavar="NAME:TYPE:DIMS")


def _batching_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-batch-size", type=int, help="default: 8 when the graph's first axis is dynamic, else 0"
    )
    p.add_argument("--dynamic-batching", action="store_true", help="enable Triton's dynamic batcher")
    p.add_argument("--preferred-batch-size", type=int, action="append", default=[], metavar="N")
    p.add_argument("--max-queue-delay-us", type=int, metavar="N")
    p.add_argument(
        "--instances", action="append", default=[], metavar="KIND:COUNT", help="e.g. gpu:2 or cpu:4"
    )


def _s3_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-url", help="S3-compatible endpoint (MinIO, Ceph, ...); default AWS")
    p.add_argument("--region", help="S3 region (default: from the AWS config)")


def _batching(args: argparse.Namespace) -> BatchingOptions:
    if args.max_queue_delay_us is not None and args.max_queue_delay_us < 0:
        raise BuildError(f"--max-queue-delay-us {args.max_queue_delay_us}: use a delay >= 0 microseconds")
    return BatchingOptions(
        max_batch_size=args.max_batch_size,
        dynamic_batching=args.dynamic_batching,
        preferred_batch_sizes=tuple(args.preferred_batch_size),
        max_queue_delay_us=args.max_queue_delay_us,
    )


def _write(args: argparse.Namespace, entry: ModelEntry) -> int:
    target = write_entry(args.output, entry)
    files = ", ".join(["config.pbtxt", *(f"{entry.version}/{rel}" for rel in sorted(entry.files))])
    print(f"wrote {target}: {files}")
    return 0


def _run_onnx(args: argparse.Namespace) -> int:
    instances = [parse_instance_group(s) for s in args.instances]
    entry = builders.build_onnx(
        args.model, name=args.name, version=args.version, batching=_batching(args), instances=instances
    )
    return _write(args, entry)


def _run_onnx_python(args: argparse.Namespace) -> int:
    instances = [parse_instance_group(s) for s in args.instances]
    entry = builders.build_onnx_python(
        args.model,
        name=args.name,
        version=args.version,
        batching=_batching(args),
        instances=instances,
        threads=args.threads,
    )
    return _write(args, entry)


def _declared(args: argparse.Namespace) -> dict[str, Any]:
    """The options of the builders whose signature is declared on the command line."""
    return {
        "name": args.name,
        "version": args.version,
        "inputs": [parse_tensor_spec(s, flag="--input") for s in args.input],
        "outputs": [parse_tensor_spec(s, flag="--output-tensor") for s in args.outputs],
        "batching": _batching(args),
        "instances": [parse_instance_group(s) for s in args.instances],
    }


def _run_torchscript(args: argparse.Namespace) -> int:
    return _write(args, builders.build_torchscript(args.model, **_declared(args)))


def _run_python(args: argparse.Namespace) -> int:
    return _write(args, builders.build_python(args.module, **_declared(args)))


def _run_ensemble(args: argparse.Namespace) -> int:
    entry = builders.build_ensemble(
        name=args.name,
        version=args.version,
        inputs=[parse_tensor_spec(s, flag="--input") for s in args.input],
        outputs=[parse_tensor_spec(s, flag="--output-tensor") for s in args.outputs],
        steps=[builders.parse_step(s) for s in args.step],
        max_batch_size=args.max_batch_size,
    )
    return _write(args, entry)


def _run_publish(args: argparse.Namespace) -> int:
    from model_builders.manifest import source_version
    from model_builders.publish import publish
    from model_builders.triton_model import check_path_version, to_yaml, triton_model

    target = parse_target(args.to, default_prefix=args.model_dir.name)
    version = resolve_version(args.version, target, to=args.to)
    if version is not None and args.claim and args.claim_path:
        check_path_version(args.claim_path, version)  # before anything is written
    manifest = publish(
        args.model_dir,
        target,
        endpoint_url=args.endpoint_url,
        region=args.region,
        force=args.force,
        version=version,
    )
    served = manifest.latest_version
    source = source_version(args.model_dir, version) if version is not None else served
    renamed = f" (from its version folder {source})" if source != served else ""
    print(
        f"published {args.model_dir} to {target} as version {served}{renamed} ({manifest.digest})",
        file=sys.stderr,
    )
    if not isinstance(target, S3Target) and not args.claim:
        # A local folder is not something a cluster can read; inside a PVC it is.
        print(
            "no TritonModel printed: pass --claim (the PVC this folder lives in) to get one", file=sys.stderr
        )
        return 0
    resource = triton_model(
        manifest,
        target,
        server=args.server,
        endpoint_url=args.endpoint_url,
        region=args.region,
        credentials_secret=args.credentials_secret,
        name=args.resource_name,
        namespace=args.namespace,
        claim=args.claim,
        claim_path=args.claim_path,
        rollout=args.rollout,
    )
    sys.stdout.write(to_yaml(resource))
    return 0


def _run_fetch(args: argparse.Namespace) -> int:
    from model_builders.publish import fetch

    source = parse_target(args.source)
    manifest = fetch(
        source, args.output, endpoint_url=args.endpoint_url, region=args.region, expected_digest=args.digest
    )
    print(f"fetched {source} into {args.output} ({manifest.digest})")
    return 0


def _run_validate(args: argparse.Namespace) -> int:
    if not args.config.is_file():
        raise BuildError(f"{args.config}: no such file: give the path of a config.pbtxt")
    cfg = parse_config(args.config.read_text())
    graph = None
    if args.onnx is not None:
        from model_builders.onnx_graph import read_onnx

        graph = read_onnx(args.onnx).signature
    validate_config(cfg, graph=graph)
    print(f"{args.config}: ok")
    return 0
