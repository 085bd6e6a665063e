"""Inference: decoding orders from the model, sliding windows over long lists, the ranker, and
the commands that load a checkpoint to score it (`report`) or read features back (`adaptation`)."""
