"""The names of the stages of ``synthweb run``, in pipeline order.

The lowest layer (imports nothing of ours): config validates ``run.stages`` against it. Everything
else about a stage (its hash scope, main folder, funnel row, dataset, card lines) is declared on its
``Stage`` in ``pipeline.stages`` and derived from the registry there.
"""

from __future__ import annotations

# names only (config validates run.stages with them); pipeline.stages.REGISTRY holds the stages themselves
# and keeps this list in step when a stage is registered from code
STAGES = ["seeds", "annotate", "train-classifier", "classify", "filter", "generate", "rephrase", "dedup",
          "decontaminate", "tokenize", "ablate", "report"]
