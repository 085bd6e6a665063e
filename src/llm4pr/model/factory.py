"""Building an LLM4PR model from a config, and rebuilding one from a checkpoint folder."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llm4pr.data.schema import FeatureSchema
from llm4pr.features.encoders import FeatureStats, SupportsEncode
from llm4pr.features.text_encoder import load_text_encoder
from llm4pr.model.backbone import BackboneError, load_backbone
from llm4pr.model.checkpoint import ADAPTER_DIR, has_adapter, load_weights, read_checkpoint_config
from llm4pr.model.config import LoraSettings, ModelConfig
from llm4pr.model.llm4pr import LLM4PRModel
from llm4pr.model.precision import attention_implementation, resolve_dtype

logger = logging.getLogger(__name__)


def build_model(
    config: ModelConfig,
    schema: FeatureSchema,
    stats: FeatureStats,
    backbone: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    text_encoder: SupportsEncode | None = None,
    device: str | torch.device = "cpu",
) -> tuple[LLM4PRModel, PreTrainedTokenizerBase]:
    """A fresh model: the backbone frozen, encoders and adapters newly initialised."""
    if backbone is None or tokenizer is None:
        dtype = resolve_dtype(config.dtype, device)
        attention = attention_implementation(dtype, device, config.prompt_style)
        logger.info("backbone %s in %s with %s attention (model.dtype: %s)", config.backbone, dtype, attention, config.dtype)
        backbone, tokenizer = load_backbone(config.backbone, dtype=dtype, attention=attention)
    if config.backbone_layers is not None:
        keep_first_layers(backbone, config.backbone_layers)
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    encoder = text_encoder if text_encoder is not None else load_text_encoder(config.text_encoder)
    model = LLM4PRModel(config, schema, stats, backbone, encoder).to(device)
    return model, tokenizer


def keep_first_layers(backbone: PreTrainedModel, layers: int) -> None:
    """Cut a decoder-only backbone to its first `layers` blocks, in place (final norm and head kept).

    Why: on a CPU the step time is the backbone's matrix products, in proportion to its depth, and
    a post-ranker that picks among a handful of candidates may not need every layer of a chat
    model (measured on validation: docs/decisions.md).
    """
    decoder = backbone.get_decoder()
    blocks = getattr(decoder, "layers", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise BackboneError(f"backbone_layers: {type(backbone).__name__} has no list of decoder layers to cut")
    if layers > len(blocks):
        raise BackboneError(f"backbone_layers: {layers} requested, the backbone has {len(blocks)}")
    decoder.layers = torch.nn.ModuleList(list(blocks)[:layers])
    backbone.config.num_hidden_layers = layers
    layer_types = getattr(backbone.config, "layer_types", None)
    if layer_types is not None:
        backbone.config.layer_types = list(layer_types)[:layers]


def add_lora(model: LLM4PRModel, settings: LoraSettings) -> None:
    """Wrap the backbone with trainable LoRA matrices (learning to post-rank)."""
    lora = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    model.backbone = get_peft_model(model.backbone, lora)


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    text_encoder: SupportsEncode | None = None,
    trainable: bool = False,
    dtype: str | None = None,
) -> tuple[LLM4PRModel, PreTrainedTokenizerBase]:
    """Rebuild the model saved in a checkpoint folder (safetensors and a PEFT adapter; no pickle).

    For inference (`trainable=False`) the LoRA matrices are merged into the backbone's weights:
    the same function, without the adapter's extra matrix products on every layer.
    """
    path = Path(path)
    config, schema, stats = read_checkpoint_config(path)
    if dtype is not None:  # the float type is the machine's choice, not part of what was learned
        config = config.model_copy(update={"dtype": dtype})
    model, tokenizer = build_model(config, schema, stats, text_encoder=text_encoder, device=device)
    load_weights(model, path)
    if has_adapter(path):
        model.backbone = PeftModel.from_pretrained(model.backbone, path / ADAPTER_DIR, is_trainable=trainable)
        if not trainable:
            model.backbone = model.backbone.merge_and_unload()
    model.to(device)
    model.train(trainable)
    return model, tokenizer
