"""Inference: decoding orders from the model, sliding windows over long lists, the ranker."""
