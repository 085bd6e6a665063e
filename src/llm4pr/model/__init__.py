"""The LLM4PR model: backbone, feature encoders, QIA, prompts; the checkpoint format and the run folder's layout."""
