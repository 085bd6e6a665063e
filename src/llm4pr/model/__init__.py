"""The LLM4PR model: backbone, feature encoders, QIA, prompts."""
