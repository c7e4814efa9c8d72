"""Everything that trains: one loop (``loop.py``) for every stage, its schedule (``schedule.py``),
its settings (``config.py``: the one training-stage config every stage shares), the engines that
run it in one process or under a launcher (``engine.py``, ``distributed.py``), distillation from
the dense model (``distill.py``) and recovery fine-tuning (``recovery.py``).

Import order has no cycle: config <- schedule <- engine <- loop <- recovery.
"""
