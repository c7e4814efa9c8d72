"""DReSS (arXiv 2501.17905) and its two ablations, sharing one code path
(:mod:`dress.methods.dress.method`):

* ``dress`` -- regularize the groups of the channels to remove until they are zero, then remove them;
* ``fpr``   -- regularize *every* channel's groups instead (the paper's Table 4 ablation);
* ``direct``-- remove the chosen channels with no regularization ("w/o R").

Files: ``selection.py`` (which channels), ``penalty.py`` (groups, penalty, proximal step),
``sharded.py`` (the same step on FSDP2 shards), ``stage.py`` (the regularization stage),
``method.py`` (select -> regularize -> remove). The tensor surgery that removes channels is shared
with other methods and lives in :mod:`dress.pruning.hidden`.
"""

from dress.methods import MethodSpec, register, register_config
from dress.methods.dress.config import RegularizeConfig

register_config("regularize", RegularizeConfig)
register(MethodSpec(
    "dress", "dress.methods.dress.method:dress",
    "regularize the removed hidden channels to zero, then remove them (default)",
    aliases={"dress-l2": {"regularize.norm": "l2"}, "dress-l1": {"regularize.norm": "l1"},
             "dress-norft": {"recovery.enabled": False}},
    shapes="dress.pruning.budget:width_shapes", memory="dress.methods.dress.memory:MEMORY", exact_cut=True,
))
register(MethodSpec("fpr", "dress.methods.dress.method:fpr", "regularize every hidden channel, then remove (ablation)",
                    shapes="dress.pruning.budget:width_shapes", memory="dress.methods.dress.memory:MEMORY"))
register(MethodSpec(
    "direct", "dress.methods.dress.method:direct", "remove hidden channels with no regularization",
    needs_data=lambda config: config.selection == "activation",
    shapes="dress.pruning.budget:width_shapes", memory="dress.methods.dress.memory:MEMORY",
))
