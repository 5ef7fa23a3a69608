"""CUDA-graph replay of schedule calls; every test but the first needs a CUDA device."""

from __future__ import annotations

import pytest
import torch

from ebmgraph import drm, rbm


def cuda_drm():
    model = drm(12, (8, 6), 3, generator=torch.Generator().manual_seed(0), init_std=0.5)
    return model.to("cuda")


def test_capture_rejects_cpu_model():
    model = rbm(4, 3)
    with pytest.raises(ValueError, match="needs a model on a CUDA device; this model is on cpu"):
        model.schedule(("v",)).mean_field({"v": torch.ones(2, 4)}, 3, capture=True)
    with pytest.raises(ValueError, match="needs a model on a CUDA device"):
        model.schedule().gibbs({"v": torch.ones(2, 4)}, 1, capture=True)


@pytest.mark.cuda
def test_captured_mean_field_matches_eager():
    model = cuda_drm()
    schedule = model.schedule(("x",))
    x = torch.bernoulli(torch.full((5, 12), 0.5, device="cuda"))

    eager = schedule.mean_field({"x": x}, 10)
    first = schedule.mean_field({"x": x}, 10, capture=True)
    replayed = schedule.mean_field({"x": x}, 10, capture=True)

    for name, tensor in eager.items():
        torch.testing.assert_close(first[name], tensor)
        torch.testing.assert_close(replayed[name], tensor)


@pytest.mark.cuda
def test_captured_mean_field_sees_parameter_updates():
    model = cuda_drm()
    schedule = model.schedule(("x",))
    x = torch.bernoulli(torch.full((5, 12), 0.5, device="cuda"))
    schedule.mean_field({"x": x}, 10, capture=True)

    with torch.no_grad():
        model.weights["h2-y"].mul_(3.0)
    replayed = schedule.mean_field({"x": x}, 10, capture=True)

    torch.testing.assert_close(replayed["y"], schedule.mean_field({"x": x}, 10)["y"])


@pytest.mark.cuda
def test_captured_gibbs_hidden_frequencies_match_conditional():
    model = rbm(6, 4, generator=torch.Generator().manual_seed(1), init_std=1.0).to("cuda")
    schedule = model.schedule(("v",))
    v = torch.bernoulli(torch.full((2000, 6), 0.5, device="cuda"))
    generator = torch.Generator("cuda").manual_seed(2)

    draws = torch.stack([schedule.gibbs({"v": v}, 1, generator=generator, capture=True)["h"] for _ in range(50)])

    # 1e5 draws per unit: the standard error of each frequency is below 0.0016; the tolerance is 5 of them.
    expected = model.conditional("h", {"v": v}).mean
    assert (draws.mean(dim=0) - expected).abs().mean().item() < 0.008


@pytest.mark.cuda
def test_captured_gibbs_replays_draw_new_numbers():
    model = rbm(6, 4, generator=torch.Generator().manual_seed(3)).to("cuda")
    schedule = model.schedule(("v",))
    v = torch.bernoulli(torch.full((500, 6), 0.5, device="cuda"))
    generator = torch.Generator("cuda").manual_seed(4)

    first = schedule.gibbs({"v": v}, 2, generator=generator, capture=True)["h"]
    second = schedule.gibbs({"v": v}, 2, generator=generator, capture=True)["h"]

    assert not torch.equal(first, second)
    assert bool(((second == 0) | (second == 1)).all())


class EagerCall:
    """Stands in for CapturedCall on the CPU: runs the call without a graph and counts recordings."""

    recorded = 0

    def __init__(self, run, state, generator):
        EagerCall.recorded += 1
        self.run = run

    def __call__(self, state):
        return self.run(dict(state))


@pytest.fixture
def eager_capture(monkeypatch):
    import ebmgraph.schedule

    EagerCall.recorded = 0
    monkeypatch.setattr(ebmgraph.schedule, "check_capturable", lambda schedule, state: None)
    monkeypatch.setattr(ebmgraph.schedule, "CapturedCall", EagerCall)
    return EagerCall


def test_capture_records_once_per_layout(eager_capture):
    model = drm(12, (8, 6), 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    schedule = model.schedule(("x",))
    x = torch.bernoulli(torch.full((5, 12), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(6))

    with torch.no_grad():
        first = schedule.mean_field({"x": x}, 4, capture=True)
        second = schedule.mean_field({"x": x[:3]}, 4, capture=True)
        again = schedule.mean_field({"x": x}, 4, capture=True)
        damped = schedule.mean_field({"x": x}, 4, damping=0.5, capture=True)
        eager = schedule.mean_field({"x": x}, 4)

    assert eager_capture.recorded == 3
    for name, tensor in eager.items():
        assert torch.equal(first[name], tensor), name
        assert torch.equal(again[name], tensor), name
    assert second["y"].shape == (3, 3)
    assert not torch.equal(damped["y"], eager["y"])


def test_capture_passes_gibbs_options(eager_capture):
    model = rbm(6, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    schedule = model.schedule()
    v = torch.bernoulli(torch.full((50, 6), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(8))

    with torch.no_grad():
        captured, means = schedule.gibbs({"v": v}, 3, generator=torch.Generator().manual_seed(9), return_means=True, capture=True)
        eager, eager_means = schedule.gibbs({"v": v}, 3, generator=torch.Generator().manual_seed(9), return_means=True)

    for name, tensor in eager.items():
        assert torch.equal(captured[name], tensor), name
    for name, tensor in eager_means.items():
        assert torch.equal(means[name], tensor), name
