"""The benchmark's tasks, and for each one the engine, matmul-only and bare-torch variants.

A *task* is a fixed piece of work with a rate to measure (sweeps, mean-field
iterations or training examples per second). A *variant* is one way of doing
it: ``engine`` (this library), ``matmul`` (the products alone), ``bare`` (plain
torch) and the other libraries of :mod:`ebmgraph.bench.external`. Each variant
factory takes a :class:`Context`, sets up its model and data (not timed) and
returns a :class:`Runner` whose call is timed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from ebmgraph.bench import baselines, external
from ebmgraph.bench.baselines import product
from ebmgraph.bench.context import Context, Runner, Sizes, Unavailable
from ebmgraph.learning import PCD, MeanFieldCD, Trainer, TrainingConfig
from ebmgraph.presets import dbm, drm, rbm

__all__ = ["Task", "build_tasks", "sizes_record", "LEARNING_RATE"]

LEARNING_RATE = 0.1
"""Learning rate of every training task (the DRM paper's; its size does not change the cost)."""


@dataclass(frozen=True)
class Task:
    """One row group of the table: a piece of work and the variants that do it."""

    name: str
    title: str
    unit: str
    variants: dict[str, Callable[[Context], Runner]] = field(default_factory=dict)
    shape: dict = field(default_factory=dict)


def _no_grad(call: Callable[[], object]) -> Callable[[], object]:
    def wrapped():
        with torch.no_grad():
            return call()

    return wrapped


def _parameters(model) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Detached copies of the model's weights (declaration order) and biases (layer order)."""
    weights = [model.weights[model.edge_key(a, b)].detach().clone() for a, b in model.graph.edges]
    biases = [model.biases[name].detach().clone() for name in model.graph.layer_names]
    return weights, biases


# Block Gibbs ----------------------------------------------------------------------


def _rbm_gibbs(ctx: Context) -> dict[str, Callable[[Context], Runner]]:
    n_visible, n_hidden = ctx.sizes.rbm
    chains, sweeps = ctx.sizes.chains, ctx.sizes.sweeps_per_call

    def engine(ctx: Context, capture: bool = False) -> Runner:
        model = rbm(n_visible, n_hidden, **ctx.model_options())
        schedule, visible, generator = model.schedule(), ctx.binary(chains, n_visible), ctx.generator()

        def call():
            return schedule.gibbs({"v": visible}, sweeps, generator=generator, validate=False, capture=capture)

        return Runner(_no_grad(call), sweeps)

    def matmul(ctx: Context) -> Runner:
        like = ctx.binary(1, 1)
        pair = [product(chains, n_visible, n_hidden, like), product(chains, n_hidden, n_visible, like, right_t=True)]
        return Runner(baselines.matmul_only(pair * sweeps), sweeps)

    def bare(ctx: Context) -> Runner:
        (weight,), (visible_bias, hidden_bias) = _parameters(rbm(n_visible, n_hidden, **ctx.model_options()))
        visible, generator = ctx.binary(chains, n_visible), ctx.generator()
        return Runner(baselines.bare_rbm_gibbs(weight, visible_bias, hidden_bias, visible, sweeps, generator), sweeps)

    return {
        "engine": engine,
        **_captured_variant(ctx, engine),
        "matmul": matmul,
        "bare": bare,
        "learnergy": external.learnergy_rbm_gibbs,
        "thrml": external.thrml_rbm_gibbs,
    }


def _dbm_gibbs(ctx: Context) -> dict[str, Callable[[Context], Runner]]:
    n_visible, n_h1, n_h2 = ctx.sizes.dbm
    chains, sweeps = ctx.sizes.chains, ctx.sizes.sweeps_per_call

    def start(ctx: Context) -> dict[str, torch.Tensor]:
        return {"v": ctx.binary(chains, n_visible), "h2": ctx.binary(chains, n_h2, offset=3)}

    def engine(ctx: Context, capture: bool = False) -> Runner:
        model = dbm((n_visible, n_h1, n_h2), **ctx.model_options())
        schedule, state, generator = model.schedule(), start(ctx), ctx.generator()

        def call():
            return schedule.gibbs(state, sweeps, generator=generator, validate=False, capture=capture)

        return Runner(_no_grad(call), sweeps)

    def matmul(ctx: Context) -> Runner:
        like = ctx.binary(1, 1)
        sweep = [
            product(chains, n_visible, n_h1, like),
            product(chains, n_h2, n_h1, like, right_t=True),
            product(chains, n_h1, n_visible, like, right_t=True),
            product(chains, n_h1, n_h2, like),
        ]
        return Runner(baselines.matmul_only(sweep * sweeps), sweeps)

    def bare(ctx: Context) -> Runner:
        weights, biases = _parameters(dbm((n_visible, n_h1, n_h2), **ctx.model_options()))
        state = start(ctx)
        call = baselines.bare_dbm_gibbs(weights, biases, state["v"], state["h2"], sweeps, ctx.generator())
        return Runner(call, sweeps)

    return {"engine": engine, **_captured_variant(ctx, engine), "matmul": matmul, "bare": bare}


# Mean field -----------------------------------------------------------------------


def _drm_mean_field(ctx: Context, batch: int) -> dict[str, Callable[[Context], Runner]]:
    n_x, n_h1, n_h2, n_y = ctx.sizes.drm
    steps = ctx.sizes.mean_field_steps

    def engine(ctx: Context, capture: bool = False) -> Runner:
        model = drm(n_x, (n_h1, n_h2), n_y, **ctx.model_options())
        schedule, x = model.schedule(("x",)), ctx.binary(batch, n_x)
        return Runner(_no_grad(lambda: schedule.mean_field({"x": x}, steps, validate=False, capture=capture)), steps)

    def matmul(ctx: Context) -> Runner:
        like = ctx.binary(1, 1)
        sweep = [
            product(batch, n_h2, n_h1, like, right_t=True),
            product(batch, n_h2, n_y, like),
            product(batch, n_h1, n_h2, like),
            product(batch, n_y, n_h2, like, right_t=True),
        ]
        return Runner(baselines.matmul_only([product(batch, n_x, n_h1, like)] + sweep * steps), steps)

    def bare(ctx: Context) -> Runner:
        weights, biases = _parameters(drm(n_x, (n_h1, n_h2), n_y, **ctx.model_options()))
        return Runner(baselines.bare_drm_mean_field(weights, biases, ctx.binary(batch, n_x), steps), steps)

    return {"engine": engine, **_captured_variant(ctx, engine), "matmul": matmul, "bare": bare}


# Training -------------------------------------------------------------------------


def _drm_batches(ctx: Context, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    n_x, _, _, n_y = ctx.sizes.drm
    rows = max(ctx.sizes.train_rows // batch, 1) * batch
    x, y = ctx.binary(rows, n_x), ctx.one_hot(rows, n_y)
    return [(x[start : start + batch], y[start : start + batch]) for start in range(0, rows, batch)]


def _drm_train(ctx: Context, batch: int) -> dict[str, Callable[[Context], Runner]]:
    n_x, n_h1, n_h2, n_y = ctx.sizes.drm
    steps = ctx.sizes.mean_field_steps

    def engine(ctx: Context) -> Runner:
        model = drm(n_x, (n_h1, n_h2), n_y, **ctx.model_options())
        config = TrainingConfig(batch_size=batch, learning_rate=LEARNING_RATE)
        trainer = Trainer(model, MeanFieldCD(steps), config, generator=ctx.generator())
        batches = [{"x": x, "y": y} for x, y in _drm_batches(ctx, batch)]
        return Runner(_cycle(trainer.fit_batch, batches), batch)

    def matmul(ctx: Context) -> Runner:
        like = ctx.binary(1, 1)

        def phase() -> list:
            clamped = [product(batch, n_x, n_h1, like), product(batch, n_y, n_h2, like, right_t=True)]
            sweep = [product(batch, n_h2, n_h1, like, right_t=True), product(batch, n_h1, n_h2, like)]
            gradient = [
                product(n_x, batch, n_h1, like, left_t=True),
                product(n_h1, batch, n_h2, like, left_t=True),
                product(n_h2, batch, n_y, like, left_t=True),
            ]
            return clamped + sweep * steps + gradient

        reconstruction = [product(batch, n_h1, n_x, like, right_t=True), product(batch, n_h2, n_y, like)]
        return Runner(baselines.matmul_only(phase() + reconstruction + phase()), batch)

    def bare(ctx: Context) -> Runner:
        weights, biases = _parameters(drm(n_x, (n_h1, n_h2), n_y, **ctx.model_options()))
        batches = _drm_batches(ctx, batch)
        return Runner(baselines.bare_drm_train(weights, biases, batches, steps, LEARNING_RATE, ctx.generator()), batch)

    return {"engine": engine, "matmul": matmul, "bare": bare}


def _rbm_train(ctx: Context) -> dict[str, Callable[[Context], Runner]]:
    n_visible, n_hidden = ctx.sizes.rbm
    batch = ctx.sizes.rbm_train_batch

    def batches(ctx: Context) -> list[torch.Tensor]:
        rows = max(ctx.sizes.train_rows // batch, 1) * batch
        data = ctx.binary(rows, n_visible)
        return [data[start : start + batch] for start in range(0, rows, batch)]

    def engine(ctx: Context) -> Runner:
        model = rbm(n_visible, n_hidden, **ctx.model_options())
        config = TrainingConfig(batch_size=batch, learning_rate=LEARNING_RATE)
        trainer = Trainer(model, PCD(k=1), config, generator=ctx.generator())
        return Runner(_cycle(trainer.fit_batch, [{"v": v} for v in batches(ctx)]), batch)

    def matmul(ctx: Context) -> Runner:
        like = ctx.binary(1, 1)
        # Data term h | v; chain v | h and h | v; the two gradient products.
        update = [
            product(batch, n_visible, n_hidden, like),
            product(batch, n_hidden, n_visible, like, right_t=True),
            product(batch, n_visible, n_hidden, like),
            product(n_visible, batch, n_hidden, like, left_t=True),
            product(n_visible, batch, n_hidden, like, left_t=True),
        ]
        return Runner(baselines.matmul_only(update), batch)

    def bare(ctx: Context) -> Runner:
        (weight,), (visible_bias, hidden_bias) = _parameters(rbm(n_visible, n_hidden, **ctx.model_options()))
        call = baselines.bare_rbm_train(weight, visible_bias, hidden_bias, batches(ctx), LEARNING_RATE, ctx.generator())
        return Runner(call, batch)

    return {
        "engine": engine,
        "matmul": matmul,
        "bare": bare,
        "sklearn": external.sklearn_rbm_train,
        "learnergy": external.learnergy_rbm_train,
    }


def _captured_variant(ctx: Context, engine: Callable[..., Runner]) -> dict[str, Callable[[Context], Runner]]:
    """Return ``{"captured": engine with capture=True}`` when the run requests CUDA graphs, else nothing."""
    if not ctx.capture:
        return {}

    def captured(ctx: Context) -> Runner:
        runner = engine(ctx, capture=True)
        try:
            runner.call()  # records the graph
        except (ValueError, RuntimeError) as error:
            raise Unavailable(f"CUDA-graph capture failed: {error}") from None
        return runner

    return {"captured": captured}


def _cycle(update: Callable[[object], object], batches: list) -> Callable[[], object]:
    position = [0]

    def call():
        batch = batches[position[0] % len(batches)]
        position[0] += 1
        return update(batch)

    return call


# Registry -------------------------------------------------------------------------


def build_tasks(ctx: Context) -> list[Task]:
    """Build the benchmark's tasks for the sizes of ``ctx``, in table order."""
    s = ctx.sizes
    n_x, n_h1, n_h2, n_y = s.drm
    drm_name = f"DRM {n_x}-{n_h1}-{n_h2}-{n_y}"
    tasks = [
        Task(
            "rbm_gibbs",
            f"block-Gibbs sweeps, RBM {s.rbm[0]}-{s.rbm[1]}, {s.chains} chains",
            "sweeps/s",
            _rbm_gibbs(ctx),
            {"layers": list(s.rbm), "chains": s.chains, "sweeps_per_call": s.sweeps_per_call},
        ),
        Task(
            "dbm_gibbs",
            f"block-Gibbs sweeps, DBM {'-'.join(map(str, s.dbm))}, {s.chains} chains",
            "sweeps/s",
            _dbm_gibbs(ctx),
            {"layers": list(s.dbm), "chains": s.chains, "sweeps_per_call": s.sweeps_per_call},
        ),
    ]
    for batch in s.mean_field_batches:
        tasks.append(
            Task(
                f"drm_mean_field_b{batch}",
                f"mean-field iterations, {drm_name}, x clamped, batch {batch}",
                "iterations/s",
                _drm_mean_field(ctx, batch),
                {"layers": list(s.drm), "batch": batch, "steps_per_call": s.mean_field_steps},
            )
        )
    for batch in s.train_batches:
        tasks.append(
            Task(
                f"drm_train_b{batch}",
                f"training, {drm_name}, mean-field CD (T={s.mean_field_steps}), mini-batch {batch}",
                "examples/s",
                _drm_train(ctx, batch),
                {"layers": list(s.drm), "batch": batch, "steps": s.mean_field_steps, "learning_rate": LEARNING_RATE},
            )
        )
    tasks.append(
        Task(
            f"rbm_train_b{s.rbm_train_batch}",
            f"training, RBM {s.rbm[0]}-{s.rbm[1]}, persistent CD-1, mini-batch {s.rbm_train_batch}",
            "examples/s",
            _rbm_train(ctx),
            {"layers": list(s.rbm), "batch": s.rbm_train_batch, "learning_rate": LEARNING_RATE},
        )
    )
    return tasks


def sizes_record(sizes: Sizes) -> dict:
    """Convert the sizes to a JSON-ready dict."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(sizes).items()}
