"""The training run: setup -> feature adaptation -> learning to post-rank -> validation report.

A run folder holds `train_config.json`, `adaptation/` (the model after feature adaptation),
`model/` (the final model, what `rank`, `evaluate` and `serve` load), `snapshot/` (the latest
resumable state: weights, optimizer, step; these three as laid out by `model.run_folder`),
`timing.json` (seconds spent training each stage, resumed parts added up) and
`valid_report.json`. Running the same command again
resumes from the snapshot; a finished stage is never redone. Every batch, and the random numbers
(dropout) of every step, are pure functions of the seed, the stage, the step and the process, so a
resumed run sees the same examples and noise as an uninterrupted one, and a stage's initial weights
are the same in every process and in a single-process run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType
from tqdm.auto import tqdm

from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests, write_json
from llm4pr.data.requests import PostRankRequest
from llm4pr.data.rerank import RerankUnsupported, as_rerank_call, rerank_text_feature
from llm4pr.data.schema import FeatureSchema
from llm4pr.evaluation.evaluate import evaluate_run
from llm4pr.features.encoders import FeatureStats
from llm4pr.inference.config import InferenceConfig
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.model.checkpoint import OPTIMIZER_FILE, load_optimizer, read_trainer_state, save_checkpoint
from llm4pr.model.factory import add_lora, build_model, load_model
from llm4pr.model.llm4pr import LLM4PRModel
from llm4pr.model.prompts import IGNORE_INDEX, PromptBuilder, collate
from llm4pr.model.run_folder import SNAPSHOT_DIR, STAGE_DIRS, STAGES, Stage, is_checkpoint
from llm4pr.training.config import StageConfig, TrainConfig
from llm4pr.training.examples import Example, ExampleFactory
from llm4pr.training.losses import listwise_first_token_loss, next_token_loss

logger = logging.getLogger(__name__)

TIMING_FILE = "timing.json"


def make_accelerator(device: str) -> Accelerator:
    """Accelerate's view of the processes: one, or those `accelerate launch` started.

    `device` "cpu" keeps every process on the CPU (gloo); "auto" lets Accelerate pick (a GPU per
    process where there is one).
    """
    if device not in ("auto", "cpu"):
        raise DataError(f"--device {device!r}: use 'auto' (Accelerate picks, one GPU per process) or 'cpu'")
    # find_unused_parameters: a batch may leave some field encoders or adapters without a gradient.
    return Accelerator(cpu=device == "cpu", kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def set_activation_checkpointing(backbone: Any, enabled: bool) -> None:
    """Recompute activations in the backward pass. Non-reentrant, so that the soft tokens' gradients
    reach the encoders and DDP sees each parameter once. (transformers 5 renamed the methods.)"""
    renamed = hasattr(backbone, "activation_checkpointing_enable")
    if enabled and renamed:
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif enabled:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        backbone.activation_checkpointing_disable() if renamed else backbone.gradient_checkpointing_disable()


def hash_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def load_split(data_dir: Path, split: str) -> tuple[list[PostRankRequest], FeatureSchema]:
    schema = FeatureSchema.load(data_dir / "schema.json")
    return read_requests(data_dir / f"{split}.jsonl", schema), schema


def subsample(requests: list[PostRankRequest], limit: int | None, seed: int) -> list[PostRankRequest]:
    """A fixed random subset, kept in file order (the same for every run with this seed)."""
    if limit is None or limit >= len(requests):
        return requests
    keep = sorted(random.Random(seed).sample(range(len(requests)), limit))
    return [requests[i] for i in keep]


def learning_rate(step: int, stage: StageConfig) -> float:
    """Linear warm-up to `learning_rate`, then cosine decay to `min_learning_rate`."""
    warmup = max(int(stage.steps * stage.warmup_ratio), 1)
    if step < warmup:
        return stage.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(stage.steps - warmup, 1)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return stage.min_learning_rate + (stage.learning_rate - stage.min_learning_rate) * cosine


def parameter_groups(
    model: LLM4PRModel, stage: StageConfig, prior_rate: float | None, position_rate: float | None = None
) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters, each with its `lr_scale` on the stage's schedule:
    the direct score paths (`LLM4PRModel.direct_path_parameters`) at peak `prior_rate`, the position
    bias among them at `position_rate` where given, the rest (and a path without a rate of its own)
    at the stage's learning rate."""
    peaks: dict[int, float] = {}
    if prior_rate is not None:
        peaks.update((id(p), prior_rate) for p in model.direct_path_parameters())
    if position_rate is not None and model.position_prior is not None:
        peaks[id(model.position_prior)] = position_rate
    groups: dict[float, list[torch.nn.Parameter]] = {stage.learning_rate: []}  # the shared group first
    for parameter in (p for p in model.parameters() if p.requires_grad):
        groups.setdefault(peaks.get(id(parameter), stage.learning_rate), []).append(parameter)
    return [{"params": params, "lr_scale": peak / stage.learning_rate} for peak, params in groups.items() if params]


@dataclass(frozen=True)
class LossTotals:
    """What a batch's losses are averaged over: labelled answer tokens and listwise prompts."""

    tokens: int
    listwise: int

    @classmethod
    def of(cls, examples: Sequence[Example]) -> "LossTotals":
        return cls(
            tokens=sum(label != IGNORE_INDEX for e in examples for label in e.prompt.labels),
            listwise=sum(e.candidate_labels is not None for e in examples),
        )


def batch_loss(
    model: torch.nn.Module,
    builder: PromptBuilder,
    examples: list[Example],
    listwise_weight: float,
    totals: LossTotals | None = None,
) -> torch.Tensor:
    """The training loss of one batch: next-token loss on the answers, plus the listwise term.

    `totals` are those of the global batch when `examples` is one process's share of it, so that
    the processes' losses add up to the loss of the whole batch.
    """
    totals = totals or LossTotals.of(examples)
    batch = collate([e.prompt for e in examples], builder.tokenizer.pad_token_id)
    # Left padding puts every answer at the end: logits are needed from the position before
    # the earliest answer start onwards, and the vocabulary projection is skipped elsewhere.
    # The positions go in as indices, not a count: a count slices a strided view, which the LM
    # head multiplies as a batched product against its weight expanded (copied, in bfloat16)
    # once per prompt; indices gather a contiguous block, which it multiplies as one matrix.
    width = batch.input_ids.shape[1]
    keep = width - int(batch.answer_start.min()) + 1
    positions = torch.arange(width - keep, width)
    logits = model(batch, [e.inputs for e in examples], logits_to_keep=positions, use_cache=False).logits
    loss = next_token_loss(logits, batch.labels[:, width - keep :], total=totals.tokens)
    if listwise_weight:
        listwise = listwise_first_token_loss(
            logits, batch.answer_start - (width - keep), builder.identifier_ids, [e.candidate_labels for e in examples],
            total=totals.listwise,
        )
        if listwise is not None:
            loss = loss + listwise_weight * listwise
    return loss


MAX_PADDING = 0.25  # how far a length group's padded tokens may exceed its real ones


def length_groups(examples: Sequence[Example], max_padding: float = MAX_PADDING) -> list[list[Example]]:
    """The examples in groups of similar prompt length, shortest first, each to be padded only to
    its own longest prompt (a batch that needs no split stays as it is).

    A padded batch costs its size times its longest prompt. Soft prompts are all about as long, but
    all-text ones (PTPR) run from 100 to 1,500 tokens with the number and length of the documents:
    a Semanlink PTPR batch holds 9,100 tokens and would be padded to 11,000. Each group's padded
    tokens stay within `max_padding` of its real ones (smaller groups cost more per token on a
    CPU); the groups' gradients add up to the batch's, since every group's loss is averaged over
    the whole batch's totals.
    """
    groups: list[list[Example]] = []
    for example in sorted(examples, key=lambda e: len(e.prompt)):
        if groups:
            group = groups[-1]
            real = sum(len(e.prompt) for e in group) + len(example.prompt)
            if len(example.prompt) * (len(group) + 1) <= (1 + max_padding) * real:
                group.append(example)
                continue
        groups.append([example])
    return groups if len(groups) > 1 else [list(examples)]  # one group keeps the batch's order (and its dropout draws)


RERANK_REPORT = "rerank call (first_token)"  # valid_report.json: the validation split as bare documents


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        data_dir: str | Path,
        run_dir: str | Path,
        device: str = "auto",
        progress: bool = True,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.run_dir = Path(run_dir)
        self.accelerator = make_accelerator(device)
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        self.progress = progress and self.is_main
        state = self.accelerator.state
        logger.info("training process %d of %d (%s, %s)", state.process_index + 1, state.num_processes,
                    state.distributed_type.value, state.backend or "no backend")
        self._epoch_orders: dict[tuple[str, int], list[int]] = {}
        self.train_requests, self.schema = load_split(self.data_dir, "train")
        if not self.train_requests:
            raise DataError(f"{self.data_dir / 'train.jsonl'}: no training requests")
        self.stats = FeatureStats.fit(self.schema, self.train_requests, embed_ids=config.model.embed_ids)
        # rerank-shaped examples need a document text feature; a schema that cannot take rerank calls gets none
        try:
            self._rerank_feature: str | None = rerank_text_feature(self.schema)
        except RerankUnsupported:
            self._rerank_feature = None
        self.train_requests = subsample(self.train_requests, config.max_train_requests, config.seed)
        config.check_processes(self.accelerator.num_processes)
        self._check_run_dir()

    def _check_run_dir(self) -> None:
        saved = self.run_dir / "train_config.json"
        current = self.config.model_dump(mode="json")
        if saved.is_file():
            previous = json.loads(saved.read_text(encoding="utf-8"))
            if _with_defaults(previous) != current:
                raise DataError(
                    f"{self.run_dir}: holds a run with a different config; use a new --out folder or delete it"
                )
        elif self.is_main:
            write_json(saved, current)

    # -- stages ----------------------------------------------------------------------------------

    def run(self, stages: Sequence[Stage] = STAGES) -> dict[str, Any]:
        """Train the stages not yet finished; return the validation report (the saved one when
        nothing was left to train)."""
        trained = False
        for stage in stages:
            stage_config = self._stage_config(stage)
            final_dir = self.run_dir / STAGE_DIRS[stage]
            if is_checkpoint(final_dir):
                logger.info("stage %s already finished in %s", stage, final_dir)
                continue
            trained = True
            model, tokenizer, resume = self._start_stage(stage)
            if stage_config.steps:
                full_state = self._train(stage, model, tokenizer, resume)
            else:
                full_state = None
                self._record_time(stage, 0.0)  # a skipped stage (an ablation, the zero-shot LLM) cost nothing
            if self.is_main:
                save_checkpoint(model, final_dir, full_state=full_state)
                shutil.rmtree(self.run_dir / SNAPSHOT_DIR, ignore_errors=True)
            self.accelerator.wait_for_everyone()  # the next stage starts from what the main process saved
        if "post_rank" not in stages or not self.is_main:
            return {}
        saved = self.run_dir / "valid_report.json"
        if not trained and saved.is_file():
            return json.loads(saved.read_text(encoding="utf-8"))
        return self.validate()

    def _stage_config(self, stage: Stage) -> StageConfig:
        return self.config.adaptation if stage == "adaptation" else self.config.post_rank

    def _start_stage(self, stage: Stage) -> tuple[LLM4PRModel, Any, dict[str, Any] | None]:
        """The model to train from: a snapshot of this stage (with its trainer state), the previous
        stage, or a fresh one."""
        snapshot = self.run_dir / SNAPSHOT_DIR
        state = read_trainer_state(snapshot)
        if state is not None and state.get("stage") == stage:
            model, tokenizer = load_model(snapshot, device=self.device, trainable=True)
            logger.info("resuming %s at step %d", stage, state["step"])
            return model, tokenizer, state
        torch.manual_seed(hash_seed(f"{self.config.seed}:{stage}:init"))  # new weights (encoders, LoRA) alike everywhere
        adapted = self.run_dir / STAGE_DIRS["adaptation"]
        if stage == "post_rank" and self.config.adaptation.steps and not is_checkpoint(adapted):
            raise DataError(f"{self.run_dir}: learning to post-rank needs feature adaptation first (run --stage adaptation)")
        if stage == "post_rank" and is_checkpoint(adapted):
            model, tokenizer = load_model(adapted, device=self.device, trainable=True)
        else:
            model, tokenizer = build_model(self.config.model, self.schema, self.stats, device=self.device)
        if stage == "post_rank":
            add_lora(model, self.config.model.lora)
        return model, tokenizer, None

    def _train(self, stage: Stage, model: LLM4PRModel, tokenizer: Any, resume: dict[str, Any] | None) -> dict[str, torch.Tensor]:
        """Train `model` for the stage's steps; return its full weights (gathered, under sharding)."""
        stage_config = self._stage_config(stage)
        builder = PromptBuilder(tokenizer, self.config.model.identifiers)
        factory = ExampleFactory(
            builder,
            self.schema,
            self.config.model.max_history,
            shuffle_candidates=self.config.post_rank.shuffle_candidates,
            prompt_style=self.config.model.prompt_style,
            random_ties=self.config.post_rank.random_ties,
            first_stage_bm25=self.config.model.first_stage_bm25,
        )
        post_rank = self.config.post_rank
        rates = (post_rank.prior_learning_rate, post_rank.position_learning_rate) if stage == "post_rank" else (None, None)
        groups = parameter_groups(model, stage_config, *rates)
        parameters = [p for group in groups for p in group["params"]]  # what gradient clipping sees
        optimizer = torch.optim.AdamW(groups, lr=stage_config.learning_rate, weight_decay=stage_config.weight_decay)
        start = int(resume["step"]) if resume else 0
        started, seconds_before = time.perf_counter(), float(resume.get("train_s", 0.0)) if resume else 0.0

        def train_seconds() -> float:  # this stage's training so far, parts before a resume included
            return seconds_before + time.perf_counter() - started

        if resume and (self.run_dir / SNAPSHOT_DIR / OPTIMIZER_FILE).is_file():
            load_optimizer(optimizer, self.run_dir / SNAPSHOT_DIR)
        elif resume:
            logger.warning("the snapshot has no optimizer state (sharded training): AdamW restarts from zero moments")
        if self.config.gradient_checkpointing:
            set_activation_checkpointing(model.backbone, True)
        model.train()
        # Data parallel under `accelerate launch`: every process builds the same global batch (a
        # pure function of the step) and trains on its own contiguous share of it.
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        share = stage_config.batch_size // processes
        if self.accelerator.state.deepspeed_plugin is not None:  # DeepSpeed wants it; there is no DataLoader to read it from
            self.accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = share
        wrapped, optimizer = self.accelerator.prepare(model, optimizer)
        make_batch = self._adaptation_batch if stage == "adaptation" else self._post_rank_batch
        listwise_weight = self.config.post_rank.listwise_loss_weight if stage == "post_rank" else 0.0
        bar = tqdm(range(start, stage_config.steps), initial=start, total=stage_config.steps, desc=stage, disable=not self.progress)
        smoothed: float | None = None
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, stage_config) * group["lr_scale"]
            examples = make_batch(factory, step)
            torch.manual_seed(hash_seed(f"{self.config.seed}:{stage}:{step}:process{rank}"))
            loss = self._backward(wrapped, builder, examples, listwise_weight)
            self.accelerator.clip_grad_norm_(parameters, stage_config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = self.accelerator.reduce(loss, reduction="sum").item()
            smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
            bar.set_postfix(loss=f"{smoothed:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            done = step + 1
            if done % self.config.checkpoint_every == 0 and done < stage_config.steps:
                self._snapshot(model, wrapped, optimizer, {"stage": stage, "step": done, "loss": smoothed, "train_s": train_seconds()})
        full_state = self.accelerator.get_state_dict(wrapped)
        self._record_time(stage, train_seconds())
        if self.config.gradient_checkpointing:
            set_activation_checkpointing(model.backbone, False)
        self.accelerator.free_memory()  # drop Accelerate's references to this stage's model and optimizer
        model.eval()
        return full_state

    def _backward(self, wrapped: torch.nn.Module, builder: PromptBuilder, examples: list[Example], listwise_weight: float) -> torch.Tensor:
        """Add this process's share of the batch's gradients, one length group at a time; return its
        share of the loss (detached). DeepSpeed steps its optimizer inside every backward call, so
        there the share goes through as one group."""
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        share = len(examples) // processes
        mine = examples[rank * share : (rank + 1) * share]
        groups = [mine] if self.accelerator.distributed_type == DistributedType.DEEPSPEED else length_groups(mine)
        totals = LossTotals.of(examples)
        total = torch.zeros((), device=self.device)
        for index, group in enumerate(groups):
            last = index == len(groups) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(wrapped):  # processes sync once, on the last group
                loss = batch_loss(wrapped, builder, group, listwise_weight, totals)
                # The gradients are averaged over processes: scale so that they add up to the whole batch's.
                self.accelerator.backward(loss * processes)
            total += loss.detach()
        return total

    def _record_time(self, stage: Stage, seconds: float) -> None:
        if self.is_main:
            path = self.run_dir / TIMING_FILE
            timing = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            write_json(path, {**timing, f"{stage}_s": seconds})  # unrounded: a tiny stage still records > 0

    def _snapshot(self, model: LLM4PRModel, wrapped: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """A resumable state, written by the main process. Every process takes part in gathering the
        weights (FSDP and ZeRO-3 shard them). The optimizer state is kept where each process holds all
        of it (one process, DDP); sharded strategies resume with fresh AdamW moments."""
        full_state = self.accelerator.get_state_dict(wrapped)
        sharded = self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        if self.is_main:
            save_checkpoint(model, self.run_dir / SNAPSHOT_DIR, None if sharded else optimizer, state, full_state=full_state)
        self.accelerator.wait_for_everyone()

    # -- batches: pure functions of (seed, stage, step) ----------------------------------------------

    def _epoch_slice(self, stage: Stage, step: int, batch_size: int) -> list[PostRankRequest]:
        n = len(self.train_requests)
        picked = []
        for offset in range(step * batch_size, (step + 1) * batch_size):
            epoch, index = divmod(offset, n)
            key = (stage, epoch)
            if key not in self._epoch_orders:
                self._epoch_orders[key] = random.Random(f"{self.config.seed}:{stage}:epoch{epoch}").sample(range(n), n)
            picked.append(self.train_requests[self._epoch_orders[key][index]])
        return picked

    def _adaptation_batch(self, factory: ExampleFactory, step: int) -> list[Example]:
        rng = random.Random(f"{self.config.seed}:adaptation:{step}")
        requests = self._epoch_slice("adaptation", step, self.config.adaptation.batch_size)
        return [factory.adaptation(r, rng.randrange(len(r.candidates))) for r in requests]

    def _post_rank_batch(self, factory: ExampleFactory, step: int) -> list[Example]:
        rng = random.Random(f"{self.config.seed}:post_rank:{step}")
        examples = []
        for request in self._epoch_slice("post_rank", step, self.config.post_rank.batch_size):
            shuffle = None  # the stage's setting
            if self.config.post_rank.rerank_ratio and self._rerank_feature and rng.random() < self.config.post_rank.rerank_ratio:
                request = as_rerank_call(request, self._rerank_feature)
                shuffle = False if self.config.post_rank.rerank_given_order else None
            example = None
            if len(request.candidates) > 1 and rng.random() < self.config.post_rank.auxiliary_ratio:
                example = factory.auxiliary(request, rng, shuffle)
            examples.append(example or factory.main(request, rng, shuffle))
        return examples

    # -- validation --------------------------------------------------------------------------------

    def validate(self) -> dict[str, Any]:
        """Score the final model on (a prefix of) the validation split; write valid_report.json."""
        path = self.data_dir / "valid.jsonl"
        if not path.is_file():
            return {}
        requests, _ = load_split(self.data_dir, "valid")
        requests = requests[: self.config.max_valid_requests]
        if not requests:  # an empty split (every query held out for testing): the run is still a model
            logger.warning("%s holds no requests: no validation report", path)
            write_json(self.run_dir / "valid_report.json", {"n_requests": 0})
            return {"n_requests": 0}
        ranker = LLM4PRRanker.from_pretrained(self.run_dir, InferenceConfig(device=str(self.device), batch_size=self.config.inference_batch_size))
        report: dict[str, Any] = {"n_requests": len(requests)}
        for mode in ("generate", "first_token"):
            run = ranker.rank(requests, mode=mode)
            scored = evaluate_run(requests, run, ks=self.config.metrics_at)
            echo = sum(r.ranking == q.candidate_ids for r, q in zip(run, requests)) / len(requests)
            report[mode] = {"metrics": scored["metrics"], "input_order_rate": echo}
        if self._rerank_feature is not None:  # what /v1 and /v2 rerank would answer: bare documents
            bare = [as_rerank_call(request, self._rerank_feature) for request in requests]
            report[RERANK_REPORT] = {"metrics": evaluate_run(bare, ranker.rank(bare, mode="first_token"), ks=self.config.metrics_at)["metrics"]}
        write_json(self.run_dir / "valid_report.json", report)
        return report


def training_seconds(run_dir: str | Path) -> float | None:
    """Seconds a finished run spent training (every stage, resumed parts added up); None when the
    run folder has no record (written before timing.json existed)."""
    path = Path(run_dir) / TIMING_FILE
    return round(sum(json.loads(path.read_text(encoding="utf-8")).values()), 3) if path.is_file() else None


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved run config with the options added since filled in with their defaults (which keep
    the behaviour it was trained with), so that a run written before an option existed resumes."""
    try:
        return TrainConfig.model_validate(saved).model_dump(mode="json")
    except ValueError:  # an option that no longer exists, or a value no longer valid: a different config
        return saved
