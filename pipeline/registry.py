"""The stages of ``synthweb run``, in pipeline order, and the final datasets they make.

The lowest layer (imports nothing of ours): config validates ``run.stages`` against it; the report
and publish iterate the datasets.
"""

from __future__ import annotations

# names only (config validates run.stages with them); pipeline.stages.REGISTRY holds the stages themselves
# and keeps this list in step when a stage is registered from code
STAGES = ["seeds", "annotate", "train-classifier", "classify", "filter", "generate", "rephrase", "dedup",
          "decontaminate", "tokenize", "ablate", "report"]
# the final datasets: name -> (stage folder, shard folder inside it)
SUBSETS = {"textbooks": ("generate", "data"), "rephrased": ("rephrase", "data"), "filtered-web": ("filter", "kept")}
