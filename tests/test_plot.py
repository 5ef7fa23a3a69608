import json
import sys

import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import ebmgraph  # noqa: E402
from ebmgraph import plot  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def multimodal_graph() -> ebmgraph.Graph:
    graph = ebmgraph.Graph()
    graph.add_layer("image", 4, visible=True)
    graph.add_layer("label", 3, "softmax", visible=True)
    graph.add_layer("h_image", 3)
    graph.add_layer("h_label", 2)
    graph.add_layer("joint", 2, "spin")
    for a, b in [("image", "h_image"), ("label", "h_label"), ("h_image", "joint"), ("h_label", "joint")]:
        graph.add_edge(a, b)
    return graph


def assert_png(path):
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_images_grid_written(tmp_path, generator):
    images = torch.rand(12, 784, generator=generator)
    figure = plot.plot_images(images, columns=5, path=tmp_path / "images.png")
    assert_png(tmp_path / "images.png")
    assert len(figure.axes) == 1
    drawn = figure.axes[0].get_images()
    assert len(drawn) == 1
    # 3 rows and 5 columns of 28-pixel images with 2 pixels of padding around each.
    assert drawn[0].get_array().shape == (3 * 30 + 2, 5 * 30 + 2)


def test_images_values_clipped(generator):
    images = torch.randn(4, 2, 3, generator=generator) * 5
    grid = plot.plot_images(images, columns=4).axes[0].get_images()[0].get_array()
    assert grid.min() >= 0.0
    assert grid.max() <= 1.0


def test_images_flat_needs_shape():
    with pytest.raises(ValueError, match="not a square image"):
        plot.plot_images(torch.rand(3, 10))
    figure = plot.plot_images(torch.rand(3, 10), image_shape=(2, 5))
    assert figure.axes[0].get_images()[0].get_array().shape == (1 * 4 + 2, 3 * 7 + 2)


def test_images_rejects_empty():
    with pytest.raises(ValueError, match="n >= 1"):
        plot.plot_images(torch.rand(0, 4))


def test_filters_columns_of_weight(tmp_path, generator):
    model = ebmgraph.drm(x=(4, 4), hidden=(6, 3), y=2, generator=generator, init_std=1.0)
    figure = plot.plot_filters(model, n_filters=5, columns=5, path=tmp_path / "filters.png")
    assert_png(tmp_path / "filters.png")
    grid = figure.axes[0].get_images()[0].get_array()
    assert grid.shape == (4 + 4, 5 * 6 + 2)

    # Filter 2 is column 2 of W_x-h1, scaled to span [0, 1].
    weight = model.weight("x", "h1").detach()[:, 2].reshape(4, 4).double()
    expected = (weight - weight.min()) / (weight.max() - weight.min())
    tile = torch.as_tensor(grid[2:6, 2 + 2 * 6 : 2 + 2 * 6 + 4])
    torch.testing.assert_close(tile, expected.float(), rtol=0, atol=1e-6)


def test_filters_named_layers(generator):
    model = ebmgraph.EnergyModel(multimodal_graph(), generator=generator)
    figure = plot.plot_filters(model, "image", "h_image", image_shape=(2, 2))
    assert "image-h_image: 3 of 3 units" in figure.axes[0].get_title()
    with pytest.raises(ValueError, match="no edge between layers"):
        plot.plot_filters(model, "image", "joint", image_shape=(2, 2))


def history(n_epochs, offset=0.0):
    return [
        {"epoch": epoch, "step": 10 * epoch, "reconstruction_error": 5.0 - epoch + offset, "validation_error": 0.5 / epoch}
        for epoch in range(1, n_epochs + 1)
    ]


def test_curves_from_metrics_file(tmp_path):
    metrics = {"results": [{"family": "drm", "history": history(4)}, {"family": "fine-drm", "history": []}]}
    (tmp_path / "drm-metrics.json").write_text(json.dumps(metrics))
    figure = plot.plot_training_curves(tmp_path / "drm-metrics.json", path=tmp_path / "curves.png")
    assert_png(tmp_path / "curves.png")
    assert len(figure.axes) == 2
    assert [axes.get_ylabel() for axes in figure.axes] == ["reconstruction error", "validation error"]
    lines = figure.axes[1].get_lines()
    assert len(lines) == 1
    assert list(lines[0].get_xdata()) == [1, 2, 3, 4]
    assert list(lines[0].get_ydata()) == [0.5, 0.25, 0.5 / 3, 0.125]


def test_curves_one_line_per_run():
    metrics = {"rows": [{"family": "drm", "history": history(3)}, {"family": "dbm", "history": history(3, 1.0)}]}
    figure = plot.plot_training_curves(metrics)
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["drm", "dbm"]


def test_curves_trainer_history_without_validation():
    records = [{"epoch": 1, "step": 5, "reconstruction_error": 3.0}, {"epoch": 2, "step": 10, "reconstruction_error": 2.0}]
    figure = plot.plot_training_curves(records)
    assert len(figure.axes) == 1


def test_curves_reject_missing_history():
    with pytest.raises(ValueError, match="no training history"):
        plot.plot_training_curves({"results": [{"family": "fine-drm", "history": []}]})
    with pytest.raises(ValueError, match="'results'"):
        plot.plot_training_curves({"seed": 0})


def test_graph_visible_distinguished(tmp_path):
    figure = plot.plot_graph(multimodal_graph(), path=tmp_path / "graph.png")
    assert_png(tmp_path / "graph.png")
    axes = figure.axes[0]
    visible, hidden = axes.collections[1:]
    assert len(visible.get_offsets()) == 2
    assert len(hidden.get_offsets()) == 3
    assert sorted(text.get_text().split("\n")[0] for text in axes.texts) == ["h_image", "h_label", "image", "joint", "label"]


def test_graph_rows_by_distance(generator):
    model = ebmgraph.drm(x=16, hidden=(5, 4), y=3, generator=generator)
    axes = plot.plot_graph(model, bottom=["x"]).axes[0]
    heights = {text.get_text().split("\n")[0]: text.get_position()[1] for text in axes.texts}
    assert heights["x"] < heights["h1"] < heights["h2"] < heights["y"]


def test_graph_rejects_unknown_bottom(generator):
    with pytest.raises(ValueError, match="unknown layer 'z'"):
        plot.plot_graph(ebmgraph.rbm(4, 3, generator=generator), bottom=["z"])


def test_missing_matplotlib_names_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"ebmgraph\[plot\]"):
        plot.plot_images(torch.rand(1, 4))
