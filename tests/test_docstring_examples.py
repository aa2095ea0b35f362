"""The ``>>>`` examples in the detectors' docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib
import inspect
import io
import pkgutil

import pytest

import telltale.detectors
from telltale.detectors.base import Detector
from telltale.detectors.runrules import RunRule
from telltale.detectors.windows import WindowStats

MODULES = sorted(m.name for m in pkgutil.iter_modules(telltale.detectors.__path__,
                                                       "telltale.detectors."))


def detector_classes(module) -> list[type]:
    """The concrete detectors, run rules and window statistics a module defines."""
    return [c for _, c in inspect.getmembers(module, inspect.isclass)
            if c.__module__ == module.__name__ and not inspect.isabstract(c)
            and not c.__name__.startswith("_")
            and (issubclass(c, (Detector, RunRule)) and c.name or c is WindowStats)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(module):
        runner.run(test, out=out.write)
    assert runner.failures == 0, out.getvalue()
    missing = [c.__name__ for c in detector_classes(module) if ">>>" not in (c.__doc__ or "")]
    assert not missing, f"no >>> example in the docstring of {missing}"
