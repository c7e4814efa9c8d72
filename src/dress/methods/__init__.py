"""Pruning methods. Each method turns a dense model (plus calibration data) into a pruned one
and returns a report for ``dress.json``; the pipeline (:mod:`dress.pipeline`) does everything
common to all methods (loading, data, evaluation, recovery, saving)."""
