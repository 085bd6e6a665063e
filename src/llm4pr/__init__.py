"""llm4pr: post-ranking for search and recommendation with a large language model (LLM4PR)."""

__version__ = "0.1.0"
