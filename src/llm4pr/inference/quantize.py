"""Dynamic int8 quantization of the backbone's decoder, for CPU inference.

On a CPU, a post-ranking forward pass is bound by the decoder layers' matrix products (three
quarters of its time on the default backbone, measured with the PyTorch profiler). Dynamic
quantization stores those layers' weights in int8 and quantizes activations per batch (fbgemm), so
the products run in int8. The embeddings and the LM head stay in float: inference reads only the
identifier rows of the head. Quality must be checked per checkpoint (docs/serving.md has the
validation numbers of the quick checkpoint); it is an inference option, never used in training.

PyTorch marks `torch.ao.quantization` as deprecated in favour of torchao, whose CPU kernels for
this case are not yet faster here; the call is isolated in this module so that swapping it is
one change.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from llm4pr.model.llm4pr import LLM4PRModel


def quantize_int8(model: LLM4PRModel) -> LLM4PRModel:
    """Replace the decoder layers' Linear modules with dynamically quantized int8 ones, in place."""
    if model.device.type != "cpu":
        raise ValueError(f"int8 dynamic quantization runs on CPUs; the model is on {model.device}")
    if hasattr(model.backbone, "peft_config"):
        raise ValueError("merge the LoRA adapter before quantizing (load the checkpoint for inference)")
    decoder = model.causal_lm.get_decoder()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")
        decoder.layers = torch.ao.quantization.quantize_dynamic(decoder.layers, {nn.Linear}, dtype=torch.qint8)
    return model
