"""Train several model families on one MNIST subset under one protocol and compare their errors.

Every family shares the chain of layers ``x - h1 - ... - hL - y`` and the data;
they differ in how the weights are learned (see :mod:`ebmgraph.experiments`):
``dnn`` (back-propagation from random weights), ``dbn``, ``dbm`` and ``drm``
(generative training with their own recipes, read out without back-propagation),
and ``fine-dbn``, ``fine-dbm``, ``fine-drm`` (each unrolled into a feed-forward
network and fine-tuned). The script prints each family's validation and test
error and its wall time.

    python examples/compare_families.py --data DIR            # 79 s in all
    python examples/compare_families.py --data DIR --quick    # 21 s of training in all

(seed 0, measured on a 2-core CPU shared with other jobs). With the full
settings the test errors were 13.03 % (dnn), 9.41 % (dbn), 7.02 % (fine-dbn),
24.03 % (dbm), 8.54 % (fine-dbm), 9.17 % (drm) and 6.02 % (fine-drm).

``DIR`` contains the four MNIST IDX files (see ``examples/drm_mnist.py``).
``ebmgraph compare`` runs the same comparison with the DRM paper's protocol.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ebmgraph import datasets
from ebmgraph.experiments import FAMILIES, ClassificationData, Protocol, run_family

FULL = {"train_size": 5_000, "validation_size": 1_000, "test_size": 10_000,
        "protocol": Protocol(hidden=(200, 200), epochs=10, pretrain_epochs=5, finetune_epochs=5, y_units="softmax")}
QUICK = {"train_size": 1_000, "validation_size": 500, "test_size": 1_000,
         "protocol": Protocol(hidden=(100, 50), epochs=5, pretrain_epochs=3, finetune_epochs=5, y_units="softmax")}


def load(args, settings: dict, generator: torch.Generator) -> ClassificationData:
    """Draw a random training subset, a disjoint validation subset and a random test subset."""
    train = datasets.mnist(args.data, split="train", download=not args.no_download)
    test = datasets.random_subset(datasets.mnist(args.data, split="test", download=not args.no_download), settings["test_size"], generator=generator)
    rest, validation = datasets.split_validation(train, settings["validation_size"], generator=generator)
    subset = datasets.random_subset(rest, settings["train_size"], generator=generator)
    return ClassificationData(subset.images, subset.labels, validation.images, validation.labels, test.images, test.labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with the four MNIST IDX files")
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading missing MNIST files")
    parser.add_argument("--quick", action="store_true", help="1,000 training images, hidden layers [100, 50], 3 pretraining and 5 training epochs")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES), help="families to run (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    generator = torch.Generator().manual_seed(args.seed)

    data = load(args, settings, generator)
    protocol = settings["protocol"]
    print(f"{settings['train_size']} training, {settings['validation_size']} validation and {settings['test_size']} test images; "
          f"hidden layers {list(protocol.hidden)}, {protocol.epochs} epochs, {protocol.pretrain_epochs} pretraining epochs per RBM")
    trained: dict = {}
    print(f"{'family':>9}  {'validation error':>16}  {'test error':>10}  {'seconds':>7}")
    for family in args.families:
        # ``trained`` keeps each generative model, so fine-drm fine-tunes the model that drm trained.
        result = run_family(family, data, protocol, generator=generator, trained=trained)
        print(f"{family:>9}  {result.validation_error:>16.2%}  {result.test_error:>10.2%}  {result.seconds:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
