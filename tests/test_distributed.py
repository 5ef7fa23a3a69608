"""Data-parallel training with 2 Gloo processes on this machine, compared with one process.

The ranks are separate Python processes started the way torchrun starts its
workers: this test process hosts the rendezvous store (a TCPStore listening on
127.0.0.1 only) and the workers join it as clients, with Gloo held to the
loopback interface. Run as a script (``python test_distributed.py OUTDIR``),
this file is the worker that trains and saves its results for the tests.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import SMALL_GRAPHS, random_model

from ebmgraph import distributed, rbm
from ebmgraph.checkpoint import load_checkpoint
from ebmgraph.estimators import log_marginal
from ebmgraph.learning import PCD, MeanFieldCD, Trainer, TrainingConfig
from ebmgraph.learning.finetune import FeedForward, classification_error, finetune

WORLD = 2
PER_RANK_BATCH = 3
MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
needs_process_groups = pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")


# Scenarios: each builds its inputs from fixed seeds, so a worker and this process build the same ones.


def exact_problem():
    """A DRM-shaped model (interacting hidden layers, softmax labels) and 7 rows of data."""
    model = random_model(*SMALL_GRAPHS["drm_softmax"], seed=3, std=0.5)
    generator = torch.Generator().manual_seed(4)
    x = (torch.rand(7, 4, generator=generator, dtype=torch.float64) < 0.5).to(torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (7,), generator=generator), 3).to(torch.float64)
    return model, {"x": x, "y": y}


def train_exact(batch_size: int) -> Trainer:
    """Two epochs of the DRM recipe with mean reconstructions, whose updates involve no random draw."""
    model, data = exact_problem()
    config = TrainingConfig(epochs=2, batch_size=batch_size, learning_rate=0.5, momentum=0.5, weight_decay=0.01)
    trainer = Trainer(model, MeanFieldCD(3, reconstruction="mean"), config, generator=torch.Generator().manual_seed(5))
    trainer.fit(data)
    return trainer


def finetune_problem():
    generator = torch.Generator().manual_seed(6)
    network = FeedForward([4, 3, 3], generator=generator, dtype=torch.float64)
    x = torch.rand(7, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (7,), generator=generator)
    return network, x, labels


def train_finetune(batch_size: int) -> tuple[FeedForward, list]:
    network, x, labels = finetune_problem()
    history = finetune(network, x, labels, epochs=2, batch_size=batch_size, learning_rate=0.5, momentum=0.5,
                       generator=torch.Generator().manual_seed(7))
    return network, history


def toy_data() -> torch.Tensor:
    """64 rows of two 6-pixel prototypes, each pixel flipped with probability 0.05."""
    generator = torch.Generator().manual_seed(8)
    prototypes = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.float64)
    rows = prototypes[torch.randint(0, 2, (64,), generator=generator)]
    flips = torch.rand(rows.shape, generator=generator, dtype=torch.float64) < 0.05
    return torch.where(flips, 1 - rows, rows)


def toy_rbm():
    return rbm(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def run_worker(output: Path) -> None:
    """Train every scenario as one rank and save what the tests compare."""
    rank = distributed.get_rank()
    trainer = train_exact(PER_RANK_BATCH)
    network, finetune_history = train_finetune(PER_RANK_BATCH)

    model = toy_rbm()
    converging = Trainer(model, PCD(1), TrainingConfig(epochs=30, batch_size=4, learning_rate=0.2), generator=torch.Generator().manual_seed(9))
    converging.fit({"v": toy_data()})

    x = torch.rand(11, 4, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    labels = torch.arange(11) % 3
    torch.save(
        {
            "exact": dict(trainer.model.state_dict()),
            "exact_history": trainer.history,
            "exact_step": trainer.step,
            "finetune": dict(network.state_dict()),
            "finetune_history": finetune_history,
            "converged": dict(model.state_dict()),
            "chains": converging.estimator.chains.state["v"],
            "classification_error": classification_error(network, x, labels, batch_size=2),
        },
        output / f"rank{rank}.pt",
    )


# Launching ranks.


def loopback_interface() -> str:
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    if not names:
        pytest.skip("no loopback network interface found for Gloo")
    return names[0]


def launch(command: list[str], *, timeout: float = 120.0) -> list[subprocess.CompletedProcess]:
    """Run ``command`` as ranks 0 .. WORLD - 1 of one process group and return each rank's result.

    Like torchrun's agent, this process serves the store on a port it bound on
    127.0.0.1, and the workers connect to it as clients (TORCHELASTIC_USE_AGENT_STORE).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    # The store takes over the listening socket and closes it when it is destroyed.
    store = torch.distributed.TCPStore(
        "127.0.0.1", port, None, is_master=True, wait_for_workers=False,
        master_listen_fd=listener.detach(), timeout=datetime.timedelta(seconds=timeout),
    )
    common = {
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(WORLD), "LOCAL_WORLD_SIZE": str(WORLD),
        "TORCHELASTIC_USE_AGENT_STORE": "True", "GLOO_SOCKET_IFNAME": loopback_interface(), "OMP_NUM_THREADS": "1",
    }
    processes = []
    try:
        for rank in range(WORLD):
            env = {**os.environ, **common, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        del store


def check_success(results: list[subprocess.CompletedProcess]) -> None:
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank} failed with status {result.returncode}:\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The saved results of every rank of one 2-rank run of :func:`run_worker`."""
    output = tmp_path_factory.mktemp("ranks")
    check_success(launch([sys.executable, str(Path(__file__).resolve()), str(output)]))
    return [torch.load(output / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]


# Functions that need no process group.


def test_shards_partition_a_batch():
    index = torch.arange(10, 17)
    shards = [distributed.shard(index, rank, 3) for rank in range(3)]

    assert [len(part) for part in shards] == [3, 2, 2]
    assert torch.equal(torch.cat(shards), index)
    assert [distributed.shard_rows(7, rank, 3) for rank in range(3)] == [slice(0, 3), slice(3, 5), slice(5, 7)]
    assert len(distributed.shard(torch.arange(1), 1, 2)) == 0


def test_shard_rejects_rank_outside_world():
    with pytest.raises(ValueError, match=r"rank must be an int in \[0, 2\), got 2"):
        distributed.shard(torch.arange(4), 2, 2)
    with pytest.raises(ValueError, match="world must be a positive int, got 0"):
        distributed.shard_rows(4, 0, 0)


def test_average_without_group_weights_nothing():
    tensors = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[3.0]])}

    mean, total = distributed.average_over_ranks(tensors, 4)
    empty, empty_total = distributed.average_over_ranks({"a": torch.tensor([float("nan")])}, 0)

    assert torch.equal(mean["a"], tensors["a"])
    assert mean["b"].shape == (1, 1)
    assert float(total) == 4.0
    assert float(empty["a"][0]) == 0.0
    assert float(empty_total) == 0.0


def test_single_process_defaults():
    assert not distributed.is_initialized()
    assert (distributed.get_rank(), distributed.get_world_size()) == (0, 1)
    assert distributed.is_main_process()
    assert distributed.resolve(None) is False
    generator = torch.Generator().manual_seed(0)
    assert distributed.rank_generator(generator, 0) is generator


def test_rank_generators_differ_and_repeat():
    first = distributed.rank_generator(torch.Generator().manual_seed(0), 1)
    again = distributed.rank_generator(torch.Generator().manual_seed(0), 1)
    other = distributed.rank_generator(torch.Generator().manual_seed(0), 2)

    draw = torch.rand(3, generator=first)
    assert torch.equal(draw, torch.rand(3, generator=again))
    assert not torch.equal(draw, torch.rand(3, generator=other))


def test_required_group_missing_is_rejected():
    model, data = exact_problem()
    trainer = Trainer(model, MeanFieldCD(3), TrainingConfig(), distributed=True)
    with pytest.raises(ValueError, match="no torch.distributed process group is initialised"):
        trainer.fit(data)
    with pytest.raises(TypeError, match="distributed must be True, False or None"):
        distributed.resolve("yes")


def test_environment_without_torchrun_is_ignored(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert distributed.init_from_environment("cpu") == torch.device("cpu")
    assert not distributed.is_initialized()


@pytest.fixture
def group_calls(monkeypatch) -> list[str]:
    """A joined process group whose barrier and destruction only record their calls."""
    calls = []
    monkeypatch.setattr(distributed, "_joined_from_environment", True)
    monkeypatch.setattr(distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: calls.append("destroy"))
    return calls


def test_shutdown_waits_for_ranks_before_destroying(group_calls):
    distributed.shutdown(wait_for_ranks=True)
    distributed.shutdown(wait_for_ranks=True)

    assert group_calls == ["barrier", "destroy"], "the second call finds no group of its own to destroy"


def test_shutdown_after_failure_skips_barrier(group_calls):
    distributed.shutdown()

    assert group_calls == ["destroy"]


def test_partial_torchrun_environment_is_rejected(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"sets \['RANK'\] but not \['WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'\]"):
        distributed.init_from_environment("cpu")


# Two ranks against one process.


@needs_process_groups
def test_two_ranks_match_one_process_update(ranks):
    single = train_exact(WORLD * PER_RANK_BATCH)
    expected = single.model.state_dict()

    # 7 rows in global batches of 6: every epoch ends on a batch of 1 row, so rank 1's last shard is empty.
    assert ranks[0]["exact_step"] == single.step == 4
    for rank, saved in enumerate(ranks):
        for name, value in expected.items():
            assert torch.allclose(saved["exact"][name], value, rtol=0, atol=1e-6), f"rank {rank}, {name}"
    moved = max(float((value - exact_problem()[0].state_dict()[name]).abs().max()) for name, value in expected.items())
    assert moved > 1e-3


@needs_process_groups
def test_two_ranks_share_monitor_error(ranks):
    single = train_exact(WORLD * PER_RANK_BATCH)

    for saved in ranks:
        errors = [record["reconstruction_error"] for record in saved["exact_history"]]
        assert errors == pytest.approx([record["reconstruction_error"] for record in single.history], abs=1e-9)


@needs_process_groups
def test_two_ranks_match_one_process_finetune(ranks):
    network, history = train_finetune(WORLD * PER_RANK_BATCH)

    for rank, saved in enumerate(ranks):
        for name, value in network.state_dict().items():
            assert torch.allclose(saved["finetune"][name], value, rtol=0, atol=1e-6), f"rank {rank}, {name}"
        assert [r["loss"] for r in saved["finetune_history"]] == pytest.approx([r["loss"] for r in history], abs=1e-9)


@needs_process_groups
def test_two_ranks_count_errors_together(ranks):
    network, _ = train_finetune(WORLD * PER_RANK_BATCH)
    x = torch.rand(11, 4, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    labels = torch.arange(11) % 3

    expected = classification_error(network, x, labels, batch_size=2)
    assert [saved["classification_error"] for saved in ranks] == pytest.approx([expected] * WORLD, abs=1e-12)


@needs_process_groups
def test_two_ranks_raise_likelihood(ranks):
    data = toy_data()
    before = float(log_marginal(toy_rbm(), {"v": data}).mean())
    trained = toy_rbm()
    trained.load_state_dict(ranks[0]["converged"])
    after = float(log_marginal(trained, {"v": data}).mean())

    # A good fit approaches minus the data's entropy, log 2 + 6 H(0.05) = 1.88 nats;
    # the small initial weights give about 6 log 2 = 4.16 nats. 0.5 nats is a clear gain.
    assert after > before + 0.5
    for name, value in ranks[1]["converged"].items():
        assert torch.equal(value, ranks[0]["converged"][name]), name
    assert not torch.equal(ranks[0]["chains"], ranks[1]["chains"])


@needs_process_groups
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"MNIST files not found in {MNIST_DIR}")
def test_train_command_writes_once(tmp_path):
    output = tmp_path / "out"
    tiny = ["--data", str(MNIST_DIR), "--no-download", "--train-size", "40", "--validation-size", "20", "--hidden", "8", "6",
            "--epochs", "1", "--pretrain-epochs", "1", "--finetune-epochs", "1", "--batch-size", "10", "--quiet"]

    results = launch([sys.executable, "-m", "ebmgraph", "train", *tiny, "--output", str(output)])

    check_success(results)
    assert "wrote" in results[0].stdout
    assert results[1].stdout == ""
    assert sorted(path.name for path in output.iterdir()) == ["drm-metrics.json", "drm.pt"]
    _, _, metadata = load_checkpoint(output / "drm.pt")
    assert metadata["world_size"] == WORLD


if __name__ == "__main__":
    distributed.init_from_environment("cpu")
    try:
        run_worker(Path(sys.argv[1]))
    finally:
        distributed.shutdown()
