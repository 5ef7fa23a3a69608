import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from ebmgraph import DeepRelationalModel, EnergyModel, Gaussian, Graph, drm, rbm
from ebmgraph.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def trained_like_drm():
    return drm(x=(4, 4), hidden=(5, 3), y=2, y_units="softmax", init_std=0.5, generator=torch.Generator().manual_seed(0))


def test_round_trip_gives_identical_outputs(tmp_path):
    model = trained_like_drm()
    path = save_checkpoint(tmp_path / "model.pt", model, metadata={"seed": 0})
    x = torch.rand(6, 16, generator=torch.Generator().manual_seed(1))

    loaded, training, metadata = load_checkpoint(path)

    assert isinstance(loaded, DeepRelationalModel)
    assert loaded.graph.to_dict() == model.graph.to_dict()
    assert torch.equal(loaded.predict(x), model.predict(x))
    assert metadata == {"seed": 0}
    assert training == {}


def test_round_trip_keeps_dtype_and_unit_parameters(tmp_path):
    graph = Graph()
    graph.add_layer("v", 3, Gaussian(std=(1.0, 0.5, 2.0)), visible=True)
    graph.add_layer("h", 2, "spin")
    graph.add_edge("v", "h")
    model = EnergyModel(graph, dtype=torch.float64, init_std=1.0, generator=torch.Generator().manual_seed(2))
    v = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    loaded, _, _ = load_checkpoint(save_checkpoint(tmp_path / "gb.pt", model))

    assert loaded.dtype == torch.float64
    assert loaded.graph["v"].units == Gaussian(std=(1.0, 0.5, 2.0))
    assert torch.equal(loaded.free_energy({"v": v}), model.free_energy({"v": v}))


def test_training_state_round_trip(tmp_path):
    model = trained_like_drm()
    training = {"epoch": 3, "chains": {"x": torch.ones(2, 16)}, "generator": torch.Generator().manual_seed(4).get_state()}

    _, loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "t.pt", model, training=training))

    assert loaded["epoch"] == 3
    assert torch.equal(loaded["chains"]["x"], torch.ones(2, 16))
    assert torch.equal(loaded["generator"], training["generator"])


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_file_is_rejected_and_runs_nothing(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": "ebmgraph-checkpoint", "payload": RunsCode(marker)}, path)

    with pytest.raises(CheckpointError, match="evil.pt contains objects other than plain data"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_file_is_rejected(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", trained_like_drm())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(CheckpointError, match="model.pt is truncated or corrupted"):
        load_checkpoint(path)


def test_foreign_file_is_rejected(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not an ebmgraph checkpoint"):
        load_checkpoint(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "model.pt", trained_like_drm())
    before = path.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, drm(x=16, hidden=(5, 3), y=2))

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    load_checkpoint(path)


def test_flipped_parameter_byte_is_detected(tmp_path):
    model = trained_like_drm()
    path = save_checkpoint(tmp_path / "model.pt", model)
    data = bytearray(path.read_bytes())
    # Weights are stored verbatim; change one byte of the first float32 of x-h1.
    needle = model.weights["x-h1"].detach().numpy().tobytes()[:8]
    at = bytes(data).find(needle)
    assert at > 0
    data[at] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(CheckpointError, match="do not match the stored checksum"):
        load_checkpoint(path)


def test_text_file_is_rejected(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("epoch 3, error 4 %\n")
    with pytest.raises(CheckpointError, match="notes.pt is truncated or corrupted"):
        load_checkpoint(path)


def test_diverged_model_is_not_saved(tmp_path):
    model = trained_like_drm()
    with torch.no_grad():
        model.weights["x-h1"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="weights.x-h1 contains NaN"):
        save_checkpoint(tmp_path / "model.pt", model)
    assert not (tmp_path / "model.pt").exists()


def test_plain_pickle_is_rejected_and_runs_nothing(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pkl"
    # Protocol 2 names os.system through a GLOBAL opcode, the classic code-execution pickle.
    path.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))

    with pytest.raises(CheckpointError, match="evil.pkl contains objects other than plain data") as error:
        load_checkpoint(path)
    assert not marker.exists()
    assert "system" in str(error.value)


def test_rejection_message_is_one_line_without_unsafe_advice(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": RunsCode(tmp_path / "code-ran")}, path)

    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "\n" not in message
    assert "weights_only" not in message
    assert "GLOBAL posix.system" in message or "system" in message


def test_json_file_is_not_called_unsafe(tmp_path):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps({"layers": [], "edges": []}))

    with pytest.raises(CheckpointError, match="graph.json is truncated or corrupted: it is not a file written by torch.save") as error:
        load_checkpoint(path)
    assert "objects other than plain data" not in str(error.value)


def test_folder_is_reported_as_folder(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder; pass a .pt file"):
        load_checkpoint(tmp_path)


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt is truncated or corrupted"):
        load_checkpoint(path)


def rewrite_payload(path, change):
    """Load a checkpoint's raw payload, apply ``change`` to it and write it back with torch.save."""
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def resized_graph(payload):
    graph = json.loads(payload["graph"])
    graph["layers"][1]["shape"] = [6]
    payload["graph"] = json.dumps(graph)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.update(version=2), "model.pt has format version 2; this ebmgraph reads version 1"),
        (lambda p: p.update(format="other-format"), "model.pt is not an ebmgraph checkpoint"),
        (lambda p: p.update(kind="Sequential"), "model.pt names model class 'Sequential'"),
        (lambda p: p.pop("parameters"), "model.pt is inconsistent: it has no entry 'parameters'"),
        (lambda p: p.pop("graph"), "model.pt is inconsistent: it has no entry 'graph'"),
        (lambda p: p.update(dtype="no_such_dtype"), "model.pt is inconsistent"),
        (lambda p: p.update(metadata="[1, 2]"), "model.pt is inconsistent: metadata and training state must be dicts"),
        (resized_graph, "model.pt is inconsistent: .*size mismatch"),
        (lambda p: p["parameters"].pop("weights.v-h"), "model.pt is inconsistent: .*Missing key"),
    ],
)
def test_mislabelled_checkpoint_is_rejected(tmp_path, change, message):
    path = save_checkpoint(tmp_path / "model.pt", rbm(3, 4, init_std=0.5, generator=torch.Generator().manual_seed(0)))
    rewrite_payload(path, change)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)


SAVE_FOREVER = """
import sys
import torch
from ebmgraph import rbm
from ebmgraph.checkpoint import save_checkpoint

# 16 MB of float32 weights, so that one save takes long enough to be interrupted.
model = rbm(2000, 2000, init_std=0.0)
generation = 0
while True:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(generation)
    save_checkpoint(sys.argv[1], model, metadata={"generation": generation})
    print(generation, flush=True)
    generation += 1
"""


def test_kill_during_save_keeps_previous_checkpoint(tmp_path):
    script = tmp_path / "save_forever.py"
    script.write_text(SAVE_FOREVER)
    path = tmp_path / "out" / "model.pt"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True, env=environment)
    try:
        completed = [int(process.stdout.readline()) for _ in range(2)]
        # The temporary file exists only between the start of a save and its rename.
        deadline = time.monotonic() + 120
        while not list(path.parent.glob(".model.pt.*.tmp")):
            assert time.monotonic() < deadline, "no save started within 120 s"
            assert process.poll() is None, "the saving process ended by itself"
            time.sleep(0.001)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        completed += [int(line) for line in process.stdout.read().split()]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()

    leftovers = list(path.parent.glob(".model.pt.*.tmp"))
    assert len(leftovers) == 1, "the kill did not land inside a save"
    model, _, metadata = load_checkpoint(path)
    assert metadata["generation"] == completed[-1]
    for name, parameter in model.named_parameters():
        assert bool((parameter == completed[-1]).all()), name
