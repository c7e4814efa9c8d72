"""``dress compare``: several pruning methods on one model, one calibration draw, one evaluation.

One idea a module:

* :mod:`~dress.comparison.spec`: what a comparison is (:class:`CompareConfig`, its variants and
  zero-shot settings);
* :mod:`~dress.comparison.planning`: its entries (:func:`plan`), validated before anything loads;
* :mod:`~dress.comparison.runner`: running them (:func:`run_compare`: same data, same evaluation);
* :mod:`~dress.comparison.store`: ``results.json``, its fingerprints and what a rerun skips;
* :mod:`~dress.comparison.report`: the table and figures, from ``results.json`` alone.
"""

from __future__ import annotations

from dress.comparison.planning import Entry, plan
from dress.comparison.runner import run_compare
from dress.comparison.spec import CompareConfig, Variant, ZeroShotSettings, check_methods, variant_from_name
from dress.comparison.store import FORMAT_VERSION, RESULTS_JSON, fingerprint

__all__ = ["FORMAT_VERSION", "RESULTS_JSON", "CompareConfig", "Entry", "Variant", "ZeroShotSettings", "check_methods",
           "fingerprint", "plan", "run_compare", "variant_from_name"]
