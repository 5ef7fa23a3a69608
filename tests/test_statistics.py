import pytest
import torch

from ebmgraph.estimators import log_marginal, log_partition
from ebmgraph.learning import ascend_log_likelihood_, block_means, log_likelihood_gradient, sufficient_statistics
from helpers import reference_rbm

DATA = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
ALL_VISIBLE = torch.tensor([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)], dtype=torch.float64)


def data_state(model, v):
    return {"v": v, "h": model.conditional("h", {"v": v}).mean}


def exact_gradient(model):
    """Data term on DATA minus the model term summed over all 8 visible states."""
    positive = sufficient_statistics(model, data_state(model, DATA))
    p_v = log_marginal(model, {"v": ALL_VISIBLE}).exp()
    h = model.conditional("h", {"v": ALL_VISIBLE}).mean
    negative = {
        "biases.v": p_v @ ALL_VISIBLE,
        "biases.h": p_v @ h,
        "weights.v-h": torch.einsum("n,ni,nj->ij", p_v, ALL_VISIBLE, h),
    }
    return {name: positive[name] - negative[name] for name in positive}


def test_data_term_of_reference_data():
    model = reference_rbm()
    stats = sufficient_statistics(model, data_state(model, DATA))
    expected = [0.379465, 0.405189, 0.459917, 0.449131, 0.294333, 0.578732]
    assert stats["weights.v-h"].reshape(-1).tolist() == pytest.approx(expected, abs=1e-6)


def test_exact_gradient_of_reference_data():
    gradient = exact_gradient(reference_rbm())

    assert gradient["weights.v-h"].reshape(-1).tolist() == pytest.approx(
        [0.141433, 0.123296, 0.030362, -0.097794, -0.091477, -0.126032], abs=1e-6
    )
    assert gradient["biases.v"].tolist() == pytest.approx([0.273717, -0.001108, -0.124627], abs=1e-6)
    assert gradient["biases.h"].tolist() == pytest.approx([0.040903, -0.097292], abs=1e-6)


def test_exact_gradient_matches_finite_differences():
    model = reference_rbm()
    gradient = exact_gradient(model)
    step = 1e-6

    for name, parameter in model.named_parameters():
        flat = parameter.data.view(-1)
        for index in range(flat.numel()):
            original = flat[index].item()
            flat[index] = original + step
            upper = log_marginal(model, {"v": DATA}).mean().item()
            flat[index] = original - step
            lower = log_marginal(model, {"v": DATA}).mean().item()
            flat[index] = original
            numeric = (upper - lower) / (2 * step)
            assert gradient[name].reshape(-1)[index].item() == pytest.approx(numeric, abs=1e-8), f"{name}[{index}]"


def test_mean_log_likelihood_of_reference_data():
    model = reference_rbm()
    assert log_marginal(model, {"v": DATA}).mean().item() == pytest.approx(-2.047195, abs=1e-6)


def test_exact_negative_samples_give_exact_gradient():
    model = reference_rbm()
    generator = torch.Generator().manual_seed(0)
    p_v = log_marginal(model, {"v": ALL_VISIBLE}, log_z=log_partition(model)).exp()
    draws = ALL_VISIBLE[torch.multinomial(p_v, 100_000, replacement=True, generator=generator)]

    gradient = log_likelihood_gradient(model, data_state(model, DATA), data_state(model, draws))

    # Each entry's standard error over 1e5 draws is below 0.0016, so the tolerance of 0.01 is over 6 of them.
    expected = exact_gradient(model)["weights.v-h"]
    torch.testing.assert_close(gradient["weights.v-h"], expected, rtol=0, atol=0.01)


def test_block_means_pair_final_visible_with_its_hidden():
    model = reference_rbm()
    schedule = model.schedule()
    previous = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    current = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
    stale_hidden = model.conditional("h", {"v": previous}).mean
    chain = {"v": current, "h": torch.bernoulli(stale_hidden)}

    refreshed = block_means(schedule, chain)
    stats = sufficient_statistics(model, refreshed)["weights.v-h"].reshape(-1).tolist()

    assert schedule.blocks[0].layers == ("h",)
    assert stats == pytest.approx([0.0, 0.0, 0.562177, 0.934011, 0.562177, 0.934011], abs=1e-6)


def test_ascend_log_likelihood_adds_rate_times_gradient():
    model = reference_rbm()
    generator = torch.Generator().manual_seed(0)
    # A model term of another batch size, as persistent chains give.
    negative_v = (torch.rand(5, 3, generator=generator, dtype=torch.float64) < 0.5).double()
    positive, negative = data_state(model, DATA), data_state(model, negative_v)
    gradient = log_likelihood_gradient(model, positive, negative)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    with torch.no_grad():
        ascend_log_likelihood_(model, positive, negative, weight_rate=0.3, bias_rate=0.7)

    for name, parameter in model.named_parameters():
        rate = 0.3 if name.startswith("weights.") else 0.7
        torch.testing.assert_close(parameter.detach(), before[name] + rate * gradient[name], rtol=0, atol=1e-15, msg=name)
