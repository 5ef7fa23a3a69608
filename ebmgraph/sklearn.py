"""A scikit-learn classifier around the deep relational model (DRM).

:class:`DRMClassifier` follows the scikit-learn estimator API (``fit``,
``predict``, ``predict_proba``, ``score``, ``get_params``/``set_params``), so it
works in pipelines, grid searches and cross-validation. It needs the optional
extra ``pip install "ebmgraph[sklearn]"`` (scikit-learn 1.6 or newer).

Training follows the DRM recipe of Nakashika, Takiguchi and Ariki, as
``ebmgraph train --family drm`` does: greedy RBM pretraining from both ends of
the chain ``x - h1 - ... - hL - y`` inwards, then the mean-field learning rule
:class:`~ebmgraph.learning.algorithms.MeanFieldCD`. Prediction clamps ``x`` and
reads the label layer's expectation after mean field.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ebmgraph.learning.algorithms import MeanFieldCD
from ebmgraph.learning.pretrain import greedy_pretrain, outside_in_order
from ebmgraph.learning.trainer import Trainer, TrainingConfig
from ebmgraph.presets import DeepRelationalModel, drm

__all__ = ["DRMClassifier"]

_PREDICT_BATCH = 4096


class DRMClassifier(ClassifierMixin, BaseEstimator):
    """Classify with a deep relational model trained by the DRM recipe.

    Parameters
    ----------
    hidden : sequence of int, default=(400, 400)
        Sizes of the hidden layers ``h1 .. hL``, ``h1`` next to the data.
    epochs : int, default=50
        Epochs of the DRM learning rule; 0 keeps the pretrained weights.
    pretrain_epochs : int, default=50
        Epochs of each pretraining RBM; 0 skips pretraining.
    batch_size : int, default=20
        Rows per mini-batch, in pretraining and training.
    learning_rate : float, default=0.1
        Learning rate of pretraining and training.
    mean_field_steps : int, default=10
        Mean-field sweeps T in training and prediction.
    y_units : {"softmax", "bernoulli"}, default="softmax"
        Unit family of the label layer. ``"softmax"`` makes the label one
        categorical variable, so ``predict_proba`` is the mean-field ``E[y | x]``.
        ``"bernoulli"`` is the DRM paper's choice. Its ``E[y | x]`` rows need
        not sum to one, so ``predict_proba`` divides each row by its sum.
    random_state : int, numpy.random.RandomState or None, default=None
        Seeds one ``torch.Generator`` that draws the initial weights, the batch
        order and every sample of training.
    device : str or torch.device, default="cpu"
        Where the model is trained and evaluated, e.g. ``"cuda"``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels seen in ``fit``, sorted; label unit ``k`` stands for
        ``classes_[k]``.
    n_features_in_ : int
        Number of features (units of the data layer ``x``).
    feature_names_in_ : ndarray of shape (n_features,)
        Column names, when ``X`` was a DataFrame with string column names.
    model_ : DeepRelationalModel
        The trained model.
    history_ : list of dict
        One record per epoch of the DRM learning rule (``epoch``, ``step``,
        ``reconstruction_error``).

    Notes
    -----
    ``X`` must lie in [0, 1]: the data layer has Bernoulli units, so each
    feature is read as the probability that its unit is on (pixel intensities,
    binary features). Other data raises ``ValueError``; scale it first, e.g.
    with ``sklearn.preprocessing.MinMaxScaler(clip=True)`` in a pipeline.

    Training runs in float32. Fit and predictions are reproducible for a fixed
    integer ``random_state`` on one device and torch build.

    Examples
    --------
    >>> import numpy as np
    >>> from ebmgraph.sklearn import DRMClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((60, 8))
    >>> y = np.where(X[:, :4].sum(axis=1) > X[:, 4:].sum(axis=1), "left", "right")
    >>> classifier = DRMClassifier(hidden=(6,), epochs=2, pretrain_epochs=1, random_state=0).fit(X, y)
    >>> classifier.classes_
    array(['left', 'right'], dtype='<U5')
    >>> classifier.predict_proba(X[:3]).shape
    (3, 2)
    """

    def __init__(
        self,
        hidden: Sequence[int] = (400, 400),
        *,
        epochs: int = 50,
        pretrain_epochs: int = 50,
        batch_size: int = 20,
        learning_rate: float = 0.1,
        mean_field_steps: int = 10,
        y_units: str = "softmax",
        random_state: int | np.random.RandomState | None = None,
        device: str | torch.device = "cpu",
    ):
        self.hidden = hidden
        self.epochs = epochs
        self.pretrain_epochs = pretrain_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.mean_field_steps = mean_field_steps
        self.y_units = y_units
        self.random_state = random_state
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Negative features are rejected, as are features above 1 (for which scikit-learn has no tag).
        tags.input_tags.positive_only = True
        return tags

    def fit(self, X: ArrayLike, y: ArrayLike) -> "DRMClassifier":
        """Pretrain and train a DRM on ``X`` and ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features in [0, 1].
        y : array-like of shape (n_samples,)
            Class labels of any type that :func:`numpy.unique` can sort; at
            least two distinct classes.

        Returns
        -------
        DRMClassifier
            The fitted estimator (``self``).
        """
        self._check_parameters()
        features, targets = validate_data(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(targets)
        self.classes_, encoded = np.unique(targets, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"DRMClassifier needs samples of at least 2 classes in y, got 1 class: {self.classes_[0]!r}")
        _check_unit_interval(features, "X")

        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        generator = torch.Generator().manual_seed(seed)
        device = torch.device(self.device)
        x = torch.as_tensor(features, dtype=torch.float32).to(device)
        labels = torch.as_tensor(encoded.reshape(-1), dtype=torch.int64).to(device)
        data = {"x": x, "y": torch.nn.functional.one_hot(labels, len(self.classes_)).to(torch.float32)}

        model = drm(features.shape[1], tuple(self.hidden), len(self.classes_), y_units=self.y_units, generator=generator, device=device)
        # NOTE: on a CUDA device the samplers draw there, so pretraining and training get a generator
        # on that device. This path has not been run on a GPU.
        sampling = generator if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
        if self.pretrain_epochs:
            greedy_pretrain(model, data, outside_in_order(model), self._config(self.pretrain_epochs), generator=sampling)
        self.history_: list[dict] = []
        if self.epochs:
            trainer = Trainer(model, MeanFieldCD(self.mean_field_steps), self._config(self.epochs), generator=sampling)
            self.history_ = trainer.fit(data)
        self.model_: DeepRelationalModel = model
        return self

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities from mean field with ``x`` clamped, shape ``(n_samples, n_classes)``.

        Columns follow :attr:`classes_`. Each row sums to one (see ``y_units``).
        """
        check_is_fitted(self)
        features = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        _check_unit_interval(features, "X")
        x = torch.as_tensor(features, dtype=self.model_.dtype).to(self.model_.device)
        rows = [
            self.model_.predict(x[start : start + _PREDICT_BATCH], self.mean_field_steps)
            for start in range(0, x.shape[0], _PREDICT_BATCH)
        ]
        expected = torch.cat(rows).double().cpu()
        return (expected / expected.sum(dim=1, keepdim=True)).numpy()

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predict the class of maximum probability for each row: shape ``(n_samples,)``, values from :attr:`classes_`."""
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(axis=1)]

    def _config(self, epochs: int) -> TrainingConfig:
        return TrainingConfig(epochs=epochs, batch_size=self.batch_size, learning_rate=float(self.learning_rate))

    def _check_parameters(self) -> None:
        hidden = self.hidden
        if isinstance(hidden, numbers.Integral) or not isinstance(hidden, Sequence) or not hidden:
            raise ValueError(f"hidden must be a non-empty sequence of layer sizes such as (400, 400), got {hidden!r}")
        if not all(isinstance(size, numbers.Integral) and not isinstance(size, bool) and size >= 1 for size in hidden):
            raise ValueError(f"hidden must contain positive ints, got {hidden!r}")
        for name, minimum in (("epochs", 0), ("pretrain_epochs", 0), ("batch_size", 1), ("mean_field_steps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"learning_rate must be a positive finite number, got {rate!r}")
        if self.y_units not in ("softmax", "bernoulli"):
            raise ValueError(f"y_units must be 'softmax' or 'bernoulli', got {self.y_units!r}")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {self.device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} was requested, but CUDA is not available on this machine")


def _check_unit_interval(X: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` unless every value of ``X`` lies in [0, 1]."""
    if not X.size:
        return
    low, high = X.min(), X.max()
    if low >= 0 and high <= 1:
        return
    # scikit-learn's checks match the words "Negative values in data" for inputs that are rejected for their sign.
    fault = "Negative values in data" if low < 0 else "Values above 1 in data"
    raise ValueError(
        f"{fault} passed to DRMClassifier: {name} must lie in [0, 1] (Bernoulli data units), "
        f"got values from {low:.4g} to {high:.4g}; scale the features first, "
        "e.g. with sklearn.preprocessing.MinMaxScaler(clip=True)"
    )
