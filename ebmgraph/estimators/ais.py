r"""Annealed importance sampling (AIS) of the log partition function of any declared graph.

AIS moves a batch of independent runs from a base model with a known partition
function to the model through intermediate distributions at inverse temperatures
``0 = beta_0 < beta_1 < ... < beta_M = 1`` (R. M. Neal, "Annealed importance
sampling", Statistics and Computing 11, 2001; for RBMs, R. Salakhutdinov and
I. Murray, "On the quantitative analysis of deep belief networks", ICML 2008). The intermediate models interpolate the
parameters:

.. math::

    b_l(\beta) = (1 - \beta)\, b^A_l + \beta\, b_l, \qquad W_{lm}(\beta) = \beta\, W_{lm},

where the base model A has biases ``b^A`` and no weights. Since the energy is linear
in the parameters, ``E_beta = (1 - beta) E_A + beta E`` and
``p_beta ∝ p_A^(1 - beta) p^beta``. The input of a layer at ``beta`` is
``lerp(b^A_l, input_l, beta)``, the model's input blended with the base bias.

One block of pairwise non-adjacent layers is summed out analytically: the runs
move on the other layers only, and the weights use the free energy ``F_beta`` of the
intermediate model. For a bipartite layer graph (RBM, DBM, DRM) that block is one
of the two sides. Any other graph sums out one block of its compiled schedule.
Each run accumulates

.. math::

    \log w = \sum_{k=1}^{M} \big(F_{\beta_{k-1}}(x_k) - F_{\beta_k}(x_k)\big),

where ``x_1`` is drawn from the base model and ``x_{k+1}`` by one block-Gibbs sweep at
``beta_k`` from ``x_k``. Then ``Z / Z_A`` is estimated by the mean of ``w``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from ebmgraph.model import EnergyModel, State
from ebmgraph.units import Bernoulli, Gaussian, Softmax, Spin, UnitFamily

__all__ = ["AISResult", "ais_log_partition", "default_betas", "fit_base_biases"]

logger = logging.getLogger(__name__)

DEFAULT_SEGMENTS = ((0.5, 500), (0.9, 4000), (1.0, 10000))
"""Default inverse-temperature schedule: ``(end, steps)`` per linear segment, 14,500 steps in all."""


@dataclass(frozen=True)
class AISResult:
    """Outcome of :func:`ais_log_partition`.

    Attributes
    ----------
    log_z : float
        The estimate ``log Z_A + log(mean(w))``, computed by log-sum-exp.
    log_z_low, log_z_high : float
        ``log Z_A + log(mean(w) -/+ 3 std(w) / sqrt(n_runs))``: an interval of three
        standard errors of the mean weight, taken to log space. ``log_z_low`` is
        ``-inf`` when the lower end is not positive, and both are infinite for a
        single run. The interval reflects only the spread of the weights: when
        the runs miss a mode of the model, all weights are too small together,
        and the interval does not show it.
    log_weights : Tensor, shape ``(n_runs,)``, float64
        ``log w`` of every run.
    log_z_base : float
        ``log Z_A`` of the base model.
    betas : Tensor, shape ``(M + 1,)``, float64
        The inverse temperatures used.
    summed_out : tuple of str
        Layers summed out analytically along the way.
    """

    log_z: float
    log_z_low: float
    log_z_high: float
    log_weights: torch.Tensor
    log_z_base: float
    betas: torch.Tensor
    summed_out: tuple[str, ...]

    @property
    def n_runs(self) -> int:
        return self.log_weights.shape[0]

    @property
    def effective_sample_size(self) -> float:
        """``(sum w)^2 / sum w^2``: between 1 (one run dominates) and ``n_runs`` (equal weights)."""
        log_w = self.log_weights
        return math.exp(2 * torch.logsumexp(log_w, 0).item() - torch.logsumexp(2 * log_w, 0).item())


def default_betas(segments: Sequence[tuple[float, int]] = DEFAULT_SEGMENTS) -> torch.Tensor:
    """Build a piecewise-linear schedule of inverse temperatures from 0 to 1.

    Parameters
    ----------
    segments : sequence of (end, steps)
        Each segment runs linearly from the previous end (0 at first) to ``end`` in
        ``steps`` equal steps. The last end must be 1. The default puts 500 steps in
        ``[0, 0.5]``, 4,000 in ``[0.5, 0.9]`` and 10,000 in ``[0.9, 1]``, so the steps
        are finest where the model's own weights take over.

    Returns
    -------
    Tensor, shape ``(1 + total steps,)``, float64
    """
    start = 0.0
    pieces = [torch.zeros(1, dtype=torch.float64)]
    for index, (end, steps) in enumerate(segments):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"segments[{index}]: steps must be a positive int, got {steps!r}")
        if not start < end <= 1.0:
            raise ValueError(f"segments[{index}]: end must be in ({start}, 1], got {end!r}")
        pieces.append(torch.linspace(start, end, steps + 1, dtype=torch.float64)[1:])
        start = end
    if start != 1.0:
        raise ValueError(f"the last segment must end at 1, got {start}")
    return torch.cat(pieces)


# Base model ---------------------------------------------------------------------


def fit_base_biases(model: EnergyModel, data: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fit the biases of a weightless base model to the data's marginals, one visible layer at a time.

    Each unit's base bias is the input whose conditional mean is the unit's mean
    in ``data``. Bernoulli and spin means are smoothed with one pseudo-count per
    state, softmax frequencies likewise, so that units constant in the data get a
    finite bias. Gaussian biases are the data means. Layers absent from ``data``,
    hidden layers included, get no entry, and :func:`ais_log_partition` gives them
    bias zero. Binary hidden units of the base model are then uniform, and the
    input of a hidden layer along the path is ``beta`` times its model input.

    Parameters
    ----------
    model : EnergyModel
    data : dict of str to Tensor, each ``(batch, size)``
        Samples or means of some visible layers.

    Returns
    -------
    dict of str to Tensor, each ``(size,)``, in the model's dtype
    """
    data = _check_data(model, data)
    biases = {}
    for name, values in data.items():
        units = model.graph[name].units
        biases[name] = _bias_for_mean(units, values, layer=name)
    return biases


def _bias_for_mean(units: UnitFamily, values: torch.Tensor, *, layer: str) -> torch.Tensor:
    n = values.shape[0]
    mean = values.mean(dim=0)
    if isinstance(units, Bernoulli):
        p = (n * mean + 1) / (n + 2)
        return torch.logit(p)
    if isinstance(units, Spin):
        # p(s = +1) = sigmoid(2 b), so b = logit(p) / 2.
        p = (n * (1 + mean) / 2 + 1) / (n + 2)
        return torch.logit(p) / 2
    if isinstance(units, Softmax):
        p = (n * mean + 1) / (n + mean.shape[0])
        return torch.log(p)
    if isinstance(units, Gaussian):
        return mean
    raise TypeError(
        f"layer {layer!r}: cannot fit a base bias for unit family {units.name!r}; "
        "pass base= a dict of base biases per layer"
    )


def _check_data(model: EnergyModel, data: Mapping[str, torch.Tensor]) -> State:
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping from visible layer name to tensor, got {type(data).__name__}")
    if not data:
        raise ValueError("data is empty; give at least one visible layer")
    for name in data:
        if name in model.graph and not model.graph[name].visible:
            raise ValueError(
                f"data gives layer {name!r}, which is hidden; base biases are fitted to visible layers "
                f"only ({list(model.graph.visible)})"
            )
    data = model.check_state(data)
    batch = next(iter(data.values())).shape[0]
    if batch == 0:
        raise ValueError("data has no rows; base biases need at least one row")
    return data


def _resolve_base(model: EnergyModel, base, data) -> dict[str, torch.Tensor]:
    """Base biases of every layer, detached, in the model's dtype and device."""
    if data is not None and not (isinstance(base, str) and base == "data"):
        raise ValueError(f"data is used only to fit the base model with base='data', but base is {base!r}; drop one of them")
    if isinstance(base, str):
        if base != "data":
            raise ValueError(f"base must be 'data', None or a dict of biases per layer, got {base!r}")
        if data is None:
            raise ValueError("base='data' fits the base model to data, but data is None; pass data or base=None")
        given = fit_base_biases(model, data)
    elif base is None:
        given = {}
    elif isinstance(base, Mapping):
        given = dict(base)
    else:
        raise TypeError(f"base must be 'data', None or a dict of biases per layer, got {type(base).__name__}")

    biases = {}
    for layer in model.graph.layers:
        value = given.pop(layer.name, None)
        if value is None:
            biases[layer.name] = torch.zeros(layer.size, dtype=model.dtype, device=model.device)
            continue
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (layer.size,):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"base bias of layer {layer.name!r} must be a tensor of shape ({layer.size},), got {shape}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"base bias of layer {layer.name!r} contains NaN or infinite values")
        biases[layer.name] = value.detach().to(dtype=model.dtype, device=model.device)
    if given:
        raise ValueError(f"base gives unknown layer {next(iter(given))!r}; declared layers are {list(model.graph.layer_names)}")
    return biases


# Arguments ----------------------------------------------------------------------


def _check_betas(betas) -> torch.Tensor:
    betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().clone()
    if betas.dim() != 1 or betas.shape[0] < 2:
        raise ValueError(f"betas must be a 1-D sequence of at least 2 inverse temperatures, got shape {tuple(betas.shape)}")
    bad = (~torch.isfinite(betas)).nonzero()
    if bad.numel():
        index = int(bad[0, 0])
        raise ValueError(f"betas must be finite, got betas[{index}] = {betas[index].item()}")
    if betas[0].item() != 0.0:
        raise ValueError(f"betas must start at 0 (the base model), got betas[0] = {betas[0].item()}")
    if betas[-1].item() != 1.0:
        raise ValueError(f"betas must end at 1 (the model), got betas[-1] = {betas[-1].item()}")
    steps = betas[1:] - betas[:-1]
    bad = (steps <= 0).nonzero()
    if bad.numel():
        index = int(bad[0, 0]) + 1
        raise ValueError(
            f"betas must be strictly increasing, but betas[{index}] = {betas[index].item()} "
            f"follows betas[{index - 1}] = {betas[index - 1].item()}"
        )
    return betas


def _check_summed_out(model: EnergyModel, summed_out) -> tuple[str, ...]:
    graph = model.graph
    if isinstance(summed_out, str) and summed_out == "auto":
        blocks = model.schedule(()).blocks
        largest = max(blocks, key=lambda block: sum(graph[name].size for name in block.layers))
        return largest.layers
    if isinstance(summed_out, str):
        summed_out = (summed_out,)
    names = tuple(summed_out)
    for name in names:
        if name not in graph:
            raise ValueError(f"summed_out names unknown layer {name!r}; declared layers are {list(graph.layer_names)}")
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if graph.nx.has_edge(a, b):
                raise ValueError(
                    f"summed_out layers {a!r} and {b!r} are joined by an edge; only pairwise non-adjacent "
                    "layers can be summed out together"
                )
    if len(set(names)) == len(graph.layer_names):
        raise ValueError("summed_out lists every layer; at least one layer must be sampled")
    return tuple(name for name in graph.layer_names if name in names)


def _check_generator(model: EnergyModel, generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if torch.device(generator.device).type != model.device.type:
        raise ValueError(f"generator is on {generator.device} but the model is on {model.device}; create it there")


# The sampler --------------------------------------------------------------------


class _Path:
    """The annealing path of one model and base: inputs, weight terms and sweeps at any ``beta``.

    ``kept`` lists the sampled layers, grouped into blocks of pairwise non-adjacent
    layers. ``summed`` is the block summed out analytically.
    """

    def __init__(self, model: EnergyModel, base: dict[str, torch.Tensor], summed: tuple[str, ...]):
        graph = model.graph
        self.model = model
        self.summed = summed
        self.kept_blocks = model.schedule(summed).blocks
        self.kept = tuple(name for block in self.kept_blocks for name in block.layers)
        self.units = {name: graph[name].units for name in graph.layer_names}
        self.base = base
        self.base64 = {name: bias.double() for name, bias in base.items()}
        self.bias = {name: model.biases[name].detach() for name in graph.layer_names}
        self.bias_shift = {name: self.bias[name] - base[name] for name in self.kept}
        self.inputs = {
            name: tuple((m, model.weight(m, name).detach()) for m in graph.neighbours(name)) for name in graph.layer_names
        }
        self.kept_edges = tuple(
            (a, b, model.weights[model.edge_key(a, b)].detach()) for a, b in graph.edges if a in self.kept and b in self.kept
        )

    def log_z_base(self) -> float:
        total = 0.0
        for name, bias in self.base64.items():
            total += self.units[name].log_partition(bias.unsqueeze(0)).item()
        return total

    def model_input(self, name: str, state: State) -> torch.Tensor:
        """Input of layer ``name`` under the model (``beta = 1``), shape ``(n_runs, size)``."""
        total = self.bias[name]
        for neighbour, weight in self.inputs[name]:
            total = torch.addmm(total, self.units[neighbour].statistic(state[neighbour]), weight)
        return total

    def start(self, n_runs: int, generator: torch.Generator) -> State:
        """Draw the kept layers from the base model."""
        state = {}
        for name in self.kept:
            bias = self.base[name].expand(n_runs, -1)
            state[name] = self.units[name].sample(bias, generator)
        return state

    def weight_terms(self, state: State):
        """Compute the parts of ``-F_beta(state)`` that do not depend on ``beta``.

        Returns ``linear``, shape ``(n_runs,)`` float64, the difference of the
        kept layers' linear energy terms between the model and the base, and the
        model's inputs of the summed-out layers.
        """
        linear = 0.0
        statistics = {name: self.units[name].statistic(state[name]) for name in self.kept}
        for name in self.kept:
            linear = linear + statistics[name] @ self.bias_shift[name]
        for a, b, weight in self.kept_edges:
            linear = linear + ((statistics[a] @ weight) * statistics[b]).sum(dim=-1)
        summed_inputs = {name: self.model_input(name, state) for name in self.summed}
        return torch.as_tensor(linear, dtype=torch.float64), summed_inputs

    def log_weight_step(self, linear: torch.Tensor, summed_inputs: State, previous: float, beta: float) -> torch.Tensor:
        """Return ``F_previous(x) - F_beta(x)`` per run, in float64."""
        step = (beta - previous) * linear
        for name, layer_input in summed_inputs.items():
            base = self.base64[name]
            layer_input = layer_input.double()
            units = self.units[name]
            step = step + units.log_partition(torch.lerp(base, layer_input, beta))
            step = step - units.log_partition(torch.lerp(base, layer_input, previous))
        return step

    def sweep(self, state: State, summed_inputs: State, beta: float, generator: torch.Generator) -> None:
        """Run one block-Gibbs sweep at ``beta``: the summed-out block, then the kept blocks in schedule order."""
        for name, layer_input in summed_inputs.items():
            state[name] = self.units[name].sample(torch.lerp(self.base[name], layer_input, beta), generator)
        for block in self.kept_blocks:
            for name in block.layers:
                layer_input = torch.lerp(self.base[name], self.model_input(name, state), beta)
                state[name] = self.units[name].sample(layer_input, generator)
        for name in self.summed:
            del state[name]


@torch.no_grad()
def ais_log_partition(
    model: EnergyModel,
    data: Mapping[str, torch.Tensor] | None = None,
    *,
    generator: torch.Generator,
    base: str | Mapping[str, torch.Tensor] | None = "data",
    betas: Sequence[float] | torch.Tensor | None = None,
    n_runs: int = 100,
    summed_out: str | Iterable[str] = "auto",
    progress: bool = False,
) -> AISResult:
    """Estimate ``log Z`` of ``model`` by annealed importance sampling.

    Parameters
    ----------
    model : EnergyModel
        Any declared graph.
    data : dict of str to Tensor, each ``(batch, size)``, optional
        Samples of visible layers (usually training data), used only to fit the
        base model when ``base="data"``.
    generator : torch.Generator
        Source of every random draw, on the model's device.
    base : "data", None or dict of str to Tensor
        The base model has no weights and these biases. ``"data"`` (default) fits
        the visible biases to ``data`` (:func:`fit_base_biases`) and sets hidden
        biases to zero. ``None`` sets every bias to zero (uniform for discrete
        units). A dict gives biases of shape ``(size,)`` per layer, zero for
        layers it omits.
    betas : 1-D sequence of float, optional
        Inverse temperatures, strictly increasing from exactly 0 to exactly 1.
        Default :func:`default_betas` (14,500 steps). Each step costs one sweep.
    n_runs : int
        Number of independent runs, at least 1.
    summed_out : "auto" or iterable of str
        Pairwise non-adjacent layers summed out analytically. ``"auto"`` takes
        the block of the compiled schedule (no layer clamped) with the most
        units: one side of a bipartite layer graph. ``()`` samples every layer.
    progress : bool
        Show a tqdm progress bar over the temperatures.

    Returns
    -------
    AISResult
        The estimate, its interval and the log weights.

    Notes
    -----
    Cost: ``len(betas) - 1`` sweeps of ``n_runs`` chains. Log weights are
    accumulated in float64 whatever the model's dtype, and the free energy at
    neighbouring temperatures is differenced in float64, so float32 models lose
    no accuracy to cancellation. The matrix products stay in the model's dtype.
    AIS estimates of ``log Z`` are biased low for few runs or temperatures
    (Jensen's inequality on ``log mean w``), so a log-likelihood computed with
    them tends to be too high.
    """
    if isinstance(n_runs, bool) or not isinstance(n_runs, int) or n_runs < 1:
        raise ValueError(f"n_runs must be an int >= 1, got {n_runs!r}")
    _check_generator(model, generator)
    betas = default_betas() if betas is None else _check_betas(betas)
    summed = _check_summed_out(model, summed_out)
    path = _Path(model, _resolve_base(model, base, data), summed)

    schedule = betas.tolist()
    log_w = torch.zeros(n_runs, dtype=torch.float64, device=model.device)
    state = path.start(n_runs, generator)
    steps = tqdm(range(1, len(schedule)), desc="AIS", unit="step", disable=not progress)
    for k in steps:
        linear, summed_inputs = path.weight_terms(state)
        log_w += path.log_weight_step(linear, summed_inputs, schedule[k - 1], schedule[k])
        if k < len(schedule) - 1:
            path.sweep(state, summed_inputs, schedule[k], generator)

    result = _summarise(log_w.cpu(), path.log_z_base(), betas, summed)
    logger.info(
        "AIS log Z = %.4f in [%.4f, %.4f] from %d runs over %d temperatures (effective sample size %.1f)",
        result.log_z, result.log_z_low, result.log_z_high, n_runs, len(schedule), result.effective_sample_size,
    )
    return result


def _summarise(log_w: torch.Tensor, log_z_base: float, betas: torch.Tensor, summed: tuple[str, ...]) -> AISResult:
    """Turn log weights into the estimate and its three-standard-error interval, without overflow."""
    n = log_w.shape[0]
    shift = log_w.max().item()
    if not math.isfinite(shift):
        raise FloatingPointError(f"AIS log weights are not finite (max {shift}); the model's parameters may be NaN or infinite")
    scaled = torch.exp(log_w - shift)
    mean = scaled.mean().item()
    error = 3 * scaled.std().item() / math.sqrt(n) if n > 1 else math.inf
    low = math.log(mean - error) if mean - error > 0 else -math.inf
    high = math.log(mean + error)
    offset = log_z_base + shift
    return AISResult(
        log_z=offset + math.log(mean),
        log_z_low=offset + low,
        log_z_high=offset + high,
        log_weights=log_w,
        log_z_base=log_z_base,
        betas=betas,
        summed_out=summed,
    )
