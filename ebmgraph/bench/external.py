"""The same tasks in other libraries, where they are installed.

* scikit-learn's ``BernoulliRBM``: persistent CD-1 training of an RBM (NumPy, CPU).
* learnergy's ``RBM``: CD-1 training (``fit``) and Gibbs sampling.
* THRML: block Gibbs sampling of the RBM-shaped graph, as an Ising model on
  spins with every visible-hidden pair as an edge, in JAX.

Each factory raises :class:`~ebmgraph.bench.context.Unavailable` with the reason
when its library is missing or the variant is skipped, and the benchmark
reports the reason in place of a figure.
"""

from __future__ import annotations

import importlib
import logging

import torch

from ebmgraph.bench.context import Context, Runner, Unavailable

__all__ = ["sklearn_rbm_train", "learnergy_rbm_train", "learnergy_rbm_gibbs", "thrml_rbm_gibbs", "library_versions"]

LEARNING_RATE = 0.1

THRML_SWEEPS_PER_CALL = 2
"""Sweeps per THRML call; on 1,000 chains of the RBM 784-500 one sweep took seconds on the 2-core test machine."""

THRML_MAX_ROUNDS = 3


def _import(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise Unavailable(f"{package} is not installed ({error})") from None


def library_versions() -> dict[str, str]:
    """Installed versions of the compared libraries, for the records."""
    from importlib import metadata

    versions = {}
    for package in ("scikit-learn", "learnergy", "thrml", "jax"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _training_rows(ctx: Context, batch: int) -> torch.Tensor:
    rows = max(ctx.sizes.train_rows // batch, 1) * batch
    return ctx.binary(rows, ctx.sizes.rbm[0]).cpu()


def sklearn_rbm_train(ctx: Context) -> Runner:
    """Time one ``BernoulliRBM.fit`` epoch over ``train_rows`` rows per call (NumPy, CPU only)."""
    neural_network = _import("sklearn.neural_network", "scikit-learn")
    n_hidden = ctx.sizes.rbm[1]
    batch = ctx.sizes.rbm_train_batch
    data = _training_rows(ctx, batch).to(torch.float32).numpy()
    model = neural_network.BernoulliRBM(
        n_components=n_hidden, learning_rate=LEARNING_RATE, batch_size=batch, n_iter=1, random_state=ctx.seed
    )
    return Runner(lambda: model.fit(data), data.shape[0], device="cpu")


def _learnergy_rbm(ctx: Context, steps: int):
    module = _import("learnergy.models.bernoulli", "learnergy")
    # learnergy logs a line per model and epoch at INFO.
    logging.getLogger("learnergy").setLevel(logging.WARNING)
    n_visible, n_hidden = ctx.sizes.rbm
    # NOTE: learnergy draws its weights and samples from torch's global generator, which it advances.
    model = module.RBM(
        n_visible=n_visible,
        n_hidden=n_hidden,
        steps=steps,
        learning_rate=LEARNING_RATE,
        use_gpu=ctx.device.type == "cuda",
    )
    return model


def learnergy_rbm_train(ctx: Context) -> Runner:
    """Time one ``RBM.fit`` epoch (CD-1, learnergy's own loop) over ``train_rows`` rows per call."""
    model = _learnergy_rbm(ctx, steps=1)
    batch = ctx.sizes.rbm_train_batch
    data = _training_rows(ctx, batch)
    dataset = torch.utils.data.TensorDataset(data, torch.zeros(data.shape[0]))
    return Runner(lambda: model.fit(dataset, batch_size=batch, epochs=1), data.shape[0])


def learnergy_rbm_gibbs(ctx: Context) -> Runner:
    """Time ``RBM.gibbs_sampling`` on ``chains`` rows: half a sweep, then ``sweeps_per_call`` sweeps."""
    sweeps = ctx.sizes.sweeps_per_call
    model = _learnergy_rbm(ctx, steps=sweeps)
    visible = ctx.binary(ctx.sizes.chains, ctx.sizes.rbm[0])

    def call():
        with torch.no_grad():
            return model.gibbs_sampling(visible)

    return Runner(call, sweeps + 0.5)


def thrml_rbm_gibbs(ctx: Context) -> Runner:
    """Time block-Gibbs sweeps of the RBM-shaped Ising model on ``chains`` chains (``jax.vmap``, JAX on the CPU).

    Building the graph (one Python object per edge) and compiling are setup, not
    timed. Skipped in quick mode, where they alone take about a minute at full size.
    """
    if ctx.quick:
        raise Unavailable("skipped in --quick: building the THRML graph and compiling it take about a minute")
    jax = _import("jax", "jax")
    thrml = _import("thrml", "thrml")
    ising = _import("thrml.models.ising", "thrml")
    jnp = jax.numpy

    n_visible, n_hidden = ctx.sizes.rbm
    visible = [thrml.SpinNode() for _ in range(n_visible)]
    hidden = [thrml.SpinNode() for _ in range(n_hidden)]
    edges = [(a, b) for a in visible for b in hidden]
    key = jax.random.PRNGKey(ctx.seed)
    weights = 0.05 * jax.random.normal(key, (len(edges),))
    model = ising.IsingEBM(visible + hidden, edges, jnp.zeros(n_visible + n_hidden), weights, jnp.array(1.0))
    blocks = [thrml.Block(visible), thrml.Block(hidden)]
    program = ising.IsingSamplingProgram(model, blocks, [])
    schedule = thrml.SamplingSchedule(n_warmup=THRML_SWEEPS_PER_CALL, n_samples=1, steps_per_sample=1)
    start = ising.hinton_init(key, model, blocks, (ctx.sizes.chains,))
    keys = jax.random.split(key, ctx.sizes.chains)

    def chain(chain_key, v, h):
        return thrml.sample_states(chain_key, program, schedule, [v, h], [], [blocks[0]])

    run = jax.jit(jax.vmap(chain))

    def call():
        return jax.block_until_ready(run(keys, start[0], start[1]))

    return Runner(call, THRML_SWEEPS_PER_CALL, max_rounds=THRML_MAX_ROUNDS, device="cpu")
