"""Models in and out: loading (``loading.py``: bundled names, folders, hub ids, ``dress.load``),
the bundled offline models (``bundled.py``), writing pruned checkpoints atomically (``saving.py``)
and the ``dress.json`` record (``record.py``)."""
