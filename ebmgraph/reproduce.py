"""Rerun the DRM paper's experiments and tabulate them beside its published values.

Nakashika, Takiguchi and Ariki, "Modeling deep bidirectional relationships for
image classification and generation":

* :func:`table1`: DRM test error for the first hidden layer sizes {200, 300, 400,
  500} by the second {50, 100, 200, 300, 400, 500} (the paper's Table 1);
* :func:`figure4`: the seven families of :mod:`ebmgraph.experiments` for hidden
  layers [400, 200] and [400, 400] (the paper's Figure 4);
* :func:`figure5`: one image generated from each one-hot label, beside the
  per-label mean images (the paper's Figure 5).

Each run appends one row to a CSV file as soon as it finishes, and a rerun skips
the rows already there, so an interrupted reproduction resumes where it stopped.
The protocol and data settings of those rows are kept beside the CSV file in
``EXPERIMENT-settings.json``, and a rerun with other settings is rejected, so one
table never mixes rows of two protocols.
A pair of hidden sizes and seed interrupted between two families reruns only the
missing families, each from the generator state it would have had
(:func:`~ebmgraph.experiments.run_families`), so the resumed rows equal those of
an uninterrupted run.
After every row the Markdown table is rewritten from the CSV file.

Only the values quoted in the paper's text are known to this library (see
:data:`PAPER`); the other cells of the paper column read "n/a".
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ebmgraph._io import write_atomic
from ebmgraph.checkpoint import save_checkpoint
from ebmgraph.experiments import FAMILIES, ClassificationData, Protocol, _finetuned, run_families, train_drm
from ebmgraph.images import save_image_grid

__all__ = ["PAPER", "TABLE1_FIRST", "TABLE1_SECOND", "FIGURE4_HIDDEN", "table1", "figure4", "figure5"]

logger = logging.getLogger(__name__)

TABLE1_FIRST = (200, 300, 400, 500)
TABLE1_SECOND = (50, 100, 200, 300, 400, 500)
FIGURE4_HIDDEN = ((400, 200), (400, 400))

#: Test errors quoted in the DRM paper (Nakashika et al.), keyed by ``(hidden sizes, family)``.
PAPER = {
    ((400, 400), "drm"): 0.0394,
    ((400, 400), "fine-dbn"): 0.0371,
    ((400, 400), "fine-dbm"): 0.0416,
}

FIELDS = ("experiment", "family", "hidden", "seed", "validation_error", "test_error", "paper_test_error", "seconds")

DataLoader = Callable[[int], ClassificationData]


def _write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda handle: handle.write(text.encode()))


def _hidden_text(hidden: Sequence[int]) -> str:
    return "x".join(str(size) for size in hidden)


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and set(rows[0]) != set(FIELDS):
        raise ValueError(f"{path} has columns {sorted(rows[0])}, expected {sorted(FIELDS)}; pass another --output folder")
    return rows


def _append_row(path: Path, row: dict) -> None:
    rows = _read_rows(path) + [{key: row[key] for key in FIELDS}]
    lines = [",".join(FIELDS)] + [",".join(str(r[key]) for key in FIELDS) for r in rows]
    _write_text(path, "\n".join(lines) + "\n")


def _done(rows: list[dict], family: str, hidden: Sequence[int], seed: int) -> bool:
    return any(r["family"] == family and r["hidden"] == _hidden_text(hidden) and int(r["seed"]) == seed for r in rows)


def _percent(values: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f} (n={len(values)})"


def _errors(rows: list[dict], family: str, hidden: str, column: str = "test_error") -> list[float]:
    return [float(r[column]) for r in rows if r["family"] == family and r["hidden"] == hidden and r[column] not in ("", "None")]


def _paper(hidden: Sequence[int], family: str) -> str:
    value = PAPER.get((tuple(hidden), family))
    return "n/a" if value is None else f"{100 * value:.2f}"


def _header(title: str, protocol: Protocol, command: str, *, errors: bool = True) -> list[str]:
    settings = ", ".join(f"{key}={value}" for key, value in asdict(protocol).items() if key != "hidden")
    lines = [f"# {title}", "", f"Command: `{command}`", "", f"Protocol: {settings}.", ""]
    if errors:
        lines += ["Test errors in percent; mean ± sample standard deviation over seeds where there is more than one.", ""]
    return lines


def _check_settings(output: Path, experiment: str, protocol: Protocol, settings: Mapping | None) -> None:
    """Record the settings of ``experiment``'s rows in ``output``, or reject a rerun whose settings differ.

    The settings are the protocol without ``hidden`` (each row names its own) plus
    ``settings``, such as the sizes of the training and validation subsets.

    Raises
    ------
    ValueError
        Naming the first setting whose value differs from the one the existing rows were run with.
    """
    identity = {key: value for key, value in asdict(protocol).items() if key != "hidden"}
    identity.update(settings or {})
    identity = json.loads(json.dumps(identity, default=list))
    path = output / f"{experiment}-settings.json"
    if path.exists():
        saved = json.loads(path.read_text())
        for key in sorted(set(saved) | set(identity)):
            if saved.get(key) != identity.get(key):
                raise ValueError(
                    f"{output} contains {experiment} rows run with {key}={saved.get(key)!r}, but this run has "
                    f"{key}={identity.get(key)!r}; pass the options of that run, or another output folder"
                )
        return
    if _read_rows(output / f"{experiment}.csv"):
        # NOTE: folders written before the settings file existed cannot be checked; their rows are resumed as they are.
        logger.warning("%s has %s rows but no %s, so their settings cannot be compared with this run's", output, experiment, path.name)
        return
    _write_text(path, json.dumps(identity, indent=2, sort_keys=True) + "\n")


def _runs(cells: Iterable[Sequence[int]], seeds: Sequence[int], more_seeds: Sequence[int], repeated: Sequence[int]):
    """List the ``(hidden, seed)`` pairs to run: every cell with ``seeds``, then the ``repeated`` cell with ``more_seeds``."""
    cells = [tuple(cell) for cell in cells]
    runs = [(cell, seed) for seed in seeds for cell in cells]
    runs += [(cell, seed) for seed in more_seeds for cell in cells if cell == tuple(repeated)]
    return runs


def table1(
    load: DataLoader,
    protocol: Protocol,
    output: str | Path,
    *,
    seeds: Sequence[int] = (0,),
    more_seeds: Sequence[int] = (),
    first: Sequence[int] = TABLE1_FIRST,
    second: Sequence[int] = TABLE1_SECOND,
    settings: Mapping | None = None,
    command: str = "",
    progress: bool = False,
) -> Path:
    """DRM test error over a grid of hidden layer sizes; writes ``table1.csv`` and ``table1.md``.

    Parameters
    ----------
    load : callable
        ``load(seed)`` returns the :class:`ClassificationData` of that seed (its
        random training subset and validation split).
    protocol : Protocol
        Shared settings; its ``hidden`` is replaced by each cell's sizes.
    output : path
        Folder of the result files; rows already in its ``table1.csv`` are kept
        and not rerun. ``table1-settings.json`` records their protocol and
        ``settings``, and a rerun with other values raises ``ValueError``.
    seeds : sequence of int
        Seeds run for every cell.
    more_seeds : sequence of int
        Further seeds for the [400, 400] cell (the paper's headline cell).
    first, second : sequence of int
        Sizes of h1 (table rows) and h2 (table columns).
    settings : mapping, optional
        JSON-ready facts that ``load`` depends on, such as the subset sizes,
        checked like the protocol.

    Returns
    -------
    Path
        The Markdown table.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    _check_settings(output, "table1", protocol, settings)
    path = output / "table1.csv"
    cells = [(a, b) for a in first for b in second]
    for hidden, seed in _runs(cells, seeds, more_seeds, (400, 400)):
        if _done(_read_rows(path), "drm", hidden, seed):
            continue
        _run_pair(("drm",), "table1", hidden, seed, load, protocol, path, progress)
        _write_table1(output, protocol, command, first, second)
    return _write_table1(output, protocol, command, first, second)


def _write_table1(output: Path, protocol: Protocol, command: str, first, second) -> Path:
    rows = _read_rows(output / "table1.csv")
    lines = _header("Table 1: DRM test error (%) by hidden layer sizes", protocol, command)
    lines += ["| h1 \\ h2 | " + " | ".join(str(b) for b in second) + " |", "| --- " * (len(second) + 1) + "|"]
    for a in first:
        cells = [_percent(_errors(rows, "drm", _hidden_text((a, b)))) for b in second]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    lines += ["", "The paper's Table 1 gives 3.94 % for [400, 400]; its other cells are not quoted here.", ""]
    lines += ["| hidden | seed | validation error (%) | test error (%) | paper (%) | seconds |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        hidden = tuple(int(s) for s in r["hidden"].split("x"))
        lines.append(f"| {r['hidden']} | {r['seed']} | {100 * float(r['validation_error']):.2f} | "
                     f"{100 * float(r['test_error']):.2f} | {_paper(hidden, 'drm')} | {float(r['seconds']):.0f} |")
    path = output / "table1.md"
    _write_text(path, "\n".join(lines) + "\n")
    return path


def figure4(
    load: DataLoader,
    protocol: Protocol,
    output: str | Path,
    *,
    seeds: Sequence[int] = (0,),
    more_seeds: Sequence[int] = (),
    hidden_sizes: Sequence[Sequence[int]] = FIGURE4_HIDDEN,
    families: Sequence[str] = FAMILIES,
    settings: Mapping | None = None,
    command: str = "",
    progress: bool = False,
) -> Path:
    """Test error of every family for each hidden architecture; writes ``figure4.csv``, ``.md`` and ``.png``.

    ``more_seeds`` run the [400, 400] architecture again. The PNG (a bar chart)
    needs matplotlib and is skipped, with a log message, without it. Rows
    already in ``figure4.csv`` are kept, and their settings are checked as in
    :func:`table1`.
    """
    unknown = [family for family in families if family not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown model families {unknown}; choose from {list(FAMILIES)}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    _check_settings(output, "figure4", protocol, settings)
    path = output / "figure4.csv"
    for hidden, seed in _runs(hidden_sizes, seeds, more_seeds, (400, 400)):
        rows = _read_rows(path)
        missing = [family for family in families if not _done(rows, family, hidden, seed)]
        if not missing:
            continue
        _run_pair(missing, "figure4", hidden, seed, load, protocol, path, progress)
        _write_figure4(output, protocol, command, hidden_sizes, families)
    return _write_figure4(output, protocol, command, hidden_sizes, families)


def _run_pair(families, experiment: str, hidden, seed: int, load: DataLoader, protocol: Protocol, path: Path, progress: bool) -> None:
    """Train ``families`` for one ``(hidden, seed)`` pair and append a row for each.

    A ``fine-*`` family reuses the generative model its base family trained in this pair.
    """
    data = load(seed)
    generator = torch.Generator(device=data.train_x.device).manual_seed(seed)
    cell = replace(protocol, hidden=tuple(hidden))
    for result in run_families(families, data, cell, generator=generator, progress=progress):
        family = result.family
        _append_row(path, {"experiment": experiment, "family": family, "hidden": _hidden_text(hidden), "seed": seed,
                           "validation_error": f"{result.validation_error:.6f}",
                           "test_error": "" if result.test_error is None else f"{result.test_error:.6f}",
                           "paper_test_error": PAPER.get((tuple(hidden), family), ""), "seconds": f"{result.seconds:.1f}"})
        logger.info("%s [%s] seed %d: test error %s, %.0f s", family, _hidden_text(hidden), seed, result.test_error, result.seconds)


def _write_figure4(output: Path, protocol: Protocol, command: str, hidden_sizes, families) -> Path:
    rows = _read_rows(output / "figure4.csv")
    names = [_hidden_text(h) for h in hidden_sizes]
    lines = _header("Figure 4: test error (%) of each model family", protocol, command)
    lines += ["| family | " + " | ".join(f"{n} measured | {n} paper" for n in names) + " | seconds |",
              "| --- " * (2 * len(names) + 2) + "|"]
    for family in families:
        cells = []
        for hidden, name in zip(hidden_sizes, names):
            cells += [_percent(_errors(rows, family, name)), _paper(hidden, family)]
        seconds = [float(r["seconds"]) for r in rows if r["family"] == family]
        lines.append(f"| {family} | " + " | ".join(cells) + f" | {statistics.mean(seconds):.0f} |" if seconds else
                     f"| {family} | " + " | ".join(cells) + " | |")
    path = output / "figure4.md"
    _write_text(path, "\n".join(lines) + "\n")
    _plot_figure4(output / "figure4.png", rows, hidden_sizes, families)
    return path


def _plot_figure4(path: Path, rows: list[dict], hidden_sizes, families) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed; skipping %s", path)
        return
    figure, axis = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(hidden_sizes)
    for index, hidden in enumerate(hidden_sizes):
        name = _hidden_text(hidden)
        means = [100 * statistics.mean(e) if (e := _errors(rows, family, name)) else float("nan") for family in families]
        axis.bar([i + index * width for i in range(len(families))], means, width, label=f"[{name.replace('x', ', ')}]")
    axis.set_xticks([i + width * (len(hidden_sizes) - 1) / 2 for i in range(len(families))], families)
    axis.set_ylabel("test error (%)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def figure5(
    load: DataLoader,
    protocol: Protocol,
    output: str | Path,
    *,
    seed: int = 0,
    command: str = "",
    progress: bool = False,
) -> Path:
    """Train a DRM and generate one image per label; writes ``figure5.png``, ``figure5.md`` and ``figure5-drm.pt``.

    The checkpoint ``figure5-drm.pt`` contains the trained DRM and its hidden means
    (as ``ebmgraph train`` writes them), for ``ebmgraph generate`` and
    ``ebmgraph likelihood``.

    The PNG has three rows: images generated with the hidden layers started at
    their mean over all training data, images generated with them started at
    their mean over each label's training data, and each label's mean image.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = load(seed)
    generator = torch.Generator(device=data.train_x.device).manual_seed(seed)
    model = train_drm(data, protocol, generator, progress=progress)
    steps = protocol.mean_field_steps
    labels = torch.arange(data.n_classes, device=data.train_x.device)

    with torch.no_grad():
        state = model.schedule(("x", "y")).mean_field({"x": data.train_x, "y": data.train_y(model.dtype)}, steps)
        overall = {name: state[name].mean(dim=0) for name in model.hidden_names}
        per_label = {name: torch.stack([state[name][data.train_labels == k].mean(dim=0) for k in range(data.n_classes)])
                     for name in model.hidden_names}
        rows = {
            "overall": model.generate(labels, steps, hidden_means=overall),
            "per-label": model.generate(labels, steps, hidden_means=per_label),
            "label means": torch.stack([data.train_x[data.train_labels == k].mean(dim=0) for k in range(data.n_classes)]),
        }
    readouts = {"DRM mean field": lambda images: model.classify(images, steps)}
    if protocol.finetune_epochs:
        network = _finetuned(model, data, protocol, generator)
        readouts["fine-tuned network"] = lambda images: network(images).argmax(dim=1)

    metadata = {"command": command, "family": "drm", "seed": seed, "protocol": asdict(protocol)}
    save_checkpoint(output / "figure5-drm.pt", model, training={"hidden_means": overall, "hidden_means_per_label": per_label}, metadata=metadata)

    side = int(round(data.train_x.shape[1] ** 0.5))
    png = save_image_grid(output / "figure5.png", torch.cat(list(rows.values())).reshape(-1, side, side), columns=data.n_classes)
    lines = _header("Figure 5: images generated from each label", protocol, command, errors=False)
    lines += [f"Seed {seed}, {time.perf_counter() - start:.0f} s. Rows of `{png.name}`: generated from the overall hidden means, "
              "generated from the per-label hidden means, mean training image of each label.", "",
              "Labels read out from each image; an image matches when its label is the one it was generated from:", "",
              "| row | read-out | labels | matching |", "| --- | --- | --- | --- |"]
    for row, images in rows.items():
        for readout, classify in readouts.items():
            with torch.no_grad():
                predicted = classify(images).tolist()
            hits = sum(int(p == k) for k, p in enumerate(predicted))
            lines.append(f"| {row} | {readout} | {predicted} | {hits} of {data.n_classes} |")
    path = output / "figure5.md"
    _write_text(path, "\n".join(lines) + "\n")
    return path
