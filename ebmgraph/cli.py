"""The ``ebmgraph`` command: train, evaluate, generate, compare, reproduce and likelihood, on MNIST.

Every subcommand has ``--help``. Errors in arguments or files end with a one-line
message on standard error and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

from ebmgraph import datasets, distributed, graph_training, kernels, reproduce
from ebmgraph._io import write_atomic
from ebmgraph.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ebmgraph.cli_options import FAMILY_OPTIONS, family_options, protocol_from, reject_unused, train_options
from ebmgraph.estimators.ais import AISResult, ais_log_partition, default_betas
from ebmgraph.estimators.exact import log_partition
from ebmgraph.estimators.likelihood import estimate_log_likelihood
from ebmgraph.experiments import (
    FAMILIES,
    ClassificationData,
    DeepBeliefNet,
    Protocol,
    mean_field_error,
    readout_error,
    run_families,
    run_family,
)
from ebmgraph.images import save_image_grid
from ebmgraph.learning.finetune import FeedForward, classification_error
from ebmgraph.learning.resume import EpochCheckpoint
from ebmgraph.learning.trainer import DivergenceError
from ebmgraph.presets import DeepRelationalModel
from ebmgraph.reproduce import TABLE1_FIRST, TABLE1_SECOND

logger = logging.getLogger("ebmgraph")


def _add_data_options(parser: argparse.ArgumentParser, *, subsets: bool = True) -> None:
    """Add the MNIST location options, and with ``subsets`` the sizes of the training and validation subsets."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", type=Path, default=None, help="folder with the four MNIST IDX files (default: $EBMGRAPH_DATA, then ~/.cache/ebmgraph/mnist)")
    group.add_argument("--no-download", action="store_true", help="fail instead of downloading missing MNIST files")
    if not subsets:
        return
    group.add_argument("--train-size", type=int, default=10_000, help="random training images used for training (default: 10000, as in the DRM paper)")
    group.add_argument("--validation-size", type=int, default=5_000, help="held-out training images used for validation (default: 5000)")


def _add_protocol_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("protocol")
    group.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden layer sizes h1 .. hL (default: 400 400)")
    group.add_argument("--epochs", type=int, default=None, help="epochs of generative training, and of back-propagation for the dnn family (default: 50)")
    group.add_argument("--pretrain-epochs", type=int, default=None, help="epochs of each pretraining RBM; 0 skips pretraining (default: 50)")
    group.add_argument("--finetune-epochs", type=int, default=None, help="epochs of back-propagation fine-tuning of a trained model; the dnn family uses --epochs (default: 10)")
    group.add_argument("--batch-size", type=int, default=None, help="rows per mini-batch (default: 20)")
    group.add_argument("--lr", type=float, default=None, help="learning rate of pretraining and generative training (default: 0.1)")
    group.add_argument("--dbm-lr", type=float, default=None, help="learning rate of the DBM's training after pretraining (default: --lr)")
    group.add_argument("--finetune-lr", type=float, default=None, help="learning rate of back-propagation (default: 0.1)")
    group.add_argument("--momentum", type=float, default=None, help="momentum (default: 0)")
    group.add_argument("--weight-decay", type=float, default=None, help="L2 penalty on weights (default: 0)")
    group.add_argument("--steps", type=int, default=None, help="mean-field sweeps T in training and read-out (default: 10)")
    group.add_argument("--lr-schedule", choices=["constant", "linear"], default=None, help="learning-rate schedule of generative training (default: constant, as in the DRM paper)")
    group.add_argument("--y-units", choices=["bernoulli", "softmax"], default=None, help="unit family of the label layer of the drm and dbm families (default: bernoulli)")


def _add_run_options(parser: argparse.ArgumentParser, *, seed: bool = True) -> None:
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--output", type=Path, default=Path("outputs"), help="folder for results (default: ./outputs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def _add_resume_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("interruption (drm and dbm)")
    group.add_argument(
        "--checkpoint-every-epoch",
        action="store_true",
        help="after pretraining and after every epoch of generative training, replace OUTPUT/FAMILY-training.pt with the "
        "model, optimizer, persistent chains, generator state, epoch and step; the file is written atomically, "
        "and kept as it was if training diverges",
    )
    group.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="PATH",
        help="continue the generative training from a FAMILY-training.pt of an interrupted run started with the same data, "
        "protocol and seed options (--epochs may grow); pretraining is not rerun, because the file contains its result, "
        "and per-epoch checkpoints continue",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ebmgraph", description="Energy-based models over layered graphs, on MNIST.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one model family and save a checkpoint", description="Train one model family on MNIST and save a checkpoint and metrics.")
    train.add_argument("--family", choices=["drm", "dbm", "dbn", "rbm", "dnn"], default=None, help="model family; rbm is x - h with one hidden layer of size --hidden (default: drm)")
    train.add_argument("--graph", type=Path, default=None, metavar="FILE", help="train the graph declared in this JSON file (Graph.to_dict format) instead of a family")
    train.add_argument("--algorithm", choices=["cd", "pcd", "mf-pcd", "mf-cd"], default=None, help="estimator for --graph and --family rbm (default: cd)")
    train.add_argument("--k", type=int, default=None, help="Gibbs sweeps per update of cd, pcd and mf-pcd, for --graph and --family rbm (default: 1)")
    _add_data_options(train)
    _add_protocol_options(train)
    _add_run_options(train)
    _add_resume_options(train)

    evaluate = commands.add_parser("evaluate", help="test error of a checkpoint", description="Measure the MNIST test error of a checkpoint.")
    evaluate.add_argument("checkpoint", type=Path, help="checkpoint written by 'ebmgraph train'")
    evaluate.add_argument(
        "--readout", choices=["mean-field", "finetuned", "top-rbm"], default=None,
        help="classify by mean field, by the fine-tuned network or, for a DBN, by its top RBM (default: top-rbm for a DBN, else mean-field)",
    )
    evaluate.add_argument("--steps", type=int, default=None, help="mean-field sweeps (default: the value used in training)")
    _add_data_options(evaluate, subsets=False)
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
    _add_data_options(generate, subsets=False)
    generate.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    compare = commands.add_parser("compare", help="several families under one protocol", description="Train several model families under one protocol and tabulate their errors and wall times.")
    compare.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES), help=f"families to run (default: all of {', '.join(FAMILIES)})")
    _add_data_options(compare)
    _add_protocol_options(compare)
    _add_run_options(compare)

    likelihood = commands.add_parser(
        "likelihood",
        help="test log-likelihood of a checkpoint by AIS",
        description="Estimate log Z of a checkpoint by annealed importance sampling and the average log-likelihood log p(x) "
        "of stochastically binarised MNIST test images (the other layers, the label layer included, summed out).",
    )
    likelihood.add_argument("checkpoint", type=Path, help="checkpoint written by 'ebmgraph train'")
    likelihood.add_argument("--runs", type=int, default=100, help="parallel AIS runs (default: 100)")
    likelihood.add_argument("--temperatures", type=int, default=14_500, help="AIS inverse temperatures between 0 and 1, spaced as 500:4000:10000 (default: 14500)")
    likelihood.add_argument("--test-size", type=int, default=10_000, help="test images evaluated, the first ones (default: 10000)")
    likelihood.add_argument("--steps", type=int, default=50, help="mean-field sweeps of the variational bound (default: 50)")
    likelihood.add_argument("--seed", type=int, default=0, help="seed of the binarisation and of AIS (default: 0)")
    likelihood.add_argument(
        "--base", choices=["both", "data", "uniform"], default="both",
        help="AIS base model: biases fitted to the binarised training images, all biases zero, or both, keeping the larger "
             "log Z and warning when the two disagree (default: both)",
    )
    likelihood.add_argument(
        "--max-exact-states", type=int, default=2**20,
        help="compute log Z exactly instead when enumeration needs at most this many states; 0 never does (default: 1048576)",
    )
    _add_data_options(likelihood, subsets=False)
    likelihood.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    likelihood.add_argument("--quiet", action="store_true", help="no progress bar")

    reproduce = commands.add_parser(
        "reproduce",
        help="rerun the DRM paper's Table 1, Figure 4 or Figure 5",
        description="Rerun an experiment of the DRM paper and write its table (Markdown and CSV) and figure beside the paper's values. "
        "Rows already in the output folder are kept, so an interrupted run resumes.",
    )
    reproduce.add_argument("experiment", choices=["table1", "figure4", "figure5"], help="what to reproduce")
    reproduce.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds run for every cell (default: 0)")
    reproduce.add_argument("--more-seeds", type=int, nargs="*", default=None, help="further seeds for the [400, 400] cell (default: none)")
    reproduce.add_argument("--first", type=int, nargs="+", default=None, help="table1: sizes of h1 (default: 200 300 400 500)")
    reproduce.add_argument("--second", type=int, nargs="+", default=None, help="table1: sizes of h2 (default: 50 100 200 300 400 500)")
    reproduce.add_argument(
        "--architectures", nargs="+", default=None, help="figure4: hidden sizes as H1xH2[x...] (default: 400x200 400x400)"
    )
    reproduce.add_argument("--families", nargs="+", choices=FAMILIES, default=None, help="figure4: families to run (default: all)")
    _add_data_options(reproduce)
    _add_protocol_options(reproduce)
    # --seeds replaces --seed here, so a lone --seed N is read as --seeds N rather than ignored.
    _add_run_options(reproduce, seed=False)
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """Reject invalid options before data loading and training start."""
    device = getattr(args, "device", "cpu")
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was requested but CUDA is not available on this machine")
    for name in ("train_size", "validation_size", "batch_size", "steps", "runs", "test_size", "k"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    epochs = getattr(args, "epochs", None)
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")
    for name in ("pretrain_epochs", "finetune_epochs"):
        value = getattr(args, name, None)
        if value is not None and value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0 or more, got {value}")
    families = [getattr(args, "family", None), *(getattr(args, "families", None) or [])]
    if getattr(args, "experiment", None) == "figure4" and getattr(args, "families", None) is None:
        families += FAMILIES
    if getattr(args, "pretrain_epochs", None) == 0 and any(family in ("dbn", "fine-dbn") for family in families):
        raise ValueError("--pretrain-epochs 0 would leave the DBN untrained, because its training is the pretraining; pass 1 or more")
    for name in ("lr", "finetune_lr", "dbm_lr"):
        value = getattr(args, name, None)
        if value is not None and not (value > 0 and value < float("inf")):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive finite number, got {value}")
    for name in ("first", "second"):
        for value in getattr(args, name, None) or []:
            if value < 1:
                raise ValueError(f"--{name} sizes must be at least 1, got {value}")
    for text in getattr(args, "architectures", None) or []:
        _architecture(text)
    output = getattr(args, "output", None)
    if output is not None and output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; pass a folder")


def _architecture(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split("x"))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--architectures entry {text!r} is not hidden sizes such as 400x200")
    return sizes


def load_data(
    args: argparse.Namespace, device: torch.device | str, generator: torch.Generator, *, with_test: bool = True
) -> ClassificationData:
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


DEFAULT_FAMILY = "drm"


def command_train(args: argparse.Namespace) -> None:
    if args.graph is not None and args.family is not None:
        raise ValueError("pass either --graph or --family, not both: the graph file declares the model")
    if args.graph is None and args.family is None:
        args.family = DEFAULT_FAMILY
    _check_model_options(args)
    if args.graph is not None or args.family in ("rbm", "dnn"):
        command_train_other(args)
        return
    if args.algorithm is not None:
        raise ValueError(f"--algorithm applies to --graph and --family rbm; --family {args.family} has its own recipe")
    # Under torchrun every rank trains on its shard of each mini-batch, and rank 0 alone logs, writes and prints.
    args.device = str(distributed.init_from_environment(args.device))
    main_process = distributed.is_main_process()
    if not main_process:
        logging.getLogger().setLevel(logging.WARNING)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    start = time.perf_counter()
    epoch_checkpoint, resume = resume_options(args)
    data = load_data(args, args.device, generator)
    protocol = protocol_from(args)
    trained: dict = {}

    result = run_family(args.family, data, protocol, generator=generator, progress=not args.quiet and main_process, trained=trained,
                        checkpoint=epoch_checkpoint, resume=resume)
    generative = trained[args.family]
    model = generative.model if isinstance(generative, DeepBeliefNet) else generative
    records = [result.summary()]
    overall, per_label = _hidden_means(model, data, protocol.mean_field_steps)
    training = {"hidden_means": overall, "hidden_means_per_label": per_label}
    if isinstance(generative, DeepBeliefNet):
        training["top_rbm"] = generative.top_state()
    if protocol.finetune_epochs:
        fine = run_family(f"fine-{args.family}", data, protocol, generator=generator, trained=trained)
        records.append(fine.summary())
        training["finetuned"] = {"sizes": [layer.in_features for layer in fine.model.layers] + [fine.model.layers[-1].out_features],
                                 "state": fine.model.state_dict()}

    metadata = {"command": " ".join(sys.argv), "family": args.family, "seed": args.seed, "protocol": protocol.__dict__, "results": records,
                "wall_seconds": time.perf_counter() - start, "train_size": args.train_size, "validation_size": args.validation_size,
                "world_size": distributed.get_world_size()}
    if not main_process:
        return
    args.output.mkdir(parents=True, exist_ok=True)
    checkpoint = save_checkpoint(args.output / f"{args.family}.pt", model, training=training, metadata=metadata)
    metrics = args.output / f"{args.family}-metrics.json"
    metrics.write_text(json.dumps(metadata, indent=2, default=list))
    for record in records:
        print(f"{record['family']}: validation error {record['validation_error']:.2%}, test error {record['test_error']:.2%}, {record['seconds']:.0f} s")
    print(f"wrote {checkpoint} and {metrics}")


def _check_model_options(args: argparse.Namespace) -> None:
    """Reject options that the chosen model would ignore."""
    model = "--graph" if args.graph is not None else f"--family {args.family}"
    if args.dbm_lr is not None and model != "--family dbm":
        raise ValueError("--dbm-lr applies to --family dbm only; other models train at --lr")
    if args.y_units is not None and model == "--graph":
        raise ValueError("--y-units does not apply to --graph, because the graph file declares the units of every layer")
    if args.y_units is not None and model == "--family dbn":
        raise ValueError("--y-units does not apply to --family dbn, whose top RBM always has softmax label units")
    if args.y_units is not None and model not in ("--family drm", "--family dbm"):
        raise ValueError(f"--y-units sets the label layer of --family drm and dbm, but {model} has no label layer")
    if args.hidden is not None and model == "--graph":
        raise ValueError("--hidden does not apply to --graph, because the graph file declares its layer sizes")
    if args.hidden is not None and model == "--family rbm" and len(args.hidden) != 1:
        raise ValueError(f"--family rbm has one hidden layer, so --hidden takes one size (got {args.hidden})")
    if args.k is not None:
        if model not in ("--graph", "--family rbm"):
            raise ValueError(f"--k applies to --graph and --family rbm only, because {model} trains by its own recipe")
        if args.algorithm == "mf-cd":
            raise ValueError("--k sets the Gibbs sweeps of cd, pcd and mf-pcd, but mf-cd runs mean field instead")
    if args.graph is not None:
        reject_unused(args, FAMILY_OPTIONS["graph"], "--graph")
    else:
        reject_unused(args, train_options(args.family), model)


def command_train_other(args: argparse.Namespace) -> None:
    """Train a graph file, the RBM or the DNN; write ``NAME.pt`` (or ``dnn-network.pt``) and ``NAME-metrics.json``."""
    if args.checkpoint_every_epoch or args.resume is not None:
        raise ValueError("--checkpoint-every-epoch and --resume apply to --family drm and dbm")
    if distributed.get_world_size() > 1 or "WORLD_SIZE" in os.environ:
        raise ValueError("--graph, --family rbm and --family dnn run as a single process; launch them without torchrun")
    if args.graph is None and args.family == "dnn" and args.algorithm is not None:
        raise ValueError("--algorithm applies to --graph and --family rbm; --family dnn trains by back-propagation alone")
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    start = time.perf_counter()
    graph = None if args.graph is None else graph_training.read_graph(args.graph)
    data = load_data(args, args.device, generator)
    protocol = protocol_from(args)

    if args.graph is None and args.family == "dnn":
        name = "dnn"
        record, network = graph_training.train_dnn(data, protocol, generator)
        records = [record]
        args.output.mkdir(parents=True, exist_ok=True)
        written = write_atomic(args.output / "dnn-network.pt", lambda handle: torch.save(network, handle))
    else:
        name = "rbm" if args.graph is None else args.graph.stem
        graph = graph or graph_training.rbm_graph(data.train_x.shape[1], protocol.hidden[0])
        model = graph_training.build_model(graph, data, generator)
        record = graph_training.train_graph(model, data, protocol, algorithm=args.algorithm or "cd", k=args.k or 1, generator=generator,
                                            progress=not args.quiet)
        record["family"] = name
        records = [record]
        args.output.mkdir(parents=True, exist_ok=True)
        written = save_checkpoint(args.output / f"{name}.pt", model, metadata={"command": " ".join(sys.argv), "family": name, "seed": args.seed})

    metadata = {"command": " ".join(sys.argv), "family": name, "seed": args.seed, "protocol": protocol.__dict__, "results": records,
                "wall_seconds": time.perf_counter() - start, "train_size": args.train_size, "validation_size": args.validation_size}
    metrics = args.output / f"{name}-metrics.json"
    metrics.write_text(json.dumps(metadata, indent=2, default=list))
    for record in records:
        figures = [f"{key.replace('_', ' ')} {record[key]:.2%}" for key in ("validation_error", "test_error") if record.get(key) is not None]
        if "reconstruction_error" in record:
            figures.append(f"validation reconstruction error {record['reconstruction_error']:.4g}")
        print(f"{record['family']}: {', '.join(figures)}, {record['seconds']:.0f} s")
    print(f"wrote {written} and {metrics}")


# Protocol fields that may differ between an interrupted run and its resumption: the
# number of epochs may grow, and fine-tuning runs only after the generative training.
RESUMABLE_CHANGES = ("epochs", "finetune_epochs", "finetune_learning_rate")
OPTION_NAMES = {"learning_rate": "--lr", "mean_field_steps": "--steps", "learning_rate_schedule": "--lr-schedule", "dbm_learning_rate": "--dbm-lr"}


def resume_options(args: argparse.Namespace) -> tuple[EpochCheckpoint | None, Path | None]:
    """Return the per-epoch checkpoint and the file to resume from, after checking that the file fits this run."""
    if not args.checkpoint_every_epoch and args.resume is None:
        return None, None
    family = args.family or DEFAULT_FAMILY
    if family not in ("drm", "dbm"):
        raise ValueError(f"--checkpoint-every-epoch and --resume apply to the generative training of drm and dbm; --family {family} has none")
    identity = {
        "family": family,
        "seed": args.seed,
        "train_size": args.train_size,
        "validation_size": args.validation_size,
        "protocol": json.loads(json.dumps(protocol_from(args).__dict__, default=list)),
    }
    if args.resume is not None:
        _check_resume_file(args.resume, identity)
    return EpochCheckpoint(args.output / f"{family}-training.pt", metadata=identity), args.resume


def _check_resume_file(path: Path, identity: dict) -> None:
    """Raise ValueError naming the first option whose value differs from the run that wrote ``path``."""
    _, training, saved = load_checkpoint(path)
    if "trainer" not in training:
        raise ValueError(f"--resume {path} contains no training state; pass a FAMILY-training.pt written with --checkpoint-every-epoch")
    pairs = [(f"--{key.replace('_', '-')}", saved.get(key), identity[key]) for key in ("family", "seed", "train_size", "validation_size")]
    saved_protocol = saved.get("protocol", {})
    for key, value in identity["protocol"].items():
        if key not in RESUMABLE_CHANGES:
            pairs.append((OPTION_NAMES.get(key, f"--{key.replace('_', '-')}"), saved_protocol.get(key), value))
    for option, before, now in pairs:
        if before != now:
            raise ValueError(
                f"--resume {path} was written with {option} {before}, but this run has {option} {now}; "
                "pass the options of the interrupted run"
            )


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


def command_evaluate(args: argparse.Namespace) -> None:
    model, training, metadata = load_checkpoint(args.checkpoint, map_location=args.device)
    is_dbn = metadata.get("family") == "dbn"
    readout = args.readout or ("top-rbm" if is_dbn else "mean-field")
    test = datasets.mnist(args.data, split="test", download=not args.no_download, device=args.device)
    if readout == "finetuned":
        if "finetuned" not in training:
            raise ValueError(f"checkpoint {args.checkpoint} contains no fine-tuned network; train with --finetune-epochs > 0")
        error = classification_error(_finetuned_network(training, model, args.device), test.images, test.labels)
    elif readout == "top-rbm":
        if "top_rbm" not in training:
            raise ValueError(f"checkpoint {args.checkpoint} contains no top RBM; the top-rbm read-out needs a DBN trained by this version")
        dbn = DeepBeliefNet.from_top_state(model, training["top_rbm"])
        error = readout_error(dbn.classify, test.images.to(model.dtype), test.labels)
    else:
        if not isinstance(model, DeepRelationalModel):
            raise ValueError(f"checkpoint {args.checkpoint} contains a model of class {type(model).__name__} without a label layer; mean-field read-out needs a DRM-shaped model")
        if is_dbn:
            raise ValueError(f"checkpoint {args.checkpoint} is a DBN, whose label read-out is its top RBM; use --readout top-rbm or finetuned")
        steps = args.steps or metadata.get("protocol", {}).get("mean_field_steps", 10)
        error = mean_field_error(model, test.images.to(model.dtype), test.labels, steps=steps)
    print(f"{args.checkpoint}: test error {error:.2%} ({readout} read-out, {len(test)} test images)")


def _finetuned_network(training: dict, model, device) -> FeedForward:
    network = FeedForward(training["finetuned"]["sizes"], dtype=model.dtype, device=device)
    network.load_state_dict(training["finetuned"]["state"])
    return network


def command_generate(args: argparse.Namespace) -> None:
    model, training, metadata = load_checkpoint(args.checkpoint, map_location=args.device)
    if not isinstance(model, DeepRelationalModel):
        raise ValueError(f"checkpoint {args.checkpoint} contains a model of class {type(model).__name__}, which cannot generate from labels; pass a DRM checkpoint")
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


def command_likelihood(args: argparse.Namespace) -> None:
    if args.temperatures < 10:
        raise ValueError(f"--temperatures must be at least 10, got {args.temperatures}")
    model, _, metadata = load_checkpoint(args.checkpoint, map_location=args.device)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    train = datasets.mnist(args.data, split="train", download=not args.no_download, device=args.device, dtype=model.dtype)
    test = datasets.mnist(args.data, split="test", download=not args.no_download, device=args.device, dtype=model.dtype)
    if "x" not in model.graph.visible:
        raise ValueError(f"checkpoint {args.checkpoint} has no visible layer 'x' for the MNIST images")

    # The models are trained on intensities in [0, 1]; likelihoods are reported, as is usual
    # for MNIST, on images binarised by sampling each pixel with its intensity.
    data = {"x": datasets.binarize(train.images, generator=generator)}
    if "y" in model.graph.visible:
        data["y"] = datasets.one_hot(train.labels, model.graph["y"].size, dtype=model.dtype)
    observed = {"x": datasets.binarize(test.images[: args.test_size], generator=generator)}
    betas = default_betas(_temperature_segments(args.temperatures))

    start = time.perf_counter()
    log_z = _exact_log_partition(model, args.max_exact_states)
    if log_z is None:
        log_z = _ais_log_partition(model, data, args, generator, betas)
    estimate = estimate_log_likelihood(model, observed, log_z, steps=args.steps)
    seconds = time.perf_counter() - start
    kind = "exact free energy" if estimate.exact_free_energy else "mean-field lower bound on log p(x) - log Z"
    print(f"average test log p(x) = {estimate.mean:.2f} nats (interval {estimate.low:.2f} .. {estimate.high:.2f}; {kind}; "
          f"{estimate.n_rows} binarised test images, {seconds:.0f} s)")


def _exact_log_partition(model, max_states: int) -> float | None:
    """Exact log Z when enumeration needs at most ``max_states`` states, else None."""
    if max_states < 1:
        return None
    try:
        log_z = float(log_partition(model, max_states=max_states))
    except ValueError as error:
        logger.info("log Z by AIS: %s", error)
        return None
    print(f"log Z = {log_z:.2f} (exact, by enumeration)")
    return log_z


AIS_DISAGREEMENT_NATS = 1.0
"""Gap between the two bases' AIS estimates of log Z above which ``likelihood`` warns."""


def _ais_log_partition(model, data: dict, args: argparse.Namespace, generator: torch.Generator, betas) -> AISResult:
    """AIS from the chosen base models; with both, the larger estimate, and a warning when they disagree.

    AIS misses the modes that its path from the base never reaches, and then all
    runs agree on a value that is too low: a tight interval and a large effective
    sample size do not show it. Two bases that disagree do.
    """
    bases = {"data": ["data"], "uniform": [None], "both": ["data", None]}[args.base]
    results = []
    for base in bases:
        fitted_to = data if base == "data" else None
        result = ais_log_partition(model, fitted_to, generator=generator, base=base, betas=betas, n_runs=args.runs, progress=not args.quiet)
        name = "data-fitted" if base == "data" else "uniform"
        print(f"log Z = {result.log_z:.2f} by AIS from the {name} base (interval {result.log_z_low:.2f} .. {result.log_z_high:.2f}, "
              f"{args.runs} runs, {len(betas)} temperatures, effective sample size {result.effective_sample_size:.1f})")
        results.append(result)
    if len(results) == 2 and abs(results[0].log_z - results[1].log_z) > AIS_DISAGREEMENT_NATS:
        logger.warning(
            "the two AIS estimates of log Z disagree by %.2f nats, so at least one missed part of the model's mass; the "
            "larger is used, and more temperatures (--temperatures) may raise it further",
            abs(results[0].log_z - results[1].log_z),
        )
    return max(results, key=lambda result: result.log_z)


def _temperature_segments(count: int) -> list[tuple[float, int]]:
    """Split ``count`` temperature steps over [0, 0.5], [0.5, 0.9] and [0.9, 1] in the ratio 500 : 4000 : 10000."""
    first = max(1, round(count * 500 / 14_500))
    second = max(1, round(count * 4_000 / 14_500))
    return [(0.5, first), (0.9, second), (1.0, max(1, count - 1 - first - second))]


def command_compare(args: argparse.Namespace) -> None:
    used = frozenset().union(*(family_options(family) for family in args.families))
    reject_unused(args, used, f"compare --families {' '.join(args.families)}")
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    data = load_data(args, args.device, generator)
    protocol = protocol_from(args)
    rows = []
    for result in run_families(args.families, data, protocol, generator=generator, progress=not args.quiet):
        family = result.family
        rows.append(result.summary())
        print(f"{family:>9}: validation error {result.validation_error:.2%}, test error {result.test_error:.2%}, {result.seconds:.0f} s", flush=True)

    args.output.mkdir(parents=True, exist_ok=True)
    table = args.output / "compare.md"
    lines = ["| family | validation error | test error | seconds |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['family']} | {r['validation_error']:.2%} | {r['test_error']:.2%} | {r['seconds']:.0f} |" for r in rows]
    table.write_text("\n".join(lines) + "\n")
    (args.output / "compare.json").write_text(json.dumps({"seed": args.seed, "protocol": protocol.__dict__, "rows": rows}, indent=2, default=list))
    print(f"wrote {table} and {args.output / 'compare.json'}")


def command_reproduce(args: argparse.Namespace) -> None:
    _check_reproduce_options(args)
    protocol = protocol_from(args)
    command = "ebmgraph " + " ".join(sys.argv[1:])

    def load(seed: int) -> ClassificationData:
        return load_data(args, args.device, torch.Generator(device=args.device).manual_seed(seed))

    common = {"command": command, "progress": not args.quiet}
    settings = {"train_size": args.train_size, "validation_size": args.validation_size}
    more_seeds = args.more_seeds or []
    if args.experiment == "table1":
        path = reproduce.table1(load, protocol, args.output, seeds=args.seeds, more_seeds=more_seeds,
                                first=args.first or list(TABLE1_FIRST), second=args.second or list(TABLE1_SECOND),
                                settings=settings, **common)
    elif args.experiment == "figure4":
        architectures = args.architectures or list(FIGURE4_ARCHITECTURES)
        path = reproduce.figure4(load, protocol, args.output, seeds=args.seeds, more_seeds=more_seeds,
                                 hidden_sizes=[_architecture(text) for text in architectures], families=args.families or list(FAMILIES),
                                 settings=settings, **common)
    else:
        if len(args.seeds) > 1:
            raise ValueError(f"figure5 trains one DRM; pass one --seeds value, got --seeds {args.seeds}")
        path = reproduce.figure5(load, protocol, args.output, seed=args.seeds[0], **common)
    print(path.read_text())
    print(f"wrote {path} and the files beside it in {args.output}")


# Options of ``ebmgraph reproduce`` that only some experiments read.
REPRODUCE_OPTIONS = {"first": ("table1",), "second": ("table1",), "architectures": ("figure4",), "families": ("figure4",),
                     "more_seeds": ("table1", "figure4")}
FIGURE4_ARCHITECTURES = ("400x200", "400x400")


def _check_reproduce_options(args: argparse.Namespace) -> None:
    """Reject options that the chosen experiment would ignore."""
    experiment = args.experiment
    for dest, experiments in REPRODUCE_OPTIONS.items():
        if getattr(args, dest) is not None and experiment not in experiments:
            raise ValueError(f"--{dest.replace('_', '-')} applies to reproduce {' and '.join(experiments)} only, not to {experiment}")
    if args.hidden is not None and experiment != "figure5":
        sizes = "--first and --second" if experiment == "table1" else "--architectures"
        raise ValueError(f"--hidden does not apply to reproduce {experiment}, which takes its hidden sizes from {sizes}")

    # Table 1 and Figure 4 set their hidden sizes per cell, so --hidden is not among the options they read.
    if experiment == "table1":
        used = family_options("drm") - {"hidden"}
    elif experiment == "figure4":
        used = frozenset().union(*(family_options(family) for family in args.families or FAMILIES)) - {"hidden"}
    else:
        used = family_options("fine-drm")
    reject_unused(args, used, f"reproduce {experiment}")


COMMANDS = {"train": command_train, "evaluate": command_evaluate, "generate": command_generate, "compare": command_compare, "reproduce": command_reproduce, "likelihood": command_likelihood}


def _resume_hint(args: argparse.Namespace) -> str:
    """Say how to continue an interrupted command, where it saved what it needs."""
    if getattr(args, "checkpoint_every_epoch", False) or getattr(args, "resume", None) is not None:
        return f"; continue with the same options and --resume {args.output / f'{args.family or DEFAULT_FAMILY}-training.pt'}"
    if args.command == "reproduce":
        return f"; rerun the same command to continue, the finished runs in {args.output} are kept"
    return ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_arguments(args)
        kernels.load_if_requested()
        COMMANDS[args.command](args)
        distributed.shutdown(wait_for_ranks=True)
    except (ValueError, TypeError, OSError, CheckpointError, DivergenceError, RuntimeError) as error:
        print(f"ebmgraph {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ebmgraph {args.command}: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
