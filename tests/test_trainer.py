import pytest
import torch

from ebmgraph import rbm
from ebmgraph.learning import CD, PCD, DivergenceError, Trainer, TrainingConfig, iterate_batches, sufficient_statistics
from helpers import reference_rbm

G1 = [[0.2, -0.1], [0.0, 0.3], [-0.4, 0.1]]
G2 = [[0.1, 0.1], [-0.2, 0.0], [0.3, -0.3]]


def weight_only_gradient(model, values):
    gradient = {name: torch.zeros_like(parameter) for name, parameter in model.named_parameters()}
    gradient["weights.v-h"] = torch.tensor(values, dtype=model.dtype)
    return gradient


def test_momentum_and_weight_decay_follow_the_practical_guide():
    model = reference_rbm()
    trainer = Trainer(model, CD(1), TrainingConfig(learning_rate=0.1, momentum=0.5, weight_decay=0.01))

    trainer.apply_gradient(weight_only_gradient(model, G1))
    step1 = model.weights["v-h"].reshape(-1).tolist()
    trainer.apply_gradient(weight_only_gradient(model, G2))
    step2 = model.weights["v-h"].reshape(-1).tolist()

    assert step1 == pytest.approx([0.519500, -1.009000, 1.498500, 0.279750, -0.789250, 2.008000], abs=1e-6)
    assert step2 == pytest.approx([0.538731, -1.002491, 1.476252, 0.294345, -0.778086, 1.979992], abs=1e-6)
    # The momentum-times-learning-rate bug would give 0.529955 for the first entry.
    assert step2[0] != pytest.approx(0.529955, abs=1e-4)


def test_equal_statistics_leave_only_weight_decay():
    model = reference_rbm()
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    trainer = Trainer(model, CD(1), TrainingConfig(learning_rate=0.1, momentum=0.5, weight_decay=0.01))

    trainer.apply_gradient(weight_only_gradient(model, [[0.0, 0.0]] * 3))

    change = (model.weights["v-h"] - before["weights.v-h"]).reshape(-1).tolist()
    assert change == pytest.approx([-0.0005, 0.001, -0.0015, -0.00025, 0.00075, -0.002], abs=1e-9)
    assert torch.equal(model.biases["v"], before["biases.v"])
    assert torch.equal(model.biases["h"], before["biases.h"])


def test_batches_cover_rows_once_with_ragged_end():
    batches = list(iterate_batches(13, 10, shuffle=True, generator=torch.Generator().manual_seed(0)))

    assert [len(batch) for batch in batches] == [10, 3]
    assert sorted(torch.cat(batches).tolist()) == list(range(13))


def test_gradient_of_ragged_batch_is_its_mean():
    model = reference_rbm()
    rows = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    state = {"v": rows, "h": model.conditional("h", {"v": rows}).mean}

    stats = sufficient_statistics(model, state)["weights.v-h"]

    assert stats.reshape(-1).tolist() == pytest.approx([0.379465, 0.405189, 0.459917, 0.449131, 0.294333, 0.578732], abs=1e-6)


def test_single_row_training_updates_parameters():
    model = reference_rbm()
    before = model.weights["v-h"].detach().clone()
    trainer = Trainer(model, CD(1), TrainingConfig(epochs=1, batch_size=10), generator=torch.Generator().manual_seed(1))

    history = trainer.fit({"v": torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)})

    assert trainer.step == 1
    assert not torch.equal(model.weights["v-h"], before)
    assert history[0]["epoch"] == 1


def test_empty_data_is_rejected():
    trainer = Trainer(reference_rbm(), CD(1), TrainingConfig())
    with pytest.raises(ValueError, match="training data is empty"):
        trainer.fit({"v": torch.zeros(0, 3, dtype=torch.float64)})


def test_missing_data_layer_is_rejected():
    trainer = Trainer(reference_rbm(), CD(1), TrainingConfig())
    with pytest.raises(ValueError, match="missing layer 'v'"):
        trainer.fit({})


def test_hidden_layer_in_data_is_rejected():
    trainer = Trainer(reference_rbm(), CD(1), TrainingConfig())
    data = {"v": torch.ones(4, 3, dtype=torch.float64), "h": torch.ones(4, 2, dtype=torch.float64)}

    with pytest.raises(ValueError, match="data has layer 'h', which is not a data layer of this estimator"):
        trainer.fit(data)


@pytest.mark.parametrize("step", ["update", "fit_batch"])
def test_step_rejects_tensor_batch(step):
    trainer = Trainer(reference_rbm(), PCD(1), TrainingConfig())

    with pytest.raises(TypeError, match=r"a batch must be a mapping from layer name to tensor, such as \{'v': rows\}; got Tensor"):
        getattr(trainer, step)(torch.ones(4, 3, dtype=torch.float64))


def test_infinite_weight_is_reported_before_training():
    model = reference_rbm()
    with torch.no_grad():
        model.weights["v-h"][0, 0] = float("inf")
    trainer = Trainer(model, CD(1), TrainingConfig())
    with pytest.raises(DivergenceError, match="weights.v-h is non-finite before training \\(first at index \\(0, 0\\): inf\\)"):
        trainer.fit({"v": torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)})


def test_overflowing_step_raises_divergence_naming_step():
    model = reference_rbm(dtype=torch.float32)
    trainer = Trainer(model, CD(1), TrainingConfig(learning_rate=1e38))
    # 1e38 times 14 exceeds the largest float32 (3.4e38), so the first weight becomes infinite.
    gradient = weight_only_gradient(model, [[14.0, 0.0], [0.0, 0.0], [0.0, 0.0]])

    with pytest.raises(DivergenceError, match="weights.v-h is non-finite at epoch 1, step 1 \\(first at index \\(0, 0\\): inf\\).*learning_rate=1e\\+38"):
        trainer.apply_gradient(gradient)


def test_unrepresentable_learning_rate_is_rejected():
    with pytest.raises(ValueError, match="learning_rate=1e\\+39 is larger than the largest torch.float32"):
        Trainer(reference_rbm(dtype=torch.float32), CD(1), TrainingConfig(learning_rate=1e39))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"learning_rate": 0.0}, "learning_rate must be a positive"),
        ({"learning_rate": float("nan")}, "learning_rate must be a positive"),
        ({"epochs": 0}, "epochs must be a positive int"),
        ({"batch_size": 2.5}, "batch_size must be a positive int"),
        ({"momentum": 1.0}, "momentum must be in \\[0, 1\\)"),
        ({"weight_decay": -0.1}, "weight_decay must be a non-negative"),
    ],
)
def test_config_rejects_bad_values(options, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**options)


def train_once(epochs, resume_after=None):
    """Train a small RBM with PCD; with ``resume_after``, stop there, save, rebuild and resume."""
    data = {"v": torch.bernoulli(torch.full((37, 6), 0.4), generator=torch.Generator().manual_seed(9))}
    config = TrainingConfig(epochs=epochs, batch_size=8, momentum=0.5)
    model = rbm(6, 4, generator=torch.Generator().manual_seed(5))
    if resume_after is None:
        Trainer(model, PCD(1), config, generator=torch.Generator().manual_seed(5)).fit(data)
        return model

    first_config = TrainingConfig(epochs=resume_after, batch_size=8, momentum=0.5)
    partial = Trainer(model, PCD(1), first_config, generator=torch.Generator().manual_seed(5))
    partial.fit(data)
    saved_model = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    saved_trainer = partial.state_dict()

    fresh = rbm(6, 4)
    fresh.load_state_dict(saved_model)
    resumed = Trainer(fresh, PCD(1), config, generator=torch.Generator())
    resumed.load_state_dict(saved_trainer)
    resumed.fit(data)
    return fresh


def test_same_seed_gives_identical_parameters():
    first, second = train_once(3), train_once(3)
    for name, parameter in first.named_parameters():
        assert torch.equal(parameter, dict(second.named_parameters())[name]), name


def test_resumed_training_matches_uninterrupted():
    uninterrupted = train_once(4)
    resumed = train_once(4, resume_after=2)
    for name, parameter in uninterrupted.named_parameters():
        assert torch.equal(parameter, dict(resumed.named_parameters())[name]), name


def test_linear_schedule_lowers_rate_each_epoch():
    config = TrainingConfig(epochs=4, learning_rate=0.2, learning_rate_schedule="linear")
    assert [config.learning_rate_at(epoch) for epoch in range(4)] == pytest.approx([0.2, 0.15, 0.1, 0.05])
    assert TrainingConfig(epochs=4, learning_rate=0.2).learning_rate_at(3) == 0.2


def test_trainer_applies_schedule_to_optimizer():
    model = reference_rbm()
    config = TrainingConfig(epochs=2, batch_size=10, learning_rate=0.2, learning_rate_schedule="linear")
    trainer = Trainer(model, CD(1), config, generator=torch.Generator().manual_seed(0))
    rates = []

    trainer.fit({"v": torch.ones(5, 3, dtype=torch.float64)}, callback=lambda t, r: rates.append(t.optimizer.param_groups[0]["lr"]))

    assert rates == pytest.approx([0.2, 0.1])


def test_config_rejects_unknown_schedule():
    with pytest.raises(ValueError, match="learning_rate_schedule must be 'constant' or 'linear'"):
        TrainingConfig(learning_rate_schedule="cosine")


def test_load_state_rejects_other_model_shapes():
    source = Trainer(rbm(6, 4), CD(1), TrainingConfig(momentum=0.5), generator=torch.Generator().manual_seed(0))
    source.fit({"v": torch.ones(4, 6)})
    target = Trainer(rbm(6, 3), CD(1), TrainingConfig(momentum=0.5), generator=torch.Generator())
    with pytest.raises(ValueError, match="does not fit this model"):
        target.load_state_dict(source.state_dict())


def test_load_state_rejects_fewer_epochs_than_saved():
    source = Trainer(rbm(6, 4), CD(1), TrainingConfig(epochs=3), generator=torch.Generator().manual_seed(0))
    source.fit({"v": torch.ones(4, 6)})
    target = Trainer(rbm(6, 4), CD(1), TrainingConfig(epochs=2), generator=torch.Generator())

    with pytest.raises(ValueError, match="saved after epoch 3, but this trainer's config has epochs=2"):
        target.load_state_dict(source.state_dict())


def test_load_state_accepts_more_epochs_than_saved():
    source = Trainer(rbm(6, 4), CD(1), TrainingConfig(epochs=2), generator=torch.Generator().manual_seed(0))
    source.fit({"v": torch.ones(4, 6)})
    target = Trainer(rbm(6, 4), CD(1), TrainingConfig(epochs=3), generator=torch.Generator())

    target.load_state_dict(source.state_dict())

    assert target.epoch == 2


def test_load_state_rejects_empty_dict():
    trainer = Trainer(rbm(6, 4), CD(1), TrainingConfig())
    with pytest.raises(ValueError, match="trainer state is missing"):
        trainer.load_state_dict({})


def test_unknown_clamped_layer_is_named():
    trainer = Trainer(rbm(6, 4), CD(1, clamped=["zz"]), TrainingConfig())
    with pytest.raises(ValueError, match="unknown layer 'zz'"):
        trainer.fit({"v": torch.ones(4, 6)})


def test_exploding_weight_raises_divergence_naming_step():
    model = reference_rbm()
    trainer = Trainer(model, CD(1), TrainingConfig(learning_rate=1.0, max_abs_parameter=100.0))
    gradient = weight_only_gradient(model, [[0.0, 0.0], [0.0, 150.0], [0.0, 0.0]])

    with pytest.raises(DivergenceError, match="weights.v-h exceeds max_abs_parameter=100 at epoch 1, step 1 \\(first at index \\(1, 1\\): 150.2\\)"):
        trainer.apply_gradient(gradient)


def test_exploding_check_can_be_turned_off():
    model = reference_rbm()
    trainer = Trainer(model, CD(1), TrainingConfig(learning_rate=1.0, max_abs_parameter=float("inf")))

    trainer.apply_gradient(weight_only_gradient(model, [[1e6, 0.0], [0.0, 0.0], [0.0, 0.0]]))

    assert model.weights["v-h"][0, 0].item() == pytest.approx(1e6 + 0.5)


def test_plain_step_matches_optimizer_step(monkeypatch):
    data = (torch.rand(40, 6, generator=torch.Generator().manual_seed(5)) < 0.5).double()
    config = TrainingConfig(batch_size=8, learning_rate=0.3)
    trained = []
    for plain in (True, False):
        model = rbm(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        trainer = Trainer(model, PCD(1), config, generator=torch.Generator().manual_seed(1))
        assert trainer._plain_step()
        if not plain:
            monkeypatch.setattr(trainer, "_plain_step", lambda: False)
        for start in range(0, 40, 8):
            trainer.update({"v": data[start : start + 8]})
        trained.append(model)

    for name, parameter in trained[0].named_parameters():
        assert torch.equal(parameter, dict(trained[1].named_parameters())[name]), name


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_fit_batch_matches_update(momentum):
    data = (torch.rand(40, 6, generator=torch.Generator().manual_seed(5)) < 0.5).double()
    config = TrainingConfig(batch_size=8, learning_rate=0.3, momentum=momentum)
    trained = []
    for method in ("update", "fit_batch"):
        model = rbm(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        trainer = Trainer(model, PCD(1), config, generator=torch.Generator().manual_seed(1))
        for start in range(0, 40, 8):
            getattr(trainer, method)({"v": data[start : start + 8]})
        assert trainer.step == 5
        trained.append(model)

    for name, parameter in trained[0].named_parameters():
        # The in-place step rounds differently from p + lr * g; five float64 steps stay within 1e-12.
        torch.testing.assert_close(parameter, dict(trained[1].named_parameters())[name], rtol=0, atol=1e-12, msg=name)


def test_fit_batch_checks_divergence():
    model = rbm(6, 4, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(model, CD(1), TrainingConfig(learning_rate=1e9, max_abs_parameter=100.0))
    batch = {"v": (torch.rand(8, 6, generator=torch.Generator().manual_seed(2)) < 0.5).float()}

    with pytest.raises(DivergenceError, match="exceeds max_abs_parameter=100 at epoch 1, step 1"):
        trainer.fit_batch(batch)
