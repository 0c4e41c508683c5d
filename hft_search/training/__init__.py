"""The training engine: one fine-tune as a pure function of a base model, a configuration and data.

It knows nothing of Optuna, storage or folds; the CV objective and ``export``/``train`` call
:func:`fine_tune` the same way.
"""

from hft_search.strategies.distillation import teacher_config
from hft_search.training.device import resolve_device
from hft_search.training.importance import compute_importance
from hft_search.training.loop import EpochCallback, FineTuneResult, fine_tune, initial_model, predict_logits
from hft_search.training.metrics import METRICS, compute_metric

__all__ = [
    "METRICS",
    "EpochCallback",
    "FineTuneResult",
    "compute_importance",
    "compute_metric",
    "fine_tune",
    "initial_model",
    "predict_logits",
    "resolve_device",
    "teacher_config",
]
