"""Small-model training for dataset ablations: tokenize + pack, llama presets, the loop, cloze evals, ablate."""
