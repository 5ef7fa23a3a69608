import json
import re
from pathlib import Path

import pytest
import torch

from ebmgraph import experiments, rbm
from ebmgraph.checkpoint import load_checkpoint, save_checkpoint
from ebmgraph.cli import COMMANDS, build_parser, main, resume_options
from ebmgraph.estimators import log_partition

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST files not found in {MNIST_DIR}")

TINY = ["--data", str(MNIST_DIR), "--no-download", "--train-size", "200", "--validation-size", "100", "--hidden", "16", "12",
        "--epochs", "1", "--pretrain-epochs", "1", "--finetune-epochs", "1", "--quiet"]
# The options that a graph file, the RBM and the DNN read: no hidden sizes, pretraining or fine-tuning.
TINY_GRAPH = ["--data", str(MNIST_DIR), "--no-download", "--train-size", "200", "--validation-size", "100", "--epochs", "1", "--quiet"]


@needs_mnist
def test_dbn_evaluate_reproduces_top_rbm_error(tmp_path, capsys):
    dbn_options = ["--data", str(MNIST_DIR), "--no-download", "--train-size", "200", "--validation-size", "100", "--quiet",
                   "--hidden", "16", "12", "--pretrain-epochs", "1", "--finetune-epochs", "0"]
    assert main(["train", "--family", "dbn", *dbn_options, "--output", str(tmp_path)]) == 0
    trained = re.search(r"dbn: validation error [0-9.]+%, test error ([0-9.]+)%", capsys.readouterr().out).group(1)

    assert main(["evaluate", str(tmp_path / "dbn.pt"), "--data", str(MNIST_DIR), "--no-download"]) == 0

    output = capsys.readouterr().out
    assert f"test error {trained}% (top-rbm read-out" in output
    assert main(["evaluate", str(tmp_path / "dbn.pt"), "--readout", "mean-field", "--data", str(MNIST_DIR), "--no-download"]) == 2
    assert "use --readout top-rbm or finetuned" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "evaluate", "generate", "compare", "reproduce", "likelihood"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: ebmgraph" in capsys.readouterr().out


@needs_mnist
def test_train_evaluate_generate_round_trip(tmp_path, capsys):
    assert main(["train", *TINY, "--output", str(tmp_path)]) == 0
    output = capsys.readouterr().out
    assert f"wrote {tmp_path / 'drm.pt'}" in output

    model, training, metadata = load_checkpoint(tmp_path / "drm.pt")
    assert model.graph.layer_names == ("x", "h1", "h2", "y")
    assert sorted(training["hidden_means"]) == ["h1", "h2"]
    assert [r["family"] for r in metadata["results"]] == ["drm", "fine-drm"]
    assert json.loads((tmp_path / "drm-metrics.json").read_text())["seed"] == 0

    assert main(["evaluate", str(tmp_path / "drm.pt"), "--data", str(MNIST_DIR), "--no-download"]) == 0
    assert "test error" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "drm.pt"), "--readout", "finetuned", "--data", str(MNIST_DIR), "--no-download"]) == 0
    assert "finetuned read-out" in capsys.readouterr().out

    assert main(["generate", str(tmp_path / "drm.pt"), "--output", str(tmp_path), "--data", str(MNIST_DIR), "--no-download"]) == 0
    assert (tmp_path / "generated.png").read_bytes().startswith(b"\x89PNG")
    assert training["hidden_means_per_label"]["h2"].shape == (10, 12)
    generate_per_label = ["generate", str(tmp_path / "drm.pt"), "--hidden-init", "per-label", "--output", str(tmp_path / "per-label")]
    assert main([*generate_per_label, "--data", str(MNIST_DIR), "--no-download"]) == 0
    assert (tmp_path / "per-label" / "generated.png").is_file()
    assert (tmp_path / "label-means.png").is_file()


@needs_mnist
def test_compare_writes_table(tmp_path, capsys):
    assert main(["compare", "--families", "dnn", "dbn", "fine-dbn", *TINY, "--output", str(tmp_path)]) == 0
    table = (tmp_path / "compare.md").read_text()
    assert "| dnn |" in table
    assert "| fine-dbn |" in table
    assert len(json.loads((tmp_path / "compare.json").read_text())["rows"]) == 3


def test_missing_checkpoint_exits_with_status_2(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "absent.pt"), "--no-download", "--data", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ebmgraph evaluate: error:")
    assert "absent.pt not found" in error
    assert "Traceback" not in error


def test_missing_data_exits_with_status_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--no-download", "--quiet", "--output", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_failed_download_exits_with_status_2(tmp_path, capsys, monkeypatch):
    from ebmgraph import datasets

    def unreachable(url):
        raise OSError("network is unreachable")

    monkeypatch.setattr(datasets, "_fetch", unreachable)

    assert main(["train", "--data", str(tmp_path), "--quiet", "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ebmgraph train: error: failed to download")
    assert "Traceback" not in error


@needs_mnist
def test_oversized_split_exits_with_status_2(tmp_path, capsys):
    args = ["train", "--data", str(MNIST_DIR), "--no-download", "--train-size", "59000", "--validation-size", "5000", "--output", str(tmp_path)]
    assert main(args) == 2
    assert "exceed the 60000 training images" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--device", "bogus"], "--device 'bogus' is not a torch device"),
        (["--validation-size", "0"], "--validation-size must be at least 1"),
        (["--finetune-lr", "nan"], "--finetune-lr must be a positive finite number"),
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--pretrain-epochs", "-1"], "--pretrain-epochs must be 0 or more"),
    ],
)
def test_invalid_options_fail_before_training(options, message, tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--no-download", "--quiet", "--output", str(tmp_path), *options]) == 2
    assert message in capsys.readouterr().err


def test_output_file_is_rejected_before_training(tmp_path, capsys):
    existing = tmp_path / "taken"
    existing.write_text("")
    assert main(["train", "--data", str(tmp_path), "--no-download", "--quiet", "--output", str(existing)]) == 2
    assert "is a file; pass a folder" in capsys.readouterr().err


TWO_EPOCHS = ["--data", str(MNIST_DIR), "--no-download", "--train-size", "200", "--validation-size", "100", "--hidden", "16", "12",
              "--epochs", "2", "--pretrain-epochs", "1", "--finetune-epochs", "1", "--quiet"]


class Interrupted(Exception):
    """Stands for a kill signal arriving while the second epoch ends."""


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The checkpoint of one uninterrupted two-epoch run with seed 0."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST files not found in {MNIST_DIR}")
    output = tmp_path_factory.mktemp("reference")
    assert main(["train", *TWO_EPOCHS, "--output", str(output)]) == 0
    return load_checkpoint(output / "drm.pt")


def assert_same_run(first, second):
    """Compare two saved runs: parameters, fine-tuned network and per-epoch history, bit for bit."""
    model, training, metadata = first
    other_model, other_training, other_metadata = second
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, other_model.state_dict()[name]), name
    for name, tensor in training["finetuned"]["state"].items():
        assert torch.equal(tensor, other_training["finetuned"]["state"][name]), name
    assert metadata["results"][0]["history"] == other_metadata["results"][0]["history"]


@needs_mnist
def test_same_seed_trains_identical_parameters(reference_run, tmp_path):
    assert main(["train", *TWO_EPOCHS, "--output", str(tmp_path)]) == 0
    assert_same_run(reference_run, load_checkpoint(tmp_path / "drm.pt"))


@needs_mnist
def test_interrupted_training_resumes_identically(reference_run, tmp_path, monkeypatch):
    make_callback = experiments._validation_callback

    def interrupting_callback(data, steps):
        callback = make_callback(data, steps)

        def interrupt_in_second_epoch(trainer, record):
            callback(trainer, record)
            if record["epoch"] == 2:
                raise Interrupted

        return interrupt_in_second_epoch

    monkeypatch.setattr(experiments, "_validation_callback", interrupting_callback)
    with pytest.raises(Interrupted):
        main(["train", *TWO_EPOCHS, "--checkpoint-every-epoch", "--output", str(tmp_path)])
    monkeypatch.undo()
    saved = tmp_path / "drm-training.pt"
    assert load_checkpoint(saved)[1]["trainer"]["epoch"] == 1
    assert not (tmp_path / "drm.pt").exists()

    assert main(["train", *TWO_EPOCHS, "--resume", str(saved), "--output", str(tmp_path)]) == 0

    assert_same_run(reference_run, load_checkpoint(tmp_path / "drm.pt"))
    assert load_checkpoint(saved)[1]["trainer"]["epoch"] == 2


def training_file(tmp_path, options):
    """A small training checkpoint whose metadata describes a run with ``options``."""
    args = build_parser().parse_args(["train", "--output", str(tmp_path), "--checkpoint-every-epoch", *options])
    epoch_checkpoint, _ = resume_options(args)
    return save_checkpoint(tmp_path / "drm-training.pt", rbm(3, 2), training={"trainer": {}}, metadata=epoch_checkpoint.metadata)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--seed", "1"], "was written with --seed 0, but this run has --seed 1"),
        (["--hidden", "16", "8"], "was written with --hidden \\[400, 400\\], but this run has --hidden \\[16, 8\\]"),
        (["--lr", "0.05"], "was written with --lr 0.1, but this run has --lr 0.05"),
        (["--train-size", "300"], "was written with --train-size 10000, but this run has --train-size 300"),
    ],
)
def test_resume_with_other_options_exits_with_status_2(options, message, tmp_path, capsys):
    path = training_file(tmp_path, [])
    arguments = ["train", "--resume", str(path), "--data", str(tmp_path), "--no-download", "--quiet", "--output", str(tmp_path)]
    assert main([*arguments, *options]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_resume_may_add_epochs(tmp_path):
    path = training_file(tmp_path, [])
    args = build_parser().parse_args(["train", "--resume", str(path), "--epochs", "80", "--output", str(tmp_path)])
    epoch_checkpoint, resume = resume_options(args)
    assert resume == path
    assert epoch_checkpoint.path == tmp_path / "drm-training.pt"


def test_resume_of_model_checkpoint_exits_with_status_2(tmp_path, capsys):
    path = save_checkpoint(tmp_path / "drm.pt", rbm(3, 2))
    assert main(["train", "--resume", str(path), "--data", str(tmp_path), "--no-download", "--quiet", "--output", str(tmp_path)]) == 2
    assert "contains no training state" in capsys.readouterr().err


def test_checkpoint_every_epoch_rejected_for_dbn(tmp_path, capsys):
    arguments = ["train", "--family", "dbn", "--checkpoint-every-epoch", "--data", str(tmp_path), "--no-download", "--output", str(tmp_path)]
    assert main(arguments) == 2
    assert "--family dbn has none" in capsys.readouterr().err


@needs_mnist
def test_train_graph_file_classifies(tmp_path, capsys):
    from ebmgraph import Graph

    graph = Graph()
    graph.add_layer("x", 784, visible=True)
    graph.add_layer("y", 10, "softmax", visible=True)
    graph.add_layer("hx", 16)
    graph.add_layer("top", 8)
    graph.add_edge("x", "hx")
    graph.add_edge("hx", "top")
    graph.add_edge("top", "y")
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(graph.to_dict()))

    assert main(["train", "--graph", str(path), "--algorithm", "mf-pcd", *TINY_GRAPH, "--output", str(tmp_path)]) == 0

    assert "chain: validation error" in capsys.readouterr().out
    model, _, metadata = load_checkpoint(tmp_path / "chain.pt")
    assert model.graph.to_dict() == graph.to_dict()
    assert metadata["family"] == "chain"


@needs_mnist
def test_train_rbm_and_dnn_families(tmp_path, capsys):
    assert main(["train", "--family", "rbm", "--algorithm", "pcd", *TINY_GRAPH, "--hidden", "16", "--output", str(tmp_path)]) == 0
    assert main(["train", "--family", "dnn", *TINY_GRAPH, "--hidden", "16", "12", "--output", str(tmp_path)]) == 0

    model, _, _ = load_checkpoint(tmp_path / "rbm.pt")
    assert model.graph.layer_names == ("x", "h")
    assert model.graph["h"].size == 16
    network = torch.load(tmp_path / "dnn-network.pt", weights_only=True)
    assert network["sizes"] == [784, 16, 12, 10]


def test_algorithm_rejected_for_recipe_families(tmp_path, capsys):
    assert main(["train", "--family", "drm", "--algorithm", "cd", "--output", str(tmp_path)]) == 2
    assert "--algorithm applies to --graph and --family rbm" in capsys.readouterr().err


def test_algorithm_rejected_for_dnn(tmp_path, capsys):
    arguments = ["train", "--family", "dnn", "--algorithm", "pcd", "--data", str(tmp_path), "--no-download", "--output", str(tmp_path)]
    assert main(arguments) == 2
    assert "--family dnn trains by back-propagation alone" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--family", "drm", "--k", "3"], "--k applies to --graph and --family rbm only, because --family drm trains by its own recipe"),
        (["--family", "rbm", "--algorithm", "mf-cd", "--k", "3"], "--k sets the Gibbs sweeps of cd, pcd and mf-pcd, but mf-cd runs mean field"),
        (["--family", "rbm", "--y-units", "softmax"], "--y-units sets the label layer of --family drm and dbm, but --family rbm has no label layer"),
        (["--family", "dnn", "--y-units", "softmax"], "--family dnn has no label layer"),
        (["--family", "rbm", "--hidden", "16", "12"], "--family rbm has one hidden layer, so --hidden takes one size (got [16, 12])"),
    ],
)
def test_train_rejects_ignored_options(options, message, tmp_path, capsys):
    arguments = ["train", *options, "--data", str(tmp_path), "--no-download", "--output", str(tmp_path)]

    assert main(arguments) == 2

    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--family", "dnn", "--lr", "0.5"], "--lr does not apply to --family dnn, which reads only --hidden, --epochs"),
        (["--family", "dnn", "--momentum", "0.5"], "--momentum does not apply to --family dnn"),
        (["--family", "dbn", "--epochs", "3"], "--epochs does not apply to --family dbn"),
        (["--family", "dbn", "--lr-schedule", "linear"], "--lr-schedule does not apply to --family dbn"),
        (["--family", "dbn", "--y-units", "softmax"], "--family dbn, whose top RBM always has softmax label units"),
        (["--family", "rbm", "--steps", "3"], "--steps does not apply to --family rbm"),
        (["--family", "rbm", "--finetune-epochs", "3"], "--finetune-epochs does not apply to --family rbm"),
    ],
)
def test_train_rejects_options_a_family_never_reads(options, message, tmp_path, capsys):
    arguments = ["train", *options, "--data", str(tmp_path), "--no-download", "--output", str(tmp_path)]

    assert main(arguments) == 2

    assert message in capsys.readouterr().err


def test_train_rejects_graph_with_family(tmp_path, capsys):
    graph = tmp_path / "chain.json"
    graph.write_text("{}")
    arguments = ["train", "--graph", str(graph), "--family", "dbm", "--data", str(tmp_path), "--no-download", "--output", str(tmp_path)]

    assert main(arguments) == 2

    assert "pass either --graph or --family, not both" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments",
    [
        ["train", "--family", "dbn"],
        ["compare", "--families", "dnn", "fine-dbn"],
        ["reproduce", "figure4"],
    ],
)
def test_dbn_without_pretraining_rejected(arguments, tmp_path, capsys):
    options = ["--pretrain-epochs", "0", "--data", str(tmp_path), "--no-download", "--output", str(tmp_path)]

    assert main([*arguments, *options]) == 2

    assert "--pretrain-epochs 0 would leave the DBN untrained" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["compare", "--families", "dnn", "--y-units", "softmax"], "--y-units does not apply to compare --families dnn"),
        (["compare", "--families", "dnn", "dbn", "--steps", "3"], "--steps does not apply to compare --families dnn dbn"),
        (["reproduce", "table1", "--families", "drm"], "--families applies to reproduce figure4 only, not to table1"),
        (["reproduce", "table1", "--dbm-lr", "0.01"], "--dbm-lr does not apply to reproduce table1"),
        (["reproduce", "table1", "--finetune-epochs", "3"], "--finetune-epochs does not apply to reproduce table1"),
        (["reproduce", "figure4", "--first", "100"], "--first applies to reproduce table1 only, not to figure4"),
        (["reproduce", "figure4", "--families", "dnn", "--lr", "0.5"], "--lr does not apply to reproduce figure4"),
        (["reproduce", "figure5", "--architectures", "10x10"], "--architectures applies to reproduce figure4 only"),
        (["reproduce", "figure5", "--dbm-lr", "0.01"], "--dbm-lr does not apply to reproduce figure5"),
    ],
)
def test_compare_and_reproduce_reject_unread_options(arguments, message, tmp_path, capsys):
    assert main([*arguments, "--data", str(tmp_path), "--no-download", "--output", str(tmp_path)]) == 2

    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--hidden", "16"], "--hidden does not apply to --graph, because the graph file declares its layer sizes"),
        (["--y-units", "softmax"], "--y-units does not apply to --graph, because the graph file declares the units"),
    ],
)
def test_train_graph_rejects_family_options(options, message, tmp_path, capsys):
    graph = tmp_path / "chain.json"
    graph.write_text("{}")
    arguments = ["train", "--graph", str(graph), *options, "--data", str(tmp_path), "--no-download", "--output", str(tmp_path)]

    assert main(arguments) == 2

    assert message in capsys.readouterr().err


@pytest.mark.parametrize("experiment, sizes", [("table1", "--first and --second"), ("figure4", "--architectures")])
def test_reproduce_rejects_hidden(experiment, sizes, tmp_path, capsys):
    arguments = ["reproduce", experiment, "--hidden", "16", "--data", str(tmp_path), "--no-download", "--output", str(tmp_path)]

    assert main(arguments) == 2

    assert f"--hidden does not apply to reproduce {experiment}, which takes its hidden sizes from {sizes}" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["drm", "dbn", "rbm"])
def test_dbm_lr_rejected_for_other_families(family, tmp_path, capsys):
    arguments = ["train", "--family", family, "--dbm-lr", "0.01", "--data", str(tmp_path), "--no-download", "--output", str(tmp_path)]
    assert main(arguments) == 2
    assert "--dbm-lr applies to --family dbm only" in capsys.readouterr().err


@pytest.mark.parametrize(
    "seeds, message",
    [
        (["--seeds", "0", "1"], "figure5 trains one DRM; pass one --seeds value"),
        (["--more-seeds", "1"], "--more-seeds applies to reproduce table1 and figure4 only, not to figure5"),
    ],
)
def test_figure5_rejects_several_seeds(seeds, message, tmp_path, capsys):
    assert main(["reproduce", "figure5", *seeds, "--data", str(tmp_path), "--no-download", "--output", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_reproduce_reads_seed_as_seeds():
    args = build_parser().parse_args(["reproduce", "table1", "--seed", "3"])

    assert args.seeds == [3]
    assert not hasattr(args, "seed")


@needs_mnist
def test_likelihood_reports_ais_estimate(tmp_path, capsys):
    assert main(["train", *TINY, "--finetune-epochs", "0", "--output", str(tmp_path)]) == 0
    capsys.readouterr()

    status = main(["likelihood", str(tmp_path / "drm.pt"), "--runs", "8", "--temperatures", "50", "--test-size", "20",
                   "--max-exact-states", "0", "--data", str(MNIST_DIR), "--no-download", "--quiet"])

    assert status == 0
    output = capsys.readouterr().out
    estimates = [float(value) for value in re.findall(r"log Z = (-?[0-9.]+) by AIS from the (?:data-fitted|uniform) base", output)]
    log_p = float(re.search(r"average test log p\(x\) = (-?[0-9.]+) nats", output).group(1))
    assert len(estimates) == 2
    assert min(estimates) > 0
    # 784 binary pixels: a log-probability per image lies in [-784 log 2, 0].
    assert -784 * 0.6932 < log_p < 0
    assert "mean-field lower bound" in output


@needs_mnist
def test_likelihood_exact_for_small_models(tmp_path, capsys):
    options = ["--hidden", "8", "6", "--y-units", "softmax", "--finetune-epochs", "0"]
    assert main(["train", *TINY, *options, "--output", str(tmp_path)]) == 0
    capsys.readouterr()
    model, _, _ = load_checkpoint(tmp_path / "drm.pt")

    # Enumerating h1 (8 units) and y (10 labels), 2,560 states, leaves x and h2 independent.
    status = main(["likelihood", str(tmp_path / "drm.pt"), "--test-size", "20", "--data", str(MNIST_DIR), "--no-download", "--quiet"])

    assert status == 0
    output = capsys.readouterr().out
    assert "by AIS" not in output
    log_z = float(re.search(r"log Z = (-?[0-9.]+) \(exact, by enumeration\)", output).group(1))
    assert log_z == pytest.approx(log_partition(model).item(), abs=0.01)


def test_likelihood_rejects_few_temperatures(tmp_path, capsys):
    assert main(["likelihood", str(tmp_path / "none.pt"), "--temperatures", "3"]) == 2
    assert "--temperatures must be at least 10, got 3" in capsys.readouterr().err


def test_interrupt_prints_resume_hint(tmp_path, capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(COMMANDS, "train", interrupted)

    status = main(["train", "--checkpoint-every-epoch", "--output", str(tmp_path)])

    assert status == 130
    assert f"interrupted; continue with the same options and --resume {tmp_path / 'drm-training.pt'}" in capsys.readouterr().err
