"""``python -m dress.memory_plan``: print the reference table of docs/scale.md."""

from dress.memory_plan.reference import markdown_table

print(markdown_table())
