"""Training: feature adaptation, then learning to post-rank (main + auxiliary task, LoRA)."""
