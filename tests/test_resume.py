import pytest
import torch

from ebmgraph import dbm, drm, rbm
from ebmgraph.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ebmgraph.learning import CD, PCD, DivergenceError, MeanFieldCD, MeanFieldPCD, Trainer, TrainingConfig
from ebmgraph.learning.resume import TRAINER_KEY, EpochCheckpoint, load_training_checkpoint

EPOCHS = 4
INTERRUPTED_AFTER = 2


class Interrupted(Exception):
    """Stands for a kill signal arriving between two epochs."""


def setup(kind: str, *, init_seed: int):
    """A model, estimator factory and data for one estimator kind, with momentum and a linear schedule."""
    data_generator = torch.Generator().manual_seed(3)
    init = torch.Generator().manual_seed(init_seed)
    if kind == "mf-cd":
        model = drm(6, (4, 3), 3, y_units="softmax", generator=init, init_std=0.1)
        labels = torch.randint(0, 3, (29,), generator=data_generator)
        data = {"x": torch.bernoulli(torch.full((29, 6), 0.4), generator=data_generator),
                "y": torch.nn.functional.one_hot(labels, 3).float()}
        return model, lambda: MeanFieldCD(3), data
    model = dbm([6, 4, 3], generator=init, init_std=0.1) if kind == "mf-pcd" else rbm(6, 4, generator=init, init_std=0.1)
    data = {"v": torch.bernoulli(torch.full((29, 6), 0.4), generator=data_generator)}
    estimators = {"cd": lambda: CD(2), "pcd": lambda: PCD(1, n_chains=7), "mf-pcd": lambda: MeanFieldPCD(1, n_chains=5, mean_field_steps=3)}
    return model, estimators[kind], data


CONFIG = TrainingConfig(epochs=EPOCHS, batch_size=8, learning_rate=0.05, momentum=0.5, learning_rate_schedule="linear")


def uninterrupted(kind: str) -> Trainer:
    model, estimator, data = setup(kind, init_seed=1)
    trainer = Trainer(model, estimator(), CONFIG, generator=torch.Generator().manual_seed(7))
    trainer.fit(data)
    return trainer


def interrupted_then_resumed(kind: str, path) -> Trainer:
    model, estimator, data = setup(kind, init_seed=1)
    first = Trainer(model, estimator(), CONFIG, generator=torch.Generator().manual_seed(7))

    def stop_in_next_epoch(trainer, record):
        if record["epoch"] == INTERRUPTED_AFTER + 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        first.fit(data, callback=stop_in_next_epoch, checkpoint=path)

    # A new process: other initial weights and another seed, all replaced by the checkpoint.
    model, estimator, data = setup(kind, init_seed=99)
    resumed = Trainer(model, estimator(), CONFIG, generator=torch.Generator().manual_seed(12345))
    load_training_checkpoint(path, resumed)
    assert resumed.epoch == INTERRUPTED_AFTER
    resumed.fit(data, checkpoint=path)
    return resumed


@pytest.mark.parametrize("kind", ["cd", "pcd", "mf-pcd", "mf-cd"])
def test_resumed_run_matches_uninterrupted(kind, tmp_path):
    reference = uninterrupted(kind)
    resumed = interrupted_then_resumed(kind, tmp_path / "training.pt")

    for name, parameter in reference.model.named_parameters():
        assert torch.equal(parameter, dict(resumed.model.named_parameters())[name]), name
    assert (resumed.epoch, resumed.step) == (reference.epoch, reference.step)
    assert resumed.history == reference.history
    assert torch.equal(resumed.generator.get_state(), reference.generator.get_state())


def test_checkpoint_contains_last_epoch(tmp_path):
    path = tmp_path / "training.pt"
    interrupted_then_resumed("pcd", path)

    model, training, _ = load_checkpoint(path)
    state = training[TRAINER_KEY]
    assert state["epoch"] == EPOCHS
    assert state["estimator_class"] == "PCD"
    assert state["estimator"]["chains"]["state"]["h"].shape == (7, 4)
    assert len(state["history"]) == EPOCHS
    assert state["optimizer"]["state"][0]["momentum_buffer"].shape == (6, 4)


def test_checkpoint_written_before_first_epoch(tmp_path):
    model, estimator, data = setup("cd", init_seed=1)
    initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    trainer = Trainer(model, estimator(), CONFIG, generator=torch.Generator().manual_seed(7))

    def stop_at_once(trainer, record):
        raise Interrupted

    with pytest.raises(Interrupted):
        trainer.fit(data, callback=stop_at_once, checkpoint=tmp_path / "training.pt")

    saved, training, _ = load_checkpoint(tmp_path / "training.pt")
    assert training[TRAINER_KEY]["epoch"] == 0
    for name, tensor in saved.state_dict().items():
        assert torch.equal(tensor, initial[name]), name


def test_epoch_checkpoint_keeps_metadata(tmp_path):
    model, estimator, data = setup("cd", init_seed=1)
    saver = EpochCheckpoint(tmp_path / "training.pt", metadata={"seed": 7})
    Trainer(model, estimator(), TrainingConfig(epochs=2, batch_size=8), generator=torch.Generator().manual_seed(7)).fit(data, checkpoint=saver)

    _, training, metadata = load_checkpoint(saver.path)
    assert metadata == {"seed": 7}
    assert saver.epoch == 2
    assert training[TRAINER_KEY]["step"] == 8


class PoisonedCD(CD):
    """CD-1 whose data term is multiplied by ``factor`` on update number ``at_update``."""

    def __init__(self, at_update: int, factor: float):
        super().__init__(1)
        self.at_update = at_update
        self.factor = factor
        self.updates = 0

    def phases(self, model, batch, generator):
        data_state, model_state = super().phases(model, batch, generator)
        self.updates += 1
        if self.updates == self.at_update:
            data_state = {name: tensor * self.factor for name, tensor in data_state.items()}
        return data_state, model_state


def train_until_divergence(tmp_path, factor):
    """Poison the second update of epoch 2 (4 updates per epoch); return the error, the trainer and epoch 1's parameters."""
    model, _, data = setup("cd", init_seed=1)
    trainer = Trainer(model, PoisonedCD(at_update=6, factor=factor), CONFIG, generator=torch.Generator().manual_seed(7))
    after_first = {}

    def remember(trainer, record):
        if record["epoch"] == 1:
            after_first.update({name: tensor.clone() for name, tensor in trainer.model.state_dict().items()})

    with pytest.raises(DivergenceError) as error:
        trainer.fit(data, callback=remember, checkpoint=tmp_path / "training.pt")
    return str(error.value), trainer, after_first


def test_nan_statistics_stop_training_naming_step(tmp_path):
    message, trainer, _ = train_until_divergence(tmp_path, float("nan"))

    assert "is non-finite at epoch 2, step 6" in message
    assert message.startswith("parameter ")
    assert trainer.step == 6


def test_divergence_keeps_last_good_checkpoint(tmp_path):
    message, _, after_first = train_until_divergence(tmp_path, float("inf"))

    assert f"The last good checkpoint, after epoch 1, is kept in {tmp_path / 'training.pt'}" in message
    saved, training, _ = load_checkpoint(tmp_path / "training.pt")
    assert training[TRAINER_KEY]["epoch"] == 1
    assert training[TRAINER_KEY]["step"] == 4
    for name, tensor in saved.state_dict().items():
        assert torch.equal(tensor, after_first[name]), name
    assert [p.name for p in tmp_path.iterdir()] == ["training.pt"]


def test_exploding_weights_stop_training(tmp_path):
    message, _, _ = train_until_divergence(tmp_path, 1e7)

    assert "exceeds max_abs_parameter=10000 at epoch 2, step 6" in message
    assert "after epoch 1, is kept" in message


def test_resume_rejects_other_graph(tmp_path):
    model, estimator, data = setup("cd", init_seed=1)
    Trainer(model, estimator(), TrainingConfig(epochs=1, batch_size=8), generator=torch.Generator().manual_seed(7)).fit(
        data, checkpoint=tmp_path / "training.pt"
    )
    other = Trainer(rbm(6, 5), CD(2), TrainingConfig(epochs=2), generator=torch.Generator())

    with pytest.raises(CheckpointError, match="training.pt was written for the graph .*h\\(4"):
        load_training_checkpoint(tmp_path / "training.pt", other)


def test_resume_rejects_other_estimator(tmp_path):
    model, estimator, data = setup("pcd", init_seed=1)
    Trainer(model, estimator(), TrainingConfig(epochs=1, batch_size=8), generator=torch.Generator().manual_seed(7)).fit(
        data, checkpoint=tmp_path / "training.pt"
    )
    other = Trainer(rbm(6, 4), CD(2), TrainingConfig(epochs=2), generator=torch.Generator())

    with pytest.raises(ValueError, match="saved with estimator PCD, but this trainer uses CD"):
        load_training_checkpoint(tmp_path / "training.pt", other)


def test_resume_needs_trainer_state(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", rbm(6, 4))
    with pytest.raises(CheckpointError, match="model.pt contains no trainer state"):
        load_training_checkpoint(path, Trainer(rbm(6, 4), CD(1), TrainingConfig()))


def test_resume_rejects_other_dtype(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", rbm(6, 4, dtype=torch.float64), training={TRAINER_KEY: {}})
    with pytest.raises(CheckpointError, match="contains torch.float64 parameters, but the trainer's model uses torch.float32"):
        load_training_checkpoint(path, Trainer(rbm(6, 4), CD(1), TrainingConfig()))


def test_checkpoint_path_must_be_a_file(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        EpochCheckpoint(tmp_path)


@pytest.mark.parametrize("schedule, warns", [("constant", False), ("linear", True)])
def test_more_epochs_warn_only_under_linear_schedule(schedule, warns, tmp_path, caplog):
    model, estimator, data = setup("cd", init_seed=1)
    config = TrainingConfig(epochs=2, batch_size=8, learning_rate=0.05, learning_rate_schedule=schedule)
    Trainer(model, estimator(), config, generator=torch.Generator().manual_seed(7)).fit(data, checkpoint=tmp_path / "training.pt")
    longer = TrainingConfig(epochs=4, batch_size=8, learning_rate=0.05, learning_rate_schedule=schedule)
    resumed = Trainer(model, estimator(), longer, generator=torch.Generator())

    with caplog.at_level("WARNING", logger="ebmgraph"):
        load_training_checkpoint(tmp_path / "training.pt", resumed)

    assert ("epochs 2 -> 4" in caplog.text) == warns
