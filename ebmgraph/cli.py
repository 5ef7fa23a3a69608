"""The ``ebmgraph`` command: train, evaluate, generate and compare on MNIST.

Every subcommand has ``--help``. Errors in arguments or files end with a one-line
message on standard error and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from ebmgraph import datasets
from ebmgraph.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ebmgraph.experiments import FAMILIES, ClassificationData, DeepBeliefNet, Protocol, mean_field_error, run_family
from ebmgraph.images import save_image_grid
from ebmgraph.learning.finetune import FeedForward, classification_error
from ebmgraph.learning.trainer import DivergenceError
from ebmgraph.presets import DeepRelationalModel

logger = logging.getLogger("ebmgraph")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", type=Path, default=None, help="folder with the four MNIST IDX files (default: $EBMGRAPH_DATA, then ~/.cache/ebmgraph/mnist)")
    group.add_argument("--no-download", action="store_true", help="fail instead of downloading missing MNIST files")
    group.add_argument("--train-size", type=int, default=10_000, help="random training images used for training (default: 10000, as in the DRM paper)")
    group.add_argument("--validation-size", type=int, default=5_000, help="held-out training images used for validation (default: 5000)")


def _add_protocol_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("protocol")
    group.add_argument("--hidden", type=int, nargs="+", default=[400, 400], help="hidden layer sizes h1 .. hL (default: 400 400)")
    group.add_argument("--epochs", type=int, default=50, help="epochs of generative training (default: 50)")
    group.add_argument("--pretrain-epochs", type=int, default=50, help="epochs of each pretraining RBM; 0 skips pretraining (default: 50)")
    group.add_argument("--finetune-epochs", type=int, default=10, help="epochs of back-propagation fine-tuning (default: 10)")
    group.add_argument("--batch-size", type=int, default=20, help="rows per mini-batch (default: 20)")
    group.add_argument("--lr", type=float, default=0.1, help="learning rate of pretraining and generative training (default: 0.1)")
    group.add_argument("--finetune-lr", type=float, default=0.1, help="learning rate of back-propagation (default: 0.1)")
    group.add_argument("--momentum", type=float, default=0.0, help="momentum (default: 0)")
    group.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty on weights (default: 0)")
    group.add_argument("--steps", type=int, default=10, help="mean-field sweeps T in training and read-out (default: 10)")
    group.add_argument("--lr-schedule", choices=["constant", "linear"], default="constant", help="learning-rate schedule of generative training (default: constant, as in the DRM paper)")
    group.add_argument("--y-units", choices=["bernoulli", "softmax"], default="bernoulli", help="unit family of the label layer (default: bernoulli)")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--output", type=Path, default=Path("outputs"), help="folder for results (default: ./outputs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ebmgraph", description="Energy-based models over layered graphs, on MNIST.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one model family and save a checkpoint", description="Train one model family on MNIST and save a checkpoint and metrics.")
    train.add_argument("--family", choices=["drm", "dbm", "dbn"], default="drm", help="model family (default: drm)")
    _add_data_options(train)
    _add_protocol_options(train)
    _add_run_options(train)

    evaluate = commands.add_parser("evaluate", help="test error of a checkpoint", description="Measure the MNIST test error of a checkpoint.")
    evaluate.add_argument("checkpoint", type=Path, help="checkpoint written by 'ebmgraph train'")
    evaluate.add_argument("--readout", choices=["mean-field", "finetuned"], default="mean-field", help="classify by mean field or by the fine-tuned network (default: mean-field)")
    evaluate.add_argument("--steps", type=int, default=None, help="mean-field sweeps (default: the value used in training)")
    _add_data_options(evaluate)
    evaluate.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    generate = commands.add_parser("generate", help="images generated from each label", description="Generate one image per label by clamping y, and save it beside the per-label mean images.")
    generate.add_argument("checkpoint", type=Path, help="checkpoint of a DRM written by 'ebmgraph train'")
    generate.add_argument("--steps", type=int, default=None, help="mean-field sweeps (default: the value used in training)")
    generate.add_argument("--output", type=Path, default=Path("outputs"), help="folder for the PNG files (default: ./outputs)")
    generate.add_argument(
        "--hidden-init",
        choices=["overall", "per-label"],
        default="overall",
        help="start the hidden layers at their means over all training data, or over the training data of each label (default: overall)",
    )
    _add_data_options(generate)
    generate.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    compare = commands.add_parser("compare", help="several families under one protocol", description="Train several model families under one protocol and tabulate their errors and wall times.")
    compare.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES), help=f"families to run (default: all of {', '.join(FAMILIES)})")
    _add_data_options(compare)
    _add_protocol_options(compare)
    _add_run_options(compare)
    return parser


def check_arguments(args) -> None:
    """Reject invalid options before data loading and training start."""
    device = getattr(args, "device", "cpu")
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was requested but CUDA is not available on this machine")
    for name in ("train_size", "validation_size", "batch_size", "steps"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("epochs", "pretrain_epochs", "finetune_epochs"):
        value = getattr(args, name, None)
        if value is not None and value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0 or more, got {value}")
    for name in ("lr", "finetune_lr"):
        value = getattr(args, name, None)
        if value is not None and not (value > 0 and value < float("inf")):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive finite number, got {value}")
    output = getattr(args, "output", None)
    if output is not None and output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; pass a folder")


def load_data(args, device, generator: torch.Generator, *, with_test: bool = True) -> ClassificationData:
    """Load the protocol's random training subset, a disjoint validation subset, and the test set."""
    train = datasets.mnist(args.data, split="train", download=not args.no_download, device=device)
    if args.train_size + args.validation_size > len(train):
        raise ValueError(
            f"--train-size {args.train_size} plus --validation-size {args.validation_size} exceed the {len(train)} training images"
        )
    rest, validation = datasets.split_validation(train, args.validation_size, generator=generator)
    subset = datasets.random_subset(rest, args.train_size, generator=generator)
    test = datasets.mnist(args.data, split="test", download=not args.no_download, device=device) if with_test else None
    return ClassificationData(
        train_x=subset.images,
        train_labels=subset.labels,
        validation_x=validation.images,
        validation_labels=validation.labels,
        test_x=None if test is None else test.images,
        test_labels=None if test is None else test.labels,
    )


def protocol_from(args) -> Protocol:
    return Protocol(
        hidden=tuple(args.hidden),
        epochs=args.epochs,
        pretrain_epochs=args.pretrain_epochs,
        finetune_epochs=args.finetune_epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        finetune_learning_rate=args.finetune_lr,
        mean_field_steps=args.steps,
        y_units=args.y_units,
        learning_rate_schedule=args.lr_schedule,
    )


def command_train(args) -> None:
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    data = load_data(args, args.device, generator)
    protocol = protocol_from(args)
    trained: dict = {}

    result = run_family(args.family, data, protocol, generator=generator, progress=not args.quiet, trained=trained)
    generative = trained[args.family]
    model = generative.model if isinstance(generative, DeepBeliefNet) else generative
    records = [result.summary()]
    overall, per_label = _hidden_means(model, data, protocol.mean_field_steps)
    training = {"hidden_means": overall, "hidden_means_per_label": per_label}
    if args.finetune_epochs:
        fine = run_family(f"fine-{args.family}", data, protocol, generator=generator, trained=trained)
        records.append(fine.summary())
        training["finetuned"] = {"sizes": [layer.in_features for layer in fine.model.layers] + [fine.model.layers[-1].out_features],
                                 "state": fine.model.state_dict()}

    metadata = {"command": " ".join(sys.argv), "family": args.family, "seed": args.seed, "protocol": protocol.__dict__, "results": records,
                "wall_seconds": time.perf_counter() - start, "train_size": args.train_size, "validation_size": args.validation_size}
    args.output.mkdir(parents=True, exist_ok=True)
    checkpoint = save_checkpoint(args.output / f"{args.family}.pt", model, training=training, metadata=metadata)
    metrics = args.output / f"{args.family}-metrics.json"
    metrics.write_text(json.dumps(metadata, indent=2, default=list))
    for record in records:
        print(f"{record['family']}: validation error {record['validation_error']:.2%}, test error {record['test_error']:.2%}, {record['seconds']:.0f} s")
    print(f"wrote {checkpoint} and {metrics}")


def _hidden_means(model, data: ClassificationData, steps: int) -> tuple[dict, dict]:
    """Means of each hidden layer's mean field with x and y clamped: over all training data, and per label.

    Returns ``(overall, per_label)``: tensors of shape ``(size,)`` and ``(n_classes, size)``.
    """
    if not isinstance(model, DeepRelationalModel):
        return {}, {}
    with torch.no_grad():
        state = model.schedule(("x", "y")).mean_field({"x": data.train_x, "y": data.train_y(model.dtype)}, steps)
    overall = {name: state[name].mean(dim=0) for name in model.hidden_names}
    per_label = {}
    for name in model.hidden_names:
        rows = [state[name][data.train_labels == k].mean(dim=0) for k in range(model.n_classes)]
        per_label[name] = torch.stack(rows)
    return overall, per_label


def command_evaluate(args) -> None:
    model, training, metadata = load_checkpoint(args.checkpoint, map_location=args.device)
    test = datasets.mnist(args.data, split="test", download=not args.no_download, device=args.device)
    if args.readout == "finetuned":
        if "finetuned" not in training:
            raise ValueError(f"checkpoint {args.checkpoint} contains no fine-tuned network; train with --finetune-epochs > 0")
        error = classification_error(_finetuned_network(training, model, args.device), test.images, test.labels)
    else:
        if not isinstance(model, DeepRelationalModel):
            raise ValueError(f"checkpoint {args.checkpoint} contains a {type(model).__name__} without a label layer; mean-field read-out needs a DRM-shaped model")
        if metadata.get("family") == "dbn":
            raise ValueError(f"checkpoint {args.checkpoint} is a DBN, whose label read-out is its top RBM; use --readout finetuned")
        steps = args.steps or metadata.get("protocol", {}).get("mean_field_steps", 10)
        error = mean_field_error(model, test.images.to(model.dtype), test.labels, steps=steps)
    print(f"{args.checkpoint}: test error {error:.2%} ({args.readout} read-out, {len(test)} test images)")


def _finetuned_network(training: dict, model, device) -> FeedForward:
    network = FeedForward(training["finetuned"]["sizes"], dtype=model.dtype, device=device)
    network.load_state_dict(training["finetuned"]["state"])
    return network


def command_generate(args) -> None:
    model, training, metadata = load_checkpoint(args.checkpoint, map_location=args.device)
    if not isinstance(model, DeepRelationalModel):
        raise ValueError(f"checkpoint {args.checkpoint} contains a {type(model).__name__}, which cannot generate from labels; pass a DRM checkpoint")
    steps = args.steps or metadata.get("protocol", {}).get("mean_field_steps", 10)
    with torch.no_grad():
        if args.hidden_init == "per-label":
            if not training.get("hidden_means_per_label"):
                raise ValueError(f"checkpoint {args.checkpoint} has no per-label hidden means; retrain it with this version")
            start = training["hidden_means_per_label"]
        else:
            start = training.get("hidden_means")
        generated = model.generate(torch.arange(model.n_classes, device=args.device), steps, hidden_means=start)
    train = datasets.mnist(args.data, split="train", download=not args.no_download, device=args.device)
    means = torch.stack([train.images[train.labels == k].mean(dim=0) for k in range(model.n_classes)])

    if "finetuned" in training:
        network = _finetuned_network(training, model, args.device)
        with torch.no_grad():
            recognised = network(generated).argmax(dim=1).tolist()
        hits = sum(int(label == digit) for digit, label in enumerate(recognised))
        print(f"the fine-tuned network labels {hits} of {model.n_classes} generated images as their label: {recognised}")

    args.output.mkdir(parents=True, exist_ok=True)
    side = int(round(generated.shape[1] ** 0.5))
    if side * side != generated.shape[1]:
        raise ValueError(f"layer 'x' has {generated.shape[1]} units, not a square image; generate from the Python API instead")
    generated_path = save_image_grid(args.output / "generated.png", generated.reshape(-1, side, side), columns=model.n_classes)
    means_path = save_image_grid(args.output / "label-means.png", means.reshape(-1, side, side), columns=model.n_classes)
    print(f"wrote {generated_path} and {means_path}")


def command_compare(args) -> None:
    generator = torch.Generator().manual_seed(args.seed)
    data = load_data(args, args.device, generator)
    protocol = protocol_from(args)
    trained: dict = {}
    rows = []
    for family in args.families:
        result = run_family(family, data, protocol, generator=generator, progress=not args.quiet, trained=trained)
        rows.append(result.summary())
        print(f"{family:>9}: validation error {result.validation_error:.2%}, test error {result.test_error:.2%}, {result.seconds:.0f} s", flush=True)

    args.output.mkdir(parents=True, exist_ok=True)
    table = args.output / "compare.md"
    lines = ["| family | validation error | test error | seconds |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['family']} | {r['validation_error']:.2%} | {r['test_error']:.2%} | {r['seconds']:.0f} |" for r in rows]
    table.write_text("\n".join(lines) + "\n")
    (args.output / "compare.json").write_text(json.dumps({"seed": args.seed, "protocol": protocol.__dict__, "rows": rows}, indent=2, default=list))
    print(f"wrote {table} and {args.output / 'compare.json'}")


COMMANDS = {"train": command_train, "evaluate": command_evaluate, "generate": command_generate, "compare": command_compare}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_arguments(args)
        COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, CheckpointError, DivergenceError, RuntimeError) as error:
        print(f"ebmgraph {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
