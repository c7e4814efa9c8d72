"""LLM Surgeon (van der Ouderaa et al., "The LLM Surgeon", ICLR 2024), structured, as a dress method.

Written from the method (and a reading of the official code, ``Qualcomm-AI-research/llm-surgeon``,
never copied): every row and column of every decoder linear is a candidate; per-linear K-FAC
curvature (:mod:`.curvature`); OBS costs and the correlated update (:mod:`.costs`); one global
threshold (:mod:`.threshold`); a multi-shot linear schedule with the curvature re-estimated each
shot (:mod:`.method`); then, beyond the official code, the exact physical removal of dead FFN
neurons and KV groups (:mod:`.compact`). See docs/llm-surgeon.md.
"""

from dress.methods import MethodSpec, register, register_config
from dress.methods.llm_surgeon.config import LLMSurgeonConfig

register_config("llm_surgeon", LLMSurgeonConfig)
register(MethodSpec("llm-surgeon", "dress.methods.llm_surgeon.method:llm_surgeon",
                    "curvature-based (K-FAC/OBS) removal of rows and columns of every decoder linear, "
                    "multi-shot; dead FFN neurons and KV groups are cut, other zeros stay",
                    shapes="dress.methods.llm_surgeon.method:budget_shapes",
                    memory="dress.methods.llm_surgeon.memory:MEMORY",
                    rebuild="dress.methods.llm_surgeon.compact:rebuild"))
