"""The HTTP post-ranking service: `create_app` (FastAPI) and `serve` (uvicorn), see docs/serving.md."""

from llm4pr.serving.app import create_app, serve
from llm4pr.serving.settings import ServingSettings

__all__ = ["ServingSettings", "create_app", "serve"]
