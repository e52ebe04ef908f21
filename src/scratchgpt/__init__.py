"""scratchgpt: a GPT-style language model from scratch, trained by a reproducible DVC pipeline."""
