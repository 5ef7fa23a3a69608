import json
from pathlib import Path

import pytest

from ebmgraph.checkpoint import load_checkpoint
from ebmgraph.cli import main

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST files not found in {MNIST_DIR}")

TINY = ["--data", str(MNIST_DIR), "--no-download", "--train-size", "200", "--validation-size", "100", "--hidden", "16", "12",
        "--epochs", "1", "--pretrain-epochs", "1", "--finetune-epochs", "1", "--quiet"]


@pytest.mark.parametrize("command", ["train", "evaluate", "generate", "compare"])
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
        (["--epochs", "-1"], "--epochs must be 0 or more"),
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
