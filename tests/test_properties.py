"""Property-based tests: random graph declarations and inputs, valid and invalid.

Valid declarations and inputs must run through every public entry point (energy,
conditionals, free energy, block Gibbs, mean field, persistent chains, one epoch
of training). Invalid ones must raise ``ValueError`` (``GraphError`` for
declarations) or ``TypeError`` with the layer or argument named in the message,
and no other exception may escape. Hypothesis runs derandomized with a small
number of examples, so every run checks the same cases.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ebmgraph import EnergyModel, Gaussian, Graph, GraphError, PersistentChains, drm
from ebmgraph.learning import CD, PCD, MeanFieldCD, MeanFieldPCD, Trainer, TrainingConfig, sufficient_statistics
from helpers import reference_rbm, set_parameters

FAST = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FAMILIES = ("bernoulli", "spin", "softmax", "gaussian")


# Declarations ---------------------------------------------------------------------


@st.composite
def declarations(draw, max_layers: int = 4):
    """Layers ``(name, size, family)``, edges joining every layer, and a visible set that leaves a hidden layer."""
    n_layers = draw(st.integers(2, max_layers))
    names = [f"l{i}" for i in range(n_layers)]
    layers = []
    for name in names:
        family = draw(st.sampled_from(FAMILIES))
        layers.append((name, draw(st.integers(2 if family == "softmax" else 1, 4)), family))

    # A random tree reaches every layer; extra edges add cycles and skip connections.
    pairs = [(names[draw(st.integers(0, i - 1))], names[i]) for i in range(1, n_layers)]
    for a, b in draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(names)), max_size=2)):
        if a != b and (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    edges = [(b, a) if draw(st.booleans()) else (a, b) for a, b in pairs]
    visible = draw(st.sets(st.sampled_from(names), min_size=1, max_size=n_layers - 1))
    return layers, edges, visible


def build(declaration, *, dtype=torch.float64, seed: int = 0) -> EnergyModel:
    layers, edges, visible = declaration
    graph = Graph()
    for name, size, family in layers:
        graph.add_layer(name, size, family, visible=name in visible)
    for a, b in edges:
        graph.add_edge(a, b)
    return EnergyModel(graph, init_std=0.3, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@st.composite
def models(draw):
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return build(draw(declarations()), dtype=dtype, seed=draw(st.integers(0, 2**16)))


# Valid values ---------------------------------------------------------------------


def valid_values(model: EnergyModel, name: str, batch: int, generator: torch.Generator, *, means: bool = False) -> torch.Tensor:
    """Random valid states (or means) of one layer, ``(batch, size)``."""
    layer = model.graph[name]
    shape = (batch, layer.size)
    options = {"dtype": model.dtype, "generator": generator}
    family = layer.units.name
    if family == "gaussian":
        return torch.randn(shape, **options)
    if family == "softmax":
        if means:
            return torch.softmax(torch.randn(shape, **options), dim=-1)
        index = torch.randint(0, layer.size, (batch,), generator=generator)
        return torch.nn.functional.one_hot(index, layer.size).to(model.dtype)
    uniform = torch.rand(shape, **options)
    if means:
        return uniform if family == "bernoulli" else 2 * uniform - 1
    bits = (uniform < 0.5).to(model.dtype)
    return bits if family == "bernoulli" else 2 * bits - 1


def valid_state(model, names, batch, generator, *, means=False):
    return {name: valid_values(model, name, batch, generator, means=means) for name in names}


def independent_set(model: EnergyModel, order) -> list[str]:
    """A maximal set of pairwise non-adjacent layers, picked greedily in ``order``."""
    chosen = []
    for name in order:
        if not any(model.graph.nx.has_edge(name, other) for other in chosen):
            chosen.append(name)
    return chosen


def assert_valid(model, state, names, batch, *, samples: bool):
    for name in names:
        assert state[name].shape == (batch, model.graph[name].size), name
        model.graph[name].units.check_support(state[name], layer=name, allow_means=not samples)


# Valid inputs run -----------------------------------------------------------------


@FAST
@given(model=models(), batch=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_energy_and_conditionals_of_valid_state(model, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    state = valid_state(model, model.graph.layer_names, batch, generator)

    energy = model.energy(state)

    assert energy.shape == (batch,)
    assert bool(torch.isfinite(energy).all())
    for name in model.graph.layer_names:
        neighbours = {other: state[other] for other in model.graph.neighbours(name)}
        conditional = model.conditional(name, neighbours)
        assert_valid(model, {name: conditional.mean}, [name], batch, samples=False)
        assert_valid(model, {name: conditional.sample(generator)}, [name], batch, samples=True)


@FAST
@given(model=models(), batch=st.integers(1, 5), data=st.data())
def test_free_energy_of_valid_state(model, batch, data):
    order = data.draw(st.permutations(model.graph.layer_names))
    summed = independent_set(model, order)
    kept = [name for name in model.graph.layer_names if name not in summed]
    state = valid_state(model, kept, batch, torch.Generator().manual_seed(data.draw(st.integers(0, 2**16))), means=True)

    free = model.free_energy(state, summed_out=summed)

    assert free.shape == (batch,)
    assert bool(torch.isfinite(free).all())


@st.composite
def clamped_sets(draw, model):
    """A non-empty set of clamped layers that leaves at least one free layer."""
    names = model.graph.layer_names
    return draw(st.sets(st.sampled_from(names), min_size=1, max_size=len(names) - 1))


@FAST
@given(model=models(), batch=st.integers(1, 4), steps=st.integers(1, 3), data=st.data())
def test_gibbs_keeps_clamped_and_samples_free(model, batch, steps, data):
    clamped = data.draw(clamped_sets(model))
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    state = valid_state(model, model.graph.layer_names, batch, generator)
    schedule = model.schedule(clamped)

    result = schedule.gibbs(state, steps, generator=generator)

    for name in clamped:
        assert torch.equal(result[name], state[name]), name
    assert_valid(model, result, schedule.free, batch, samples=True)


@FAST
@given(model=models(), batch=st.integers(1, 4), steps=st.integers(1, 3), init=st.sampled_from(["zeros", "bottom_up"]), data=st.data())
def test_mean_field_returns_valid_means(model, batch, steps, init, data):
    clamped = data.draw(clamped_sets(model))
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    state = valid_state(model, clamped, batch, generator, means=True)
    schedule = model.schedule(clamped)

    result = schedule.mean_field(state, steps, init=init)

    assert_valid(model, result, schedule.free, batch, samples=False)


ESTIMATORS = {
    "cd": lambda: CD(1, mean_field_steps=2),
    "pcd": lambda: PCD(1, mean_field_steps=2),
    "mf-pcd": lambda: MeanFieldPCD(1, n_chains=3, mean_field_steps=2),
    "mf-cd": lambda: MeanFieldCD(2),
}


@FAST
@given(
    model=models(),
    n_rows=st.integers(1, 6),
    batch_size=st.integers(1, 4),
    estimator=st.sampled_from(sorted(ESTIMATORS)),
    seed=st.integers(0, 2**16),
)
def test_one_epoch_of_training_runs(model, n_rows, batch_size, estimator, seed):
    generator = torch.Generator().manual_seed(seed)
    data = valid_state(model, model.graph.visible, n_rows, generator, means=estimator != "mf-cd")
    config = TrainingConfig(epochs=1, batch_size=batch_size, learning_rate=0.01)
    trainer = Trainer(model, ESTIMATORS[estimator](), config, generator=generator)

    history = trainer.fit(data)

    assert trainer.step == math.ceil(n_rows / batch_size)
    assert len(history) == 1
    assert math.isfinite(history[0]["reconstruction_error"])
    for name, parameter in model.named_parameters():
        assert bool(torch.isfinite(parameter).all()), name


# Invalid data is rejected, naming the layer ----------------------------------------

CORRUPTIONS = ("width", "missing batch axis", "dtype", "integer dtype", "device", "not a tensor", "nan", "inf", "-inf", "batch size", "support")


def corrupt(model: EnergyModel, name: str, values: torch.Tensor, kind: str, position: tuple[int, int]):
    """Return ``(bad value, expected exception type)`` for one kind of defect in one layer."""
    row, column = position
    if kind == "width":
        return torch.cat([values, values[:, :1]], dim=1), ValueError
    if kind == "missing batch axis":
        return values[0], ValueError
    if kind == "dtype":
        return values.to(torch.float32 if model.dtype == torch.float64 else torch.float64), TypeError
    if kind == "integer dtype":
        return values.to(torch.int64), TypeError
    if kind == "device":
        return values.to("meta"), ValueError
    if kind == "not a tensor":
        return values.tolist(), TypeError
    if kind == "batch size":
        return torch.cat([values, values[:1]], dim=0), ValueError
    bad = values.clone()
    if kind in ("nan", "inf", "-inf"):
        bad[row, column] = float(kind)
        return bad, ValueError
    # "support": outside every valid value and mean of the family.
    if model.graph[name].units.name == "softmax":
        bad[row] = 1.0
    else:
        bad[row, column] = 1.5
    return bad, ValueError


def defect_layers(model, names, kind) -> list[str]:
    """Layers among ``names`` that a defect of ``kind`` applies to (Gaussian units have no support to leave)."""
    if kind == "batch size" and len(names) < 2:
        return []
    if kind == "support":
        return sorted(name for name in names if model.graph[name].units.name != "gaussian")
    return sorted(names)


def assert_rejected(operation, name: str, expected: type):
    with pytest.raises((ValueError, TypeError)) as error:
        operation()
    assert isinstance(error.value, expected), f"{type(error.value).__name__}: {error.value}"
    assert f"'{name}'" in str(error.value)


ENTRY_POINTS = ("energy", "free energy", "conditional", "gibbs", "mean field", "chains", "fit")


def entry_point(model, which, clamped):
    """The layers an entry point reads, and a function that calls it on a state."""
    names = model.graph.layer_names
    if which == "energy":
        return names, model.energy
    if which == "free energy":
        summed = independent_set(model, names)
        return [n for n in names if n not in summed], lambda state: model.free_energy(state, summed_out=summed)
    if which == "conditional":
        target = names[0]
        return model.graph.neighbours(target), lambda state: model.conditional(target, state)
    if which == "gibbs":
        return names, lambda state: model.schedule(clamped).gibbs(state)
    if which == "mean field":
        return sorted(clamped), lambda state: model.schedule(clamped).mean_field(state, 2)
    if which == "chains":
        return names, lambda state: PersistentChains(model.schedule(clamped), state)
    trainer = Trainer(model, CD(1, mean_field_steps=2), TrainingConfig(batch_size=2), generator=torch.Generator().manual_seed(0))
    return model.graph.visible, trainer.fit


@pytest.mark.parametrize("kind", CORRUPTIONS)
@pytest.mark.parametrize("which", ENTRY_POINTS)
@settings(FAST, max_examples=4)
@given(model=models(), batch=st.integers(1, 4), data=st.data())
def test_invalid_data_is_rejected_naming_layer(which, kind, model, batch, data):
    clamped = data.draw(clamped_sets(model))
    names, call = entry_point(model, which, clamped)
    candidates = defect_layers(model, names, kind)
    assume(candidates)
    name = data.draw(st.sampled_from(candidates))
    position = (data.draw(st.integers(0, batch - 1)), data.draw(st.integers(0, model.graph[name].size - 1)))
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    state = valid_state(model, names, batch, generator, means=which not in ("chains", "gibbs"))
    state[name], expected = corrupt(model, name, state[name], kind, position)

    assert_rejected(lambda: call(state), name, expected)


@FAST
@given(model=models(), batch=st.integers(1, 4), data=st.data())
def test_means_rejected_where_samples_required(model, batch, data):
    discrete = [name for name in model.graph.layer_names if model.graph[name].units.name != "gaussian"]
    clamped = data.draw(clamped_sets(model))
    schedule = model.schedule(clamped)
    free = [name for name in schedule.free if name in discrete]
    if not free:
        return
    name = data.draw(st.sampled_from(free))
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    state = valid_state(model, model.graph.layer_names, batch, generator)
    fraction = state[name].clone()
    row = data.draw(st.integers(0, batch - 1))
    # 0.5 for Bernoulli units, 0 for spins and [0.5, 0.5, 0, ...] for a softmax row: valid means, invalid samples.
    if model.graph[name].units.name == "softmax":
        fraction[row] = 0.0
        fraction[row, :2] = 0.5
    else:
        fraction[row, 0] = 0.5 if model.graph[name].units.name == "bernoulli" else 0.0
    state[name] = fraction

    assert_rejected(lambda: PersistentChains(schedule, state), name, ValueError)
    assert_rejected(lambda: model.check_state(state, allow_means=False), name, ValueError)
    neighbours = {other: state[other] for other in model.graph.neighbours(name) if other != name}
    conditional = model.conditional(name, {**neighbours, name: state[name]})
    with pytest.raises(ValueError, match="layer 'value'"):
        conditional.log_prob(fraction)


# Invalid declarations -------------------------------------------------------------

BAD_NAMES = ["", "1a", "a-b", "a b", "l0.x"]
BAD_SIZES = [0, -1, 2.0, True, (2, 0), "3", (), None]
BAD_UNITS = ["gauss", "Bernoulli", 3, None]
BAD_VISIBLE = ["yes", 1, None]


DECLARATION_DEFECTS = ("name", "size", "units", "visible", "duplicate", "unknown edge", "self edge", "repeated edge", "isolated")


@pytest.mark.parametrize("defect", DECLARATION_DEFECTS)
@settings(FAST, max_examples=6)
@given(declaration=declarations(), data=st.data())
def test_invalid_declaration_raises_graph_error(defect, declaration, data):
    layers, edges, visible = declaration
    names = [name for name, _, _ in layers]
    target = data.draw(st.sampled_from(names))
    graph = Graph()

    def declare():
        for name, size, family in layers:
            options = {"name": name, "shape": size, "units": family, "visible": name in visible}
            if name == target and defect in ("size", "units", "visible"):
                pool = {"size": BAD_SIZES, "units": BAD_UNITS, "visible": BAD_VISIBLE}[defect]
                options[{"size": "shape", "units": "units", "visible": "visible"}[defect]] = data.draw(st.sampled_from(pool))
            graph.add_layer(options["name"], options["shape"], options["units"], visible=options["visible"])
            if name == target and defect == "duplicate":
                graph.add_layer(name, size, family)
        for a, b in edges:
            graph.add_edge(a, b)
        if defect == "unknown edge":
            graph.add_edge(target, "missing_layer")
        elif defect == "self edge":
            graph.add_edge(target, target)
        elif defect == "repeated edge":
            a, b = data.draw(st.sampled_from(edges))
            graph.add_edge(b, a)
        elif defect == "isolated":
            graph.add_layer("lonely", 2)
        EnergyModel(graph)

    if defect == "name":
        bad = data.draw(st.sampled_from(BAD_NAMES))
        with pytest.raises(GraphError, match="layer name must be a Python identifier"):
            graph.add_layer(bad, 2)
        return
    with pytest.raises(GraphError) as error:
        declare()
    expected = {"unknown edge": "missing_layer", "isolated": "lonely"}.get(defect, target)
    if defect == "repeated edge":
        expected = "repeated edge"
    assert expected in str(error.value)


def test_gaussian_std_count_must_match_size():
    graph = Graph()
    with pytest.raises(GraphError, match="layer 'v': Gaussian family has 2 standard deviations for 3 units"):
        graph.add_layer("v", 3, Gaussian(std=(1.0, 2.0)))


# Invalid arguments ----------------------------------------------------------------

NOT_POSITIVE = st.one_of(st.integers(max_value=0), st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf))
NOT_NUMBERS = st.sampled_from(["0.1", None, True, [0.1]])


@FAST
@given(value=st.one_of(NOT_POSITIVE, NOT_NUMBERS))
def test_invalid_learning_rate_is_rejected(value):
    with pytest.raises((ValueError, TypeError), match="learning_rate"):
        TrainingConfig(learning_rate=value)


@FAST
@given(name=st.sampled_from(["epochs", "batch_size"]), value=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), NOT_NUMBERS))
def test_invalid_counts_are_rejected(name, value):
    with pytest.raises(ValueError, match=name):
        TrainingConfig(**{name: value})


@FAST
@given(
    name=st.sampled_from(["momentum", "weight_decay", "max_abs_parameter"]),
    value=st.one_of(st.floats(max_value=-1e-9), st.just(math.nan), NOT_NUMBERS),
)
def test_invalid_optimizer_settings_are_rejected(name, value):
    with pytest.raises((ValueError, TypeError), match=name):
        TrainingConfig(**{name: value})


@FAST
@given(steps=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), NOT_NUMBERS))
def test_invalid_step_counts_are_rejected(steps):
    model = reference_rbm()
    v = torch.ones(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="steps"):
        model.schedule(["v"]).gibbs({"v": v}, steps)
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps == 0):
        with pytest.raises(ValueError, match="steps"):
            model.schedule(["v"]).mean_field({"v": v}, steps)
    with pytest.raises(ValueError, match="steps"):
        drm(3, (2,), 2).predict(torch.ones(1, 3), steps)


@FAST
@given(
    factory=st.sampled_from([("k", CD), ("k", PCD), ("n_chains", PCD), ("steps", MeanFieldCD), ("mean_field_steps", MeanFieldPCD)]),
    value=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), NOT_NUMBERS),
)
def test_invalid_estimator_settings_are_rejected(factory, value):
    name, estimator = factory
    with pytest.raises(ValueError, match=name):
        estimator(**{name: value})


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"model": None}, TypeError, "model must be an EnergyModel"),
        ({"estimator": None}, TypeError, "estimator must be a GradientEstimator"),
        ({"config": {"learning_rate": 0.1}}, TypeError, "config must be a TrainingConfig"),
        ({"generator": 3}, TypeError, "generator must be a torch.Generator"),
        ({"monitor_rows": 0}, ValueError, "monitor_rows must be a positive int"),
    ],
)
def test_trainer_rejects_invalid_arguments(arguments, error, message):
    options = {"model": reference_rbm(), "estimator": CD(1), "config": TrainingConfig(), **arguments}
    with pytest.raises(error, match=message):
        Trainer(**options)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"init_std": -1.0}, ValueError, "init_std must be a non-negative finite number"),
        ({"init_std": math.nan}, ValueError, "init_std must be a non-negative finite number"),
        ({"init_std": "0.1"}, TypeError, "init_std must be a number"),
        ({"dtype": "float32"}, TypeError, "dtype must be a floating-point torch.dtype"),
        ({"dtype": torch.int64}, TypeError, "dtype must be a floating-point torch.dtype"),
    ],
)
def test_model_rejects_invalid_options(options, error, message):
    with pytest.raises(error, match=message):
        EnergyModel(reference_rbm().graph, **options)


# Empty batches and batches of one -------------------------------------------------


def test_empty_batch_rejected_where_averaged():
    model = reference_rbm()
    empty = {"v": torch.zeros(0, 3, dtype=torch.float64), "h": torch.zeros(0, 2, dtype=torch.float64)}
    with pytest.raises(ValueError, match="0 rows"):
        sufficient_statistics(model, empty)
    with pytest.raises(ValueError, match="training data is empty"):
        Trainer(model, CD(1), TrainingConfig()).fit({"v": empty["v"]})
    with pytest.raises(ValueError, match="0 rows"):
        Trainer(model, CD(1), TrainingConfig()).update({"v": empty["v"]})
    with pytest.raises(ValueError, match="n_chains must be a positive int"):
        model.schedule().init_chains(0)


def test_empty_batch_gives_empty_results_per_row():
    model = reference_rbm()
    v = torch.zeros(0, 3, dtype=torch.float64)
    assert model.free_energy({"v": v}).shape == (0,)
    assert model.schedule(["v"]).gibbs({"v": v})["h"].shape == (0, 2)


def test_batch_of_one_keeps_batch_axis():
    model = reference_rbm()
    v = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    assert model.free_energy({"v": v}).shape == (1,)
    assert model.schedule(["v"]).mean_field({"v": v}, 2)["h"].shape == (1, 2)
    assert model.schedule(["v"]).gibbs({"v": v}, generator=torch.Generator().manual_seed(0))["h"].shape == (1, 2)
    trainer = Trainer(model, PCD(1), TrainingConfig(batch_size=4), generator=torch.Generator().manual_seed(0))
    trainer.fit({"v": v})
    assert trainer.step == 1
    assert trainer.estimator.chains.n_chains == 1


# Bad data accepted silently: every entry point of the 3 x 2 reference RBM ------------

BAD_ROWS = [
    ([1.2, 0.0, 1.0], "expected values in \\[0, 1\\] for bernoulli units, got 1.2 at row 0, unit 0"),
    ([-1.0, 1.0, 1.0], "expected values in \\[0, 1\\] for bernoulli units, got -1.0 at row 0, unit 0"),
    ([math.nan, 0.0, 1.0], "NaN or infinite values \\(first at row 0, unit 0: nan\\)"),
    ([0.0, math.inf, 1.0], "NaN or infinite values \\(first at row 0, unit 1: inf\\)"),
]


def reference_entry_points(model):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.ones(1, 2, dtype=torch.float64)
    return {
        "fit": lambda v: Trainer(model, CD(1), TrainingConfig(epochs=2), generator=generator).fit({"v": v}),
        "free energy": lambda v: model.free_energy({"v": v}),
        "transform": lambda v: model.conditional("h", {"v": v}).mean,
        "mean field": lambda v: model.schedule(["v"]).mean_field({"v": v}, 1),
        "chains from data": lambda v: PersistentChains(model.schedule(), {"v": v, "h": hidden}),
    }


@pytest.mark.parametrize("row, message", BAD_ROWS)
@pytest.mark.parametrize("operation", ["fit", "free energy", "transform", "mean field", "chains from data"])
def test_bad_rows_rejected_at_every_entry_point(row, message, operation):
    model = reference_rbm()
    with pytest.raises(ValueError, match=f"layer 'v': .*{message}"):
        reference_entry_points(model)[operation](torch.tensor([row], dtype=torch.float64))


def test_fractional_row_is_probability_not_sample():
    model = reference_rbm()
    v = torch.tensor([[0.3, 0.7, 1.0]], dtype=torch.float64)
    operations = reference_entry_points(model)
    for name in ("fit", "free energy", "transform", "mean field"):
        operations[name](v)
    with pytest.raises(ValueError, match="layer 'v': expected values in \\{0, 1\\} for bernoulli units, got 0.3 at row 0, unit 0"):
        operations["chains from data"](v)


def test_gaussian_nan_rejected():
    graph = Graph()
    graph.add_layer("v", 2, Gaussian(), visible=True)
    graph.add_layer("h", 3)
    graph.add_edge("v", "h")
    model = EnergyModel(graph, dtype=torch.float64)
    v = torch.tensor([[math.nan, 0.2]], dtype=torch.float64)
    for operation in reference_entry_points(model).values():
        with pytest.raises(ValueError, match="layer 'v': state contains NaN or infinite values \\(first at row 0, unit 0"):
            operation(v)


# A non-finite parameter is reported by name and index, before any sampling -----------


def model_with_infinite_weight():
    model = reference_rbm()
    with torch.no_grad():
        model.weights["v-h"][0, 0] = math.inf
    return model


@pytest.mark.parametrize(
    "operation",
    [
        lambda m, v: m.conditional("h", {"v": v}).sample(torch.Generator().manual_seed(0)),
        lambda m, v: m.schedule(["v"]).gibbs({"v": v}, generator=torch.Generator().manual_seed(0)),
        lambda m, v: m.schedule(["v"]).mean_field({"v": v}, 1),
        lambda m, v: m.free_energy({"v": v}),
        lambda m, v: m.energy({"v": v, "h": torch.ones(1, 2, dtype=torch.float64)}),
    ],
    ids=["sample", "gibbs", "mean field", "free energy", "energy"],
)
def test_infinite_weight_named_before_sampling(operation):
    model = model_with_infinite_weight()
    v = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
    # The input to h is [nan, 2.65] although unit 0 of v is off, because 0 * inf is NaN.
    assert torch.isnan(v @ model.weights["v-h"].detach() + model.biases["h"].detach())[0, 0]

    with pytest.raises(ValueError, match="parameter weights.v-h contains NaN or infinite values \\(first at index \\(0, 0\\): inf\\)"):
        operation(model, v)


def test_finite_model_passes_parameter_check():
    set_parameters(reference_rbm(), {}, {}).check_parameters()
