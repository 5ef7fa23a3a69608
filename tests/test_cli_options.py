import argparse

import pytest

from ebmgraph.cli import build_parser
from ebmgraph.cli_options import FAMILY_OPTIONS, PROTOCOL_FIELDS, family_options, given_options, protocol_from, reject_unused, train_options
from ebmgraph.experiments import FAMILIES, Protocol


def test_protocol_defaults_when_nothing_given():
    args = build_parser().parse_args(["train"])

    assert given_options(args) == []
    assert protocol_from(args) == Protocol()


def test_protocol_takes_given_options():
    args = build_parser().parse_args(["train", "--hidden", "30", "20", "--lr", "0.05", "--steps", "4", "--lr-schedule", "linear"])

    protocol = protocol_from(args)

    assert given_options(args) == ["hidden", "lr", "steps", "lr_schedule"]
    assert protocol.hidden == (30, 20)
    assert protocol.learning_rate == 0.05
    assert protocol.mean_field_steps == 4
    assert protocol.learning_rate_schedule == "linear"
    assert protocol.epochs == Protocol().epochs


def test_protocol_options_match_fields():
    parser = build_parser()
    dests = {action.dest for group in parser._subparsers._group_actions for sub in group.choices.values() for action in sub._actions}
    fields = set(Protocol.__dataclass_fields__)

    for dest, field in PROTOCOL_FIELDS.items():
        assert dest in dests, dest
        assert field in fields, field


def test_every_option_some_family_reads():
    read = frozenset().union(*FAMILY_OPTIONS.values(), family_options("fine-drm"))

    assert read == set(PROTOCOL_FIELDS)


def test_fine_families_add_fine_tuning():
    for family in FAMILIES:
        base = family.removeprefix("fine-")
        if family != base:
            assert family_options(family) == FAMILY_OPTIONS[base] | {"finetune_epochs", "finetune_lr"}


@pytest.mark.parametrize("family", ["drm", "dbm", "dbn"])
def test_train_options_include_fine_tuning_and_steps(family):
    assert {"finetune_epochs", "finetune_lr", "steps"} <= train_options(family)


def test_reject_unused_names_option_and_context():
    args = argparse.Namespace(**{dest: None for dest in PROTOCOL_FIELDS})
    args.momentum = 0.5

    with pytest.raises(ValueError, match="--momentum does not apply to --family dnn, which reads only --hidden, --epochs, --batch-size, --finetune-lr"):
        reject_unused(args, FAMILY_OPTIONS["dnn"], "--family dnn")

    reject_unused(args, FAMILY_OPTIONS["rbm"], "--family rbm")
