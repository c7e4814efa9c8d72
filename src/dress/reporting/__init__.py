"""What is printed: aligned terminal tables (``tables.py``) and the summary of ``dress prune``
(``summary.py``). ``dress compare``'s table and plots are in :mod:`dress.comparison.report`."""
