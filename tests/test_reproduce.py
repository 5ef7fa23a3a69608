import csv

import pytest
import torch

from ebmgraph import experiments, reproduce
from ebmgraph.checkpoint import load_checkpoint
from ebmgraph.experiments import Protocol
from helpers import toy_data

TINY = Protocol(hidden=(6, 4), epochs=1, pretrain_epochs=1, finetune_epochs=1, batch_size=10, mean_field_steps=2)


def read_rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def counted_runs(monkeypatch):
    calls = []
    original = experiments.run_family

    def counting(family, data, protocol, **kwargs):
        calls.append((family, protocol.hidden))
        return original(family, data, protocol, **kwargs)

    # reproduce runs every family through experiments.run_families, which calls this.
    monkeypatch.setattr(experiments, "run_family", counting)
    return calls


def test_table1_writes_grid_and_rows(tmp_path):
    path = reproduce.table1(toy_data, TINY, tmp_path, first=(6, 8), second=(3, 4))

    rows = read_rows(tmp_path / "table1.csv")
    assert [(r["hidden"], r["seed"]) for r in rows] == [("6x3", "0"), ("6x4", "0"), ("8x3", "0"), ("8x4", "0")]
    assert all(0.0 <= float(r["test_error"]) <= 1.0 for r in rows)
    text = path.read_text()
    assert "| h1 \\ h2 | 3 | 4 |" in text
    assert "| 8 | " in text


def test_table1_resumes_missing_rows(tmp_path, counted_runs):
    reproduce.table1(toy_data, TINY, tmp_path, first=(6,), second=(3, 4))
    rows = (tmp_path / "table1.csv").read_text().splitlines()
    (tmp_path / "table1.csv").write_text("\n".join(rows[:2]) + "\n")
    counted_runs.clear()

    reproduce.table1(toy_data, TINY, tmp_path, first=(6,), second=(3, 4))

    assert counted_runs == [("drm", (6, 4))]
    assert len(read_rows(tmp_path / "table1.csv")) == 2


def test_table1_more_seeds_only_for_headline_cell(tmp_path, counted_runs):
    reproduce.table1(toy_data, TINY, tmp_path, first=(400, 6), second=(3,), seeds=(0,), more_seeds=(1,))

    assert [(r["hidden"], r["seed"]) for r in read_rows(tmp_path / "table1.csv")] == [("400x3", "0"), ("6x3", "0")]

    reproduce.table1(toy_data, TINY, tmp_path, first=(400,), second=(400,), seeds=(0,), more_seeds=(1,))

    rows = read_rows(tmp_path / "table1.csv")
    assert [(r["hidden"], r["seed"]) for r in rows][-2:] == [("400x400", "0"), ("400x400", "1")]
    assert rows[-1]["paper_test_error"] == "0.0394"
    assert "± " in (tmp_path / "table1.md").read_text()


def test_table1_rejects_foreign_csv(tmp_path):
    (tmp_path / "table1.csv").write_text("a,b\n1,2\n")

    with pytest.raises(ValueError, match="table1.csv has columns"):
        reproduce.table1(toy_data, TINY, tmp_path, first=(6,), second=(3,))


def test_table1_rejects_rerun_with_other_protocol(tmp_path, counted_runs):
    reproduce.table1(toy_data, TINY, tmp_path, first=(6,), second=(3,))
    counted_runs.clear()
    longer = Protocol(**{**TINY.__dict__, "epochs": 2})

    with pytest.raises(ValueError, match="contains table1 rows run with epochs=1, but this run has epochs=2"):
        reproduce.table1(toy_data, longer, tmp_path, first=(6, 8), second=(3,))
    assert counted_runs == []


def test_table1_rejects_rerun_with_other_settings(tmp_path):
    reproduce.table1(toy_data, TINY, tmp_path, first=(6,), second=(3,), settings={"train_size": 100})

    with pytest.raises(ValueError, match="run with train_size=100, but this run has train_size=200"):
        reproduce.table1(toy_data, TINY, tmp_path, first=(6,), second=(3,), settings={"train_size": 200})


def test_table1_resumes_folder_without_settings_file(tmp_path, counted_runs):
    reproduce.table1(toy_data, TINY, tmp_path, first=(6,), second=(3,))
    (tmp_path / "table1-settings.json").unlink()
    counted_runs.clear()

    reproduce.table1(toy_data, TINY, tmp_path, first=(6,), second=(3, 4))

    assert counted_runs == [("drm", (6, 4))]
    assert not (tmp_path / "table1-settings.json").exists()


def test_figure4_rejects_rerun_with_other_protocol(tmp_path):
    reproduce.figure4(toy_data, TINY, tmp_path, hidden_sizes=((6, 4),), families=("dnn",))
    softmax = Protocol(**{**TINY.__dict__, "y_units": "softmax"})

    with pytest.raises(ValueError, match="contains figure4 rows run with y_units='bernoulli'"):
        reproduce.figure4(toy_data, softmax, tmp_path, hidden_sizes=((6, 4),), families=("dnn", "drm"))


def test_figure4_tabulates_families(tmp_path, counted_runs):
    path = reproduce.figure4(toy_data, TINY, tmp_path, hidden_sizes=((6, 4),), families=("dnn", "drm", "fine-drm"))

    rows = read_rows(tmp_path / "figure4.csv")
    assert [r["family"] for r in rows] == ["dnn", "drm", "fine-drm"]
    assert [family for family, _ in counted_runs] == ["dnn", "drm", "fine-drm"]
    lines = path.read_text().splitlines()
    assert any(line.startswith("| fine-drm | ") for line in lines)
    assert "| family | 6x4 measured | 6x4 paper | seconds |" in lines


def test_figure4_resumed_runs_equal_uninterrupted(tmp_path, monkeypatch):
    trained = {}
    original = experiments.run_family

    def keeping_parameters(family, data, protocol, **kwargs):
        result = original(family, data, protocol, **kwargs)
        trained[family] = {name: tensor.clone() for name, tensor in result.model.state_dict().items()}
        return result

    monkeypatch.setattr(experiments, "run_family", keeping_parameters)
    families = ("dnn", "drm", "fine-drm")

    reproduce.figure4(toy_data, TINY, tmp_path / "whole", hidden_sizes=((6, 4),), families=families)
    whole = dict(trained)
    # An interruption after the first family leaves its row alone; the rerun trains the others.
    reproduce.figure4(toy_data, TINY, tmp_path / "resumed", hidden_sizes=((6, 4),), families=families[:1])
    trained.clear()
    reproduce.figure4(toy_data, TINY, tmp_path / "resumed", hidden_sizes=((6, 4),), families=families)

    assert sorted(trained) == ["drm", "fine-drm"]
    for family, parameters in trained.items():
        for name, tensor in parameters.items():
            assert torch.equal(tensor, whole[family][name]), f"{family} {name}"


def test_figure4_shows_paper_values(tmp_path):
    reproduce._append_row(
        tmp_path / "figure4.csv",
        {"experiment": "figure4", "family": "fine-dbn", "hidden": "400x400", "seed": 0, "validation_error": "0.03",
         "test_error": "0.02", "paper_test_error": "0.0371", "seconds": "1"},
    )

    text = reproduce._write_figure4(tmp_path, TINY, "", ((400, 400),), ("fine-dbn", "dnn")).read_text()

    assert "| fine-dbn | 2.00 | 3.71 | 1 |" in text
    assert "| dnn |  | n/a | |" in text


def test_figure4_rejects_unknown_family(tmp_path):
    with pytest.raises(ValueError, match="unknown model families \\['rbm'\\]"):
        reproduce.figure4(toy_data, TINY, tmp_path, families=("rbm",))


def test_figure5_writes_three_rows(tmp_path):
    path = reproduce.figure5(toy_data, TINY, tmp_path)

    assert (tmp_path / "figure5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = path.read_text()
    for row in ("| overall | DRM mean field |", "| per-label | fine-tuned network |", "| label means | DRM mean field |"):
        assert row in text
    model, training, metadata = load_checkpoint(tmp_path / "figure5-drm.pt")
    assert model.hidden_names == ("h1", "h2")
    assert training["hidden_means_per_label"]["h1"].shape == (2, 6)
    assert metadata["protocol"]["mean_field_steps"] == 2


def test_cli_rejects_bad_architecture(tmp_path, capsys):
    from ebmgraph.cli import main

    status = main(["reproduce", "figure4", "--architectures", "400by200", "--output", str(tmp_path)])

    assert status == 2
    assert "--architectures entry '400by200' is not hidden sizes such as 400x200" in capsys.readouterr().err
