"""Pure, transport-free detectors with explicit state: JSON, numpy arrays included
(detectors/state.py)."""

from telltale.detectors.base import Detector, Finding
from telltale.detectors.divergence import Divergence
from telltale.detectors.likelihood import LikelihoodEnsemble
from telltale.detectors.nonfinite import NonFinite
from telltale.detectors.pipelines import REGISTRY, Pipelines, default_pipelines
from telltale.detectors.windows import WindowResult, WindowSpec, WindowStats
from telltale.detectors.zscore import RollingZScore

__all__ = [
    "Detector", "Finding", "Divergence", "LikelihoodEnsemble", "NonFinite", "RollingZScore",
    "REGISTRY", "Pipelines", "default_pipelines", "WindowResult", "WindowSpec", "WindowStats",
]
