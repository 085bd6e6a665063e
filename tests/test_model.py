"""The LLM4PR model on a tiny random backbone: QIA, soft tokens, prompts, losses, decoding."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import llm4pr.inference.ranker as ranker_module
from llm4pr.data.errors import DataError, format_validation_error
from llm4pr.data.requests import PostRankRequest
from llm4pr.features.encoders import EntityEncoder, FeatureStats, FieldInfo
from llm4pr.features.text_encoder import load_text_encoder
from llm4pr.inference.config import InferenceConfig
from llm4pr.inference.decoding import Decoded, decode, repair
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.inference.window import sliding_window_rank, window_schedule
from llm4pr.model.backbone import BackboneError
from llm4pr.model.factory import add_lora, build_model, keep_first_layers
import llm4pr.model.llm4pr as llm4pr_module
from llm4pr.model.llm4pr import LLM4PRModel, PromptInputs
from llm4pr.model.prompts import IGNORE_INDEX, Prompt, PromptBatch, PromptBuilder, collate, entity_texts
from llm4pr.model.qia import FieldMLPAdapter, QueryInstructedAdapter
from llm4pr.training.examples import ExampleFactory, ideal_order
from llm4pr.training.losses import listwise_first_token_loss, next_token_loss
from tests.tiny import TINY, make_model, save_tiny_backbone, tiny_backbone
from tests.toy import TOY_SCHEMA, toy_requests


@pytest.fixture(scope="module")
def tiny() -> tuple[LLM4PRModel, PromptBuilder]:
    return make_model()


@pytest.fixture(scope="module")
def shared_model() -> tuple[LLM4PRModel, PromptBuilder]:
    """A second untrained model (seed 3) for the decoding property test's many examples."""
    return make_model(seed=3)


def test_qia_shapes_and_attention_sum_to_one() -> None:
    fields = [FieldInfo("a", 4), FieldInfo("b", 6), FieldInfo("c", 2)]
    for heads in (1, 4):
        qia = QueryInstructedAdapter(fields, query_dim=5, output_dim=7, hidden_dim=16, num_heads=heads)
        tokens, attention = qia(torch.randn(3, 5), [torch.randn(3, 4), torch.randn(3, 6), torch.randn(3, 2)])
        assert tokens.shape == (3, 7)
        assert attention.shape == (3, heads, 3)
        torch.testing.assert_close(attention.sum(-1), torch.ones(3, heads))
    with pytest.raises(ValueError, match="not divisible"):
        QueryInstructedAdapter(fields, 5, 7, hidden_dim=10, num_heads=4)


def test_qia_query_changes_the_attention() -> None:
    torch.manual_seed(0)
    qia = QueryInstructedAdapter([FieldInfo("a", 4), FieldInfo("b", 4)], query_dim=5, output_dim=7, hidden_dim=16)
    fields = [torch.randn(1, 4), torch.randn(1, 4)]
    _, first = qia(torch.randn(1, 5), fields)
    _, second = qia(torch.randn(1, 5), fields)
    assert not torch.allclose(first, second)


def test_mlp_adapter_has_the_same_interface() -> None:
    mlp = FieldMLPAdapter([FieldInfo("a", 4), FieldInfo("b", 6)], query_dim=5, output_dim=7, hidden_dim=16)
    tokens, _ = mlp(torch.randn(3, 5), [torch.randn(3, 4), torch.randn(3, 6)])
    assert tokens.shape == (3, 7)


def test_adapters_make_a_token_for_an_entity_without_fields() -> None:
    """A search user known by nothing but the query (no user features, `embed_ids: false`, as in
    text re-ranking): QIA's token is the query's, the MLP's a learned constant."""
    torch.manual_seed(0)
    qia = QueryInstructedAdapter([], query_dim=5, output_dim=7, hidden_dim=16, num_heads=2)
    queries = torch.randn(3, 5)
    tokens, attention = qia(queries, [])
    assert tokens.shape == (3, 7) and attention.shape == (3, 2, 0)
    assert not torch.allclose(tokens[0], tokens[1])  # the query decides it
    mlp_tokens, _ = FieldMLPAdapter([], query_dim=5, output_dim=7, hidden_dim=16)(queries, [])
    assert mlp_tokens.shape == (3, 7) and torch.allclose(mlp_tokens[0], mlp_tokens[1])


def test_entity_encoder_fields_follow_the_schema() -> None:
    requests = toy_requests(10)
    stats = FeatureStats.fit(TOY_SCHEMA, requests)
    text_encoder = load_text_encoder("hashing")
    encoder = EntityEncoder(TOY_SCHEMA, "item", stats, text_dim=text_encoder.dim, categorical_dim=8)
    names = [f.name for f in encoder.fields]
    assert names == ["__id__", "title", "genres", "vec", "numerical"]  # ONE field for all numbers
    items = requests[0].candidates
    outputs = encoder([i.id for i in items], [i.features for i in items], text_encoder)
    assert [o.shape[-1] for o in outputs] == [f.dim for f in encoder.fields]
    unseen = encoder(["never-seen"], [{}], text_encoder)
    assert unseen[-1].tolist() == [[0.0, 1.0]]  # missing number: 0 with its missing flag set


def one_main_prompt(builder: PromptBuilder) -> tuple[PostRankRequest, Prompt, PromptBatch, list[PromptInputs]]:
    """A toy request, its main-task prompt, the prompt as a batch of one, and its entities."""
    request = toy_requests(1)[0]
    prompt = builder.main_task(request.query, len(request.history), len(request.candidates))
    batch = collate([prompt], builder.tokenizer.pad_token_id)
    return request, prompt, batch, [PromptInputs(request.query, request.user, request.history, request.candidates)]


def test_soft_token_rows_equal_adapter_outputs(tiny: tuple[LLM4PRModel, PromptBuilder]) -> None:
    model, builder = tiny
    request, prompt, batch, inputs = one_main_prompt(builder)
    embeds = model.inputs_embeds(batch, inputs)
    soft = model.soft_tokens(inputs, batch.slot_sources)
    words = model.backbone.get_input_embeddings()(batch.input_ids)
    # Identifier binding: a candidate slot also carries the word embedding of its identifier, the
    # token written just before it (" A" before the first candidate); other slots carry none.
    bound = soft.clone()
    for k, (source, index) in enumerate(batch.slot_sources[0]):
        if source == "candidate":
            position = int(batch.slot_position[k])
            assert int(batch.input_ids[0, position - 1]) == builder.identifier_ids[index]
            bound[k] += words[0, position - 1]
    torch.testing.assert_close(embeds[0, batch.slot_position], bound)
    query = model.text_encoder.encode([request.query])
    items = request.candidates
    fields = model.item_encoder([i.id for i in items], [i.features for i in items], model.text_encoder)
    raw, _ = model.item_adapter(query.expand(len(items), -1), fields)
    expected = torch.nn.functional.layer_norm(raw, raw.shape[-1:]) * model.soft_token_scale
    candidate_slots = [k for k, (source, _) in enumerate(batch.slot_sources[0]) if source == "candidate"]
    torch.testing.assert_close(soft[candidate_slots], expected)
    text_positions = [p for p in range(len(prompt)) if p not in set(batch.slot_position.tolist())]
    torch.testing.assert_close(embeds[0, text_positions], words[0, text_positions])


def test_plain_layout_leaves_soft_tokens_unbound(tiny: tuple[LLM4PRModel, PromptBuilder]) -> None:
    """`bind_identifiers: false` is the paper's layout (the "w/o identifier binding" ablation)."""
    model, builder = tiny
    request, prompt, batch, inputs = one_main_prompt(builder)
    plain = model.__class__(
        model.config.model_copy(update={"bind_identifiers": False}), model.schema, model.stats, model.backbone, model.text_encoder
    )
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain.inputs_embeds(batch, inputs)[0, batch.slot_position], model.soft_tokens(inputs, batch.slot_sources))
    assert batch.slot_binding.tolist() == [-1] * (1 + len(request.history)) + builder.identifier_ids[: len(request.candidates)]


def test_checkpoints_from_before_binding_and_context_load_without_them(tmp_path: Path) -> None:
    """Checkpoints written before identifier binding existed were trained without it."""
    from llm4pr.model.checkpoint import read_checkpoint_config, save_checkpoint

    model, _ = make_model()
    save_checkpoint(model, tmp_path)
    assert read_checkpoint_config(tmp_path)[0].bind_identifiers is True
    raw = json.loads((tmp_path / "config.json").read_text())
    options = ("bind_identifiers", "relative_numeric", "history_labels", "candidate_prior", "history_prior")
    for option in options:
        del raw["model"][option]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    config = read_checkpoint_config(tmp_path)[0]
    assert [getattr(config, option) for option in options] == [False] * len(options)


def test_prompt_positions_carry_no_loss(tiny: tuple[LLM4PRModel, PromptBuilder]) -> None:
    _, builder = tiny
    prompt = builder.main_task("what to watch", 2, 3, target_order=[2, 0, 1])
    answer = prompt.labels[prompt.answer_start :]
    assert all(label == IGNORE_INDEX for label in prompt.labels[: prompt.answer_start])
    ids = builder.identifier_ids
    assert answer == [ids[2], ids[0], ids[1], builder.tokenizer.eos_token_id]
    assert prompt.input_ids[prompt.answer_start :] == answer
    assert [s for s, _ in prompt.slot_sources] == ["user", "history", "history", "candidate", "candidate", "candidate"]
    aux = builder.auxiliary_task("q", 0, 3, [0, 1, 2], [2, 1, 0], better=1)
    assert all(label == IGNORE_INDEX for label in aux.labels[: aux.answer_start])
    assert builder.tokenizer.decode(aux.labels[aux.answer_start : -1]) == " II"


def test_too_many_candidates_for_the_identifiers(tiny: tuple[LLM4PRModel, PromptBuilder]) -> None:
    _, builder = tiny
    with pytest.raises(ValueError, match="27 candidates but only 26 identifiers"):
        builder.main_task("q", 0, 27)


def test_identifiers_must_be_single_tokens(tiny: tuple[LLM4PRModel, PromptBuilder]) -> None:
    _, builder = tiny
    with pytest.raises(BackboneError, match="'AB'"):
        PromptBuilder(builder.tokenizer, ["A", "AB", "C"])


def test_ideal_order_is_stable() -> None:
    assert ideal_order([3.0, 5.0, 3.0, 4.0]) == [1, 3, 0, 2]


def test_ideal_order_with_random_ties_keeps_the_labels_order() -> None:
    rng = random.Random(0)
    orders = [ideal_order([3.0, 5.0, 3.0, 4.0, 3.0], rng) for _ in range(50)]
    assert all(order[:2] == [1, 3] and sorted(order[2:]) == [0, 2, 4] for order in orders)
    assert len({tuple(order[2:]) for order in orders}) == 6  # every order of the three tied candidates occurs


def test_random_ties_reach_the_main_task_answer(tiny: tuple[LLM4PRModel, PromptBuilder]) -> None:
    _, builder = tiny
    request = toy_requests(1)[0]
    tied = request.model_copy(update={"candidates": [c.model_copy(update={"label": 3.0}) for c in request.candidates]})

    def answers(random_ties: bool) -> set[str]:
        factory = ExampleFactory(builder, TOY_SCHEMA, max_history=10, shuffle_candidates=False, random_ties=random_ties)
        rng = random.Random(0)
        prompts = [factory.main(tied, rng).prompt for _ in range(20)]
        return {builder.tokenizer.decode(p.labels[p.answer_start : -1]) for p in prompts}

    assert answers(False) == {" A B C D E"}
    assert len(answers(True)) > 5


def test_auxiliary_answer_is_the_higher_ndcg_list(tiny: tuple[LLM4PRModel, PromptBuilder]) -> None:
    _, builder = tiny
    factory = ExampleFactory(builder, TOY_SCHEMA, max_history=10, shuffle_candidates=False)
    request = toy_requests(1)[0]
    example = factory.auxiliary(request, random.Random(0))
    assert example is not None
    text = builder.tokenizer.decode(example.prompt.input_ids)
    one = text.split("List I:")[1].split("\n")[0].split()
    two = text.split("List II:")[1].split("\n")[0].split()
    labels = {ident: request.candidates[k].label for k, ident in enumerate("ABCDE")}
    from llm4pr.evaluation.metrics import ndcg_at_k

    better = "I" if ndcg_at_k([labels[i] for i in one], 5) > ndcg_at_k([labels[i] for i in two], 5) else "II"
    assert builder.tokenizer.decode(example.prompt.labels[example.prompt.answer_start : -1]).strip() == better


def test_one_optimiser_step_lowers_the_loss() -> None:
    model, builder = make_model(seed=1)
    add_lora(model, TINY.lora.model_copy(update={"r": 4, "alpha": 8, "dropout": 0.0}))
    model.train()
    factory = ExampleFactory(builder, TOY_SCHEMA, max_history=10, shuffle_candidates=True)
    rng = random.Random(0)
    examples = [factory.main(r, rng) for r in toy_requests(4)]
    batch = collate([e.prompt for e in examples], builder.tokenizer.pad_token_id)
    inputs = [e.inputs for e in examples]
    labels = [e.candidate_labels for e in examples]

    def loss() -> torch.Tensor:
        logits = model(batch, inputs).logits
        listwise = listwise_first_token_loss(logits, batch.answer_start, builder.identifier_ids, labels)
        assert listwise is not None
        return next_token_loss(logits, batch.labels) + listwise

    trainable = [p for p in model.parameters() if p.requires_grad]
    backbone_trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert backbone_trainable and all("lora_" in n for n in backbone_trainable)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    before = loss()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss()
    assert after.item() < before.detach().item()


def test_repair() -> None:
    assert repair([2, 0, 1], 3) == ([2, 0, 1], False)
    assert repair([2, 2, -1, 0], 4) == ([2, 0, 1, 3], True)
    assert repair([], 2) == ([0, 1], True)
    assert repair([5, 1], 2) == ([1, 0], True)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=4), seed=st.integers(0, 10_000))
def test_constrained_decoding_always_yields_a_permutation(shared_model: tuple[LLM4PRModel, PromptBuilder], sizes: list[int], seed: int) -> None:
    model, builder = shared_model
    rng = random.Random(seed)
    requests = [toy_requests(1, n_candidates=n, seed=rng.randrange(1000))[0] for n in sizes]
    prompts = [builder.main_task(r.query, len(r.history), len(r.candidates)) for r in requests]
    inputs = [PromptInputs(r.query, r.user, r.history, r.candidates) for r in requests]
    batch = collate(prompts, builder.tokenizer.pad_token_id)
    for mode in ("generate", "first_token", "unconstrained"):
        decoded = decode(model, batch, inputs, builder.identifier_ids, sizes, mode=mode, eos_token_id=builder.tokenizer.eos_token_id)
        for result, n in zip(decoded, sizes):
            assert sorted(result.order) == list(range(n))


@pytest.mark.parametrize("mode", ["generate", "first_token", "unconstrained"])
def test_batched_and_single_rankings_are_identical(tiny: tuple[LLM4PRModel, PromptBuilder], mode: str) -> None:
    model, builder = tiny
    requests = toy_requests(3, n_candidates=4) + toy_requests(2, n_candidates=6, seed=9)
    batched = LLM4PRRanker(model, builder, mode=mode, batch_size=5).rank(requests)
    single = LLM4PRRanker(model, builder, mode=mode, batch_size=1).rank(requests)
    assert [r.ranking for r in batched] == [r.ranking for r in single]
    if mode == "first_token":
        for b, s in zip(batched, single):
            assert b.scores == pytest.approx(s.scores, abs=1e-4)


def by_hidden_score(hidden: list[int], positions: list[int]) -> list[int]:
    """An oracle's window order: the window's positions sorted by a hidden score, best first."""
    return sorted(range(len(positions)), key=lambda i: -hidden[positions[i]])


def test_sliding_window_on_sixty_candidates(tiny: tuple[LLM4PRModel, PromptBuilder], monkeypatch: pytest.MonkeyPatch) -> None:
    assert window_schedule(60, 20, 10) == [(40, 60), (30, 50), (20, 40), (10, 30), (0, 20)]
    assert window_schedule(5, 20, 10) == [(0, 5)]
    # an oracle that sorts each window by a hidden score: the best items rise to the top in one pass
    hidden = random.Random(0).sample(range(60), 60)
    [order] = sliding_window_rank([60], 20, 10, lambda _, shown: [by_hidden_score(hidden, positions) for positions in shown])
    assert sorted(order) == list(range(60))
    assert [hidden[p] for p in order[:10]] == sorted(hidden, reverse=True)[:10]
    # the served path: the ranker's own windows over a 60-candidate request, decoded by the model...
    model, builder = tiny
    request = toy_requests(1, n_candidates=60, n_items=80)[0]
    ranker = LLM4PRRanker(model, builder, window=20, stride=10)
    result = ranker.rank([request])[0]
    assert sorted(result.ranking) == sorted(request.candidate_ids) and not result.fallback
    # ... and by the oracle, in place of the model: the same property holds for what is served
    monkeypatch.setattr(ranker, "_decode", lambda requests, shown, mode: [Decoded(order=by_hidden_score(hidden, p)) for p in shown])
    served = ranker.rank([request])[0]
    assert [request.candidate_ids.index(c) for c in served.ranking] == order


def test_sliding_windows_of_a_batch_advance_together() -> None:
    """Each round ranks one window of every list that has one left, in one call; each list ends
    as if it had been ranked alone."""
    sizes = [60, 5, 35]
    hidden = [random.Random(k).sample(range(n), n) for k, n in enumerate(sizes)]
    calls: list[list[int]] = []

    def oracle(active: list[int], shown: list[list[int]]) -> list[list[int]]:
        calls.append(active)
        return [by_hidden_score(hidden[k], positions) for k, positions in zip(active, shown, strict=True)]

    together = sliding_window_rank(sizes, 20, 10, oracle)
    assert calls == [[0, 1, 2], [0, 2], [0, 2], [0], [0]]
    for k, n in enumerate(sizes):
        alone = sliding_window_rank([n], 20, 10, lambda _, shown, k=k: [by_hidden_score(hidden[k], p) for p in shown])  # type: ignore[misc]
        assert together[k] == alone[0]


def test_inference_config_refuses_bad_settings_and_combinations(tiny: tuple[LLM4PRModel, PromptBuilder]) -> None:
    def problems(**settings: object) -> str:
        with pytest.raises(ValidationError) as caught:
            InferenceConfig(**settings)  # type: ignore[arg-type]
        return format_validation_error(caught.value)

    assert problems(window=20, stride=20) == "stride: must be smaller than the window (20), got 20"
    assert problems(shifts=3).startswith("shifts: 3 shifts need mode 'first_token'")
    assert problems(window=1) == "window: Input should be greater than or equal to 2"
    assert problems(mode="beam").startswith("mode: Input should be 'generate', 'first_token' or 'unconstrained'")
    assert problems(windw=5) == "windw: Extra inputs are not permitted"
    assert problems(quantize="int8", dtype="bfloat16") == "dtype: int8 quantization starts from float32 weights, got dtype 'bfloat16'"
    assert problems(dtype="float16").startswith("dtype: Input should be 'auto', 'bfloat16' or 'float32'")
    assert InferenceConfig(mode="first_token", shifts=3).shifts == 3
    with pytest.raises(ValidationError, match="shifts need mode 'first_token'"):
        InferenceConfig(mode="first_token", shifts=3).replace(mode="generate")  # a copy is validated too
    model, builder = tiny
    with pytest.raises(DataError, match="window 30 is more than the model's 26 candidate identifiers"):
        LLM4PRRanker(model, builder, InferenceConfig(window=30))
    ranker = LLM4PRRanker(model, builder, InferenceConfig(mode="first_token", batch_size=3), window=6, stride=2)
    assert ranker.config == InferenceConfig(mode="first_token", batch_size=3, window=6, stride=2)  # keywords override the config


@pytest.mark.parametrize("prompt_style", ["soft", "text"])
def test_a_training_example_shows_the_request_as_the_ranker_does(
    tiny: tuple[LLM4PRModel, PromptBuilder], monkeypatch: pytest.MonkeyPatch, prompt_style: str
) -> None:
    """The main-task example's prompt, up to its answer, and its entities are exactly what the
    ranker feeds the model for the same request with its candidates in the same order."""
    model, builder = tiny
    config = model.config.model_copy(update={"prompt_style": prompt_style, "max_history": 2})
    model = LLM4PRModel(config, TOY_SCHEMA, model.stats, model.backbone, model.text_encoder)
    request = toy_requests(1, n_candidates=6)[0]
    assert len(request.history) > config.max_history  # the history is cut the same way
    factory = ExampleFactory(builder, TOY_SCHEMA, config.max_history, shuffle_candidates=True, prompt_style=prompt_style)
    example = factory.main(request, random.Random(0))
    shown = request.model_copy(update={"candidates": list(example.inputs.candidates)})  # the example's (shuffled) order
    assert shown.candidate_ids != request.candidate_ids
    fed = []

    def recording_decode(*args: object, **kwargs: object) -> list[Decoded]:
        fed.append(args[1:3])  # the batch and the entities
        return decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ranker_module, "decode", recording_decode)
    LLM4PRRanker(model, builder, cache_prefix=False).rank([shown])
    [(batch, inputs)] = fed
    prompt = example.prompt
    assert batch.input_ids[0].tolist() == prompt.input_ids[: prompt.answer_start]
    assert batch.answer_start.tolist() == [prompt.answer_start]
    assert batch.slot_sources == [prompt.slot_sources]
    assert batch.slot_position.tolist() == prompt.slot_positions
    assert batch.slot_binding.tolist() == prompt.slot_bindings
    assert inputs == [example.inputs]


def test_model_failure_falls_back_to_the_ranking_stage_order(tiny: tuple[LLM4PRModel, PromptBuilder], monkeypatch: pytest.MonkeyPatch) -> None:
    model, builder = tiny
    ranker = LLM4PRRanker(model, builder)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(ranker, "_decode", broken)
    requests = toy_requests(2)
    results = ranker.rank(requests)
    assert [r.ranking for r in results] == [r.candidate_ids for r in requests]
    assert all(r.fallback and "boom" in (r.error or "") for r in results)


def test_text_prompts_describe_entities_in_words(tiny: tuple[LLM4PRModel, PromptBuilder]) -> None:
    model, builder = tiny
    request = toy_requests(1, n_candidates=3)[0]
    texts = entity_texts(TOY_SCHEMA, request.user, request.history, request.candidates)
    prompt = builder.main_task(request.query, len(request.history), 3, target_order=[1, 0, 2], texts=texts)
    assert prompt.slot_positions == []
    text = builder.tokenizer.decode(prompt.input_ids)
    assert "\n A: titled movie number" in text and "likes " in text
    soft = builder.main_task(request.query, len(request.history), 3)
    assert len(prompt) > 3 * len(soft)  # the all-text prompt is what QIA soft tokens save
    ptpr = model.config.model_copy(update={"prompt_style": "text"})
    text_model = LLM4PRModel(ptpr, TOY_SCHEMA, model.stats, model.backbone, model.text_encoder)
    result = LLM4PRRanker(text_model, builder).rank([request])[0]
    assert sorted(result.ranking) == sorted(request.candidate_ids) and not result.fallback


@pytest.mark.parametrize("mode", ["generate", "first_token", "unconstrained"])
def test_prefix_cache_changes_nothing_but_speed(tiny: tuple[LLM4PRModel, PromptBuilder], mode: str) -> None:
    model, builder = tiny
    requests = toy_requests(3, n_candidates=4) + toy_requests(2, n_candidates=6, seed=9)
    cached = LLM4PRRanker(model, builder, mode=mode, batch_size=5, cache_prefix=True).rank(requests)
    plain = LLM4PRRanker(model, builder, mode=mode, batch_size=5, cache_prefix=False).rank(requests)
    assert [r.ranking for r in cached] == [r.ranking for r in plain]
    if mode == "first_token":
        for c, p in zip(cached, plain):
            assert c.scores == pytest.approx(p.scores, abs=1e-4)


def test_batch_loss_projects_only_the_answer_positions() -> None:
    from llm4pr.training.trainer import batch_loss

    model, builder = make_model(seed=2)
    factory = ExampleFactory(builder, TOY_SCHEMA, max_history=10, shuffle_candidates=True)
    rng = random.Random(1)
    requests = toy_requests(4)
    examples = [factory.main(requests[0], rng), factory.auxiliary(requests[1], rng), factory.adaptation(requests[2], 1), factory.main(requests[3], rng)]
    batch = collate([e.prompt for e in examples], builder.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(batch, [e.inputs for e in examples]).logits
        full = next_token_loss(logits, batch.labels) + listwise_first_token_loss(
            logits, batch.answer_start, builder.identifier_ids, [e.candidate_labels for e in examples]
        )
        windowed = batch_loss(model, builder, examples, listwise_weight=1.0)
    torch.testing.assert_close(windowed, full)


def test_length_groups_pad_each_group_to_its_own_longest_prompt() -> None:
    from llm4pr.training.trainer import MAX_PADDING, length_groups

    model, builder = make_model(seed=2)
    factory = ExampleFactory(builder, TOY_SCHEMA, max_history=10, shuffle_candidates=True)
    rng = random.Random(3)
    requests = toy_requests(8, n_candidates=6)
    examples = [factory.main(r, rng) for r in requests[:6]] + [factory.auxiliary(r, rng) for r in requests[6:]]
    # Toy prompts: 123 tokens for a main example, 152 for an auxiliary one (two lists). Padded as one
    # batch they cost 17% more tokens than they hold: within the default's 25%, so one group, in order.
    assert length_groups(examples) == [examples]
    assert MAX_PADDING == 0.25
    groups = length_groups(examples, max_padding=0.05)
    assert sorted(id(e) for g in groups for e in g) == sorted(id(e) for e in examples)  # a partition
    assert [e.task for e in groups[-1]] == ["auxiliary", "auxiliary"]  # the longest prompts, apart
    for group in groups:
        lengths = [len(e.prompt) for e in group]
        assert len(group) * max(lengths) <= 1.05 * sum(lengths)


def test_length_groups_add_up_to_the_gradient_of_the_whole_batch() -> None:
    from llm4pr.training.trainer import LossTotals, batch_loss, length_groups

    model, builder = make_model(seed=5)
    model.eval()  # no dropout: both ways must see the same function
    factory = ExampleFactory(builder, TOY_SCHEMA, max_history=10, shuffle_candidates=True)
    rng = random.Random(4)
    requests = toy_requests(6, n_candidates=5, seed=21)
    examples = [factory.main(r, rng) for r in requests[:4]] + [factory.auxiliary(r, rng) for r in requests[4:]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    batch_loss(model, builder, examples, listwise_weight=1.0).backward()
    whole = [p.grad.clone() for p in trainable if p.grad is not None]
    model.zero_grad(set_to_none=True)
    groups = length_groups(examples, max_padding=0.05)
    assert len(groups) > 1
    for group in groups:
        batch_loss(model, builder, group, 1.0, LossTotals.of(examples)).backward()
    grouped = [p.grad for p in trainable if p.grad is not None]
    assert len(grouped) == len(whole) > 0
    for a, b in zip(grouped, whole):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_identifier_head_equals_the_full_vocabulary_projection() -> None:
    """Inference projects onto the identifier rows of the LM head only; scores and greedy orders
    must equal those of the full projection (the reference loop below decodes from full logits)."""
    model, builder = make_model(seed=4)
    add_lora(model, TINY.lora)  # through the PEFT wrapper too, as in training-time validation
    model.eval()
    requests = toy_requests(3, n_candidates=5, seed=11) + toy_requests(2, n_candidates=3, seed=12)
    sizes = [len(r.candidates) for r in requests]
    prompts = [builder.main_task(r.query, len(r.history), len(r.candidates)) for r in requests]
    inputs = [PromptInputs(r.query, r.user, r.history, r.candidates) for r in requests]
    batch = collate(prompts, builder.tokenizer.pad_token_id)
    ids = builder.identifier_ids
    with torch.no_grad():
        full = model(batch, inputs).logits[:, -1]
        reference_orders = []
        for row, n in enumerate(sizes):  # greedy over the full vocabulary, restricted to unused identifiers
            order: list[int] = []
            embeds = model.inputs_embeds(collate([prompts[row]], builder.tokenizer.pad_token_id), [inputs[row]])
            for _ in range(n - 1):
                logits = model.backbone(inputs_embeds=embeds).logits[0, -1]
                scores = [float(logits[ids[p]]) if p not in order else float("-inf") for p in range(n)]
                order.append(max(range(n), key=lambda p: scores[p]))
                word = model.backbone.get_input_embeddings()(torch.tensor([[ids[order[-1]]]]))
                embeds = torch.cat([embeds, word], dim=1)
            reference_orders.append(order + [p for p in range(n) if p not in order])
    first = decode(model, batch, inputs, ids, sizes, mode="first_token")
    for row, n in enumerate(sizes):
        assert first[row].scores == pytest.approx(full[row, ids[:n]].tolist(), abs=1e-4)
    generated = decode(model, batch, inputs, ids, sizes, mode="generate")
    assert [d.order for d in generated] == reference_orders


def test_int8_decoder_keeps_rankings_valid_and_scores_close(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from llm4pr.inference.quantize import quantize_int8
    from llm4pr.model.checkpoint import save_checkpoint

    config = TINY.model_copy(update={"backbone": str(save_tiny_backbone(tmp_path / "backbone", seed=5))})
    model, _ = build_model(config, TOY_SCHEMA, FeatureStats.fit(TOY_SCHEMA, toy_requests(30)))
    add_lora(model, TINY.lora)
    with pytest.raises(ValueError, match="merge the LoRA adapter before quantizing"):
        quantize_int8(model)
    save_checkpoint(model, tmp_path / "checkpoint")
    requests = toy_requests(6, n_candidates=5, seed=13)
    plain = LLM4PRRanker.from_pretrained(tmp_path / "checkpoint", mode="first_token").rank(requests)
    quantized_ranker = LLM4PRRanker.from_pretrained(tmp_path / "checkpoint", mode="first_token", quantize="int8")
    layer = quantized_ranker.model.causal_lm.get_decoder().layers[0]
    assert type(layer.self_attn.q_proj).__module__.startswith("torch.ao.nn.quantized.dynamic")
    quantized = quantized_ranker.rank(requests)
    exact = torch.tensor([s for r in plain for s in r.scores])
    approx = torch.tensor([s for r in quantized for s in r.scores])
    assert torch.corrcoef(torch.stack([exact, approx]))[0, 1] > 0.9  # int8 noise, not a different model
    for request, result in zip(requests, quantized):
        assert sorted(result.ranking) == sorted(request.candidate_ids) and not result.fallback
    with pytest.raises(ValueError, match="quantize"):
        LLM4PRRanker.from_pretrained(tmp_path / "checkpoint", quantize="int4")


def test_group_zscore_is_relative_to_each_group() -> None:
    from llm4pr.model.request_context import group_zscore

    values = torch.tensor([[1.0], [2.0], [3.0], [10.0], [10.0], [5.0]])
    present = torch.tensor([[1.0], [1.0], [1.0], [1.0], [1.0], [0.0]])
    group = torch.tensor([0, 0, 0, 1, 1, 1])
    z = group_zscore(values, present, group)
    torch.testing.assert_close(z[:3].squeeze(-1), torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-4, rtol=0)
    assert z[3:].tolist() == [[0.0], [0.0], [0.0]]  # equal values, and a missing one, give 0


def test_request_context_reads_history_labels_never_candidate_labels() -> None:
    """The candidates' labels are the training target: changing them must not change any input."""
    torch.manual_seed(0)
    backbone, tokenizer = tiny_backbone(seed=0)
    config = TINY.model_copy(update={"relative_numeric": True, "history_labels": True})
    stats = FeatureStats.fit(TOY_SCHEMA, toy_requests(30))
    model, tokenizer = build_model(config, TOY_SCHEMA, stats, backbone, tokenizer, load_text_encoder("hashing"))
    assert model.request_context is not None
    torch.nn.init.normal_(model.request_context.project.weight)  # zero at start: make it count
    builder = PromptBuilder(tokenizer, config.identifiers)
    request = toy_requests(1)[0]
    assert len(request.history) >= 2
    prompt = builder.main_task(request.query, len(request.history), len(request.candidates))
    batch = collate([prompt], tokenizer.pad_token_id)

    def embeds(history: list, candidates: list) -> torch.Tensor:
        return model.inputs_embeds(batch, [PromptInputs(request.query, request.user, history, candidates)])

    base = embeds(list(request.history), list(request.candidates))
    relabelled = [c.model_copy(update={"label": 100.0 + k}) for k, c in enumerate(request.candidates)]
    torch.testing.assert_close(embeds(list(request.history), relabelled), base)
    liked = [request.history[0].model_copy(update={"label": 50.0}), *request.history[1:]]
    assert not torch.allclose(embeds(liked, list(request.candidates)), base)
    assert "request_context.project.weight" in model.trainable_state_dict()


def test_query_similarity_writes_the_query_text_match_into_each_candidate() -> None:
    """With `query_similarity`, a candidate whose title is the query gets cosine 1 and the request's
    highest z-score; a missing title is flagged, not read as a cosine of 0."""
    torch.manual_seed(0)
    backbone, tokenizer = tiny_backbone(seed=0)
    config = TINY.model_copy(update={"relative_numeric": False, "history_labels": False, "query_similarity": True})
    stats = FeatureStats.fit(TOY_SCHEMA, toy_requests(30))
    model, tokenizer = build_model(config, TOY_SCHEMA, stats, backbone, tokenizer, load_text_encoder("hashing"))
    assert model.request_context is not None and model.request_context.input_dim == 3  # one text feature: title
    request = toy_requests(1)[0]
    query = request.candidates[2].features["title"]
    untitled = request.candidates[4].model_copy(update={"features": {**request.candidates[4].features, "title": None}})
    candidates = [*request.candidates[:4], untitled]
    encoder = model.item_encoder
    fields = encoder([c.id for c in candidates], [c.features for c in candidates], model.text_encoder)
    queries = model.text_encoder.encode([query] * len(candidates)).float()
    cosine, present = llm4pr_module._query_similarity(queries, [fields[i] for i in encoder.text_fields])
    assert present.squeeze(-1).tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert cosine[2, 0].item() == pytest.approx(1.0, abs=1e-5) and cosine[4, 0].item() == 0.0
    groups = [(0, "candidate")] * len(candidates)
    features = model.request_context.features(candidates, groups, None, (cosine, present))
    assert int(features[:4, 1].argmax()) == 2  # the z-score among the present candidates
    assert features[4].tolist() == [0.0, 0.0, 1.0]



def test_shift_averaging_over_every_rotation_ignores_the_shown_order(tiny: tuple[LLM4PRModel, PromptBuilder]) -> None:
    model, builder = tiny
    request = toy_requests(1)[0]
    n = len(request.candidates)
    ranker = LLM4PRRanker(model, builder, mode="first_token", shifts=n)
    rotated = request.model_copy(update={"candidates": [*request.candidates[2:], *request.candidates[:2]]})
    first, second = ranker.rank([request])[0], ranker.rank([rotated])[0]
    by_id = [dict(zip(r.ranking, r.scores, strict=True)) for r in (first, second)]  # type: ignore[arg-type]
    assert by_id[0].keys() == by_id[1].keys() == set(request.candidate_ids)
    for item in request.candidate_ids:
        assert abs(by_id[0][item] - by_id[1][item]) < 1e-4
    assert first.ranking == second.ranking or sorted(by_id[0].values()) != sorted(set(by_id[0].values()))  # equal unless tied
    # one shift is plain first_token: scores are the raw identifier logits, as before
    plain = LLM4PRRanker(model, builder, mode="first_token").rank([request])[0]
    assert plain.ranking == LLM4PRRanker(model, builder, mode="first_token", shifts=1).rank([request])[0].ranking
    with pytest.raises(ValueError, match="shifts"):
        LLM4PRRanker(model, builder, shifts=0)


def with_prior(seed: int = 5) -> tuple[LLM4PRModel, PromptBuilder]:
    """A model with `candidate_prior` whose read-out is not zero (as after training)."""
    model, builder = make_model(seed=seed, candidate_prior=True)
    assert model.candidate_prior is not None
    with torch.no_grad():
        model.candidate_prior.weight.normal_(std=5.0)
        model.candidate_prior.bias.fill_(0.3)
    return model, builder


def test_candidate_prior_adds_each_candidates_read_out_to_its_identifier_logit() -> None:
    model, builder = with_prior()
    plain = LLM4PRModel(model.config.model_copy(update={"candidate_prior": False}), model.schema, model.stats, model.backbone, model.text_encoder)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("candidate_prior.")})
    plain.eval()
    request, _, batch, inputs = one_main_prompt(builder)
    soft = model.soft_tokens(inputs, batch.slot_sources)
    candidate_slots = [k for k, (source, _) in enumerate(batch.slot_sources[0]) if source == "candidate"]
    read_out = model.candidate_prior(soft[candidate_slots]).squeeze(-1)  # type: ignore[misc]
    n = len(request.candidates)
    ids = builder.identifier_ids[:n]
    with torch.no_grad():
        biased, unbiased = model(batch, inputs).logits, plain(batch, inputs).logits
    torch.testing.assert_close(biased[0, :, ids] - unbiased[0, :, ids], read_out.expand(biased.shape[1], -1).detach())
    others = [t for t in range(biased.shape[-1]) if t not in set(ids)]
    torch.testing.assert_close(biased[0, :, others], unbiased[0, :, others])
    first = decode(model, batch, inputs, builder.identifier_ids, [n], mode="first_token")[0]
    assert first.scores == pytest.approx(biased[0, -1, ids].tolist(), abs=1e-4)
    assert first.order == sorted(range(n), key=lambda i: -first.scores[i])  # type: ignore[index]


@pytest.mark.parametrize("mode", ["generate", "unconstrained"])
def test_candidate_prior_steers_every_decoding_step(mode: str) -> None:
    """Greedy decoding with the prior equals a reference loop over the full, prior-added logits."""
    model, builder = with_prior(seed=6)
    requests = toy_requests(3, n_candidates=5, seed=13)
    ids = builder.identifier_ids
    expected = []
    for request in requests:
        prompt = builder.main_task(request.query, len(request.history), len(request.candidates))
        batch = collate([prompt], builder.tokenizer.pad_token_id)
        inputs = [PromptInputs(request.query, request.user, request.history, request.candidates)]
        n = len(request.candidates)
        with torch.no_grad():
            embeds, prior = model.encode(batch, inputs)
            order: list[int] = []
            for _ in range(n - 1):
                logits = model.backbone(inputs_embeds=embeds).logits[0, -1] + prior[0]  # type: ignore[index]
                scores = [float(logits[ids[p]]) if p not in order else float("-inf") for p in range(n)]
                order.append(max(range(n), key=lambda p: scores[p]))
                embeds = torch.cat([embeds, model.backbone.get_input_embeddings()(torch.tensor([[ids[order[-1]]]]))], dim=1)
        expected.append([request.candidate_ids[p] for p in order + [p for p in range(n) if p not in order]])
    ranked = LLM4PRRanker(model, builder, mode="generate", batch_size=3).rank(requests)
    if mode == "generate":
        assert [r.ranking for r in ranked] == expected
    else:  # free decoding reads the biased full vocabulary: a large prior makes its first word the best identifier
        with torch.no_grad():
            model.candidate_prior.bias.fill_(1e4)  # type: ignore[union-attr]
        free = LLM4PRRanker(model, builder, mode="unconstrained", batch_size=3).rank(requests)
        strong = LLM4PRRanker(model, builder, mode="generate", batch_size=3).rank(requests)
        assert [r.ranking[0] for r in free] == [r.ranking[0] for r in strong]


@pytest.mark.parametrize("mode", ["generate", "first_token"])
def test_candidate_prior_keeps_batched_and_cached_rankings_identical(mode: str) -> None:
    model, builder = with_prior(seed=7)
    requests = toy_requests(3, n_candidates=4) + toy_requests(2, n_candidates=6, seed=9)
    reference = LLM4PRRanker(model, builder, mode=mode, batch_size=1, cache_prefix=False).rank(requests)
    for batch_size, cache_prefix in ((5, False), (5, True)):
        other = LLM4PRRanker(model, builder, mode=mode, batch_size=batch_size, cache_prefix=cache_prefix).rank(requests)
        assert [r.ranking for r in other] == [r.ranking for r in reference]


def test_candidate_prior_is_trained_and_saved(tmp_path: Path) -> None:
    from llm4pr.model.checkpoint import load_weights, save_checkpoint
    from llm4pr.training.trainer import batch_loss

    model, builder = make_model(seed=8, candidate_prior=True)
    factory = ExampleFactory(builder, TOY_SCHEMA, max_history=10, shuffle_candidates=True)
    examples = [factory.main(r, random.Random(0)) for r in toy_requests(4, seed=14)]
    batch_loss(model, builder, examples, listwise_weight=1.0).backward()
    assert model.candidate_prior is not None and model.candidate_prior.weight.grad is not None
    assert model.candidate_prior.weight.grad.abs().sum() > 0
    with torch.no_grad():
        model.candidate_prior.weight.normal_()
    save_checkpoint(model, tmp_path)
    fresh, _ = make_model(seed=9, candidate_prior=True)
    load_weights(fresh, tmp_path)
    torch.testing.assert_close(fresh.candidate_prior.weight, model.candidate_prior.weight)  # type: ignore[union-attr]


# --- backbone_layers: a shallower backbone --------------------------------------------------------


def test_keeping_the_first_layers_equals_the_full_model_read_out_after_them() -> None:
    """The cut backbone computes exactly what the full one has after its first block, then the
    final norm and the head: nothing is re-initialised or skipped in between."""
    full, tokenizer = tiny_backbone(seed=1, layers=3)
    cut, _ = tiny_backbone(seed=1, layers=3)
    keep_first_layers(cut, 1)
    assert len(cut.get_decoder().layers) == 1 and cut.config.num_hidden_layers == 1
    ids = torch.tensor([tokenizer.encode("Rank A B C")])
    with torch.no_grad():
        after_first = full(input_ids=ids, output_hidden_states=True).hidden_states[1]
        expected = full.lm_head(full.get_decoder().norm(after_first))
        assert torch.allclose(cut(input_ids=ids).logits, expected, atol=1e-5)


def test_backbone_layers_beyond_the_backbone_are_refused_by_name() -> None:
    backbone, _ = tiny_backbone(layers=2)
    with pytest.raises(BackboneError, match="backbone_layers: 3 requested, the backbone has 2"):
        keep_first_layers(backbone, 3)
    with pytest.raises(ValidationError, match="backbone_layers"):
        TINY.model_validate({**TINY.model_dump(), "backbone_layers": 0})


def test_a_model_on_a_cut_backbone_ranks_every_request() -> None:
    """Both modes, with the prefix cache and (generate) the key/value cache over the cut layers."""
    model, builder = make_model(backbone_layers=1)
    assert len(model.backbone.get_decoder().layers) == 1
    requests = toy_requests(4, seed=2)
    for mode in ("generate", "first_token"):
        results = LLM4PRRanker(model, builder, mode=mode).rank(requests)
        for request, result in zip(requests, results, strict=True):
            assert not result.fallback and sorted(result.ranking) == sorted(request.candidate_ids)


# --- position_prior: a learned bias per candidate position ----------------------------------------


def test_list_positions_count_candidate_slots_within_each_prompt() -> None:
    from llm4pr.model.llm4pr import _list_positions

    slot_batch = torch.tensor([0, 0, 0, 1, 1, 2])
    slot_position = torch.tensor([7, 9, 12, 5, 8, 30])
    assert _list_positions(slot_batch, slot_position).tolist() == [0, 1, 2, 0, 1, 0]


def test_position_prior_adds_each_positions_bias_to_its_identifier_logit() -> None:
    model, builder = make_model(seed=5, position_prior=True)
    request, _, batch, inputs = one_main_prompt(builder)
    n = len(request.candidates)
    assert len(request.history) > 0  # history slots carry no identifier and take no position
    ids = builder.identifier_ids[:n]
    with torch.no_grad():
        before = model(batch, inputs).logits
        model.position_prior.copy_(torch.linspace(3.0, -3.0, len(model.position_prior)))  # type: ignore[union-attr]
        after = model(batch, inputs).logits
    bias = torch.linspace(3.0, -3.0, len(model.config.identifiers))[:n]
    torch.testing.assert_close(after[0, :, ids] - before[0, :, ids], bias.expand(after.shape[1], -1))
    others = [t for t in range(after.shape[-1]) if t not in set(ids)]
    torch.testing.assert_close(after[0, :, others], before[0, :, others])
    # batched, prefix-cached and single-request rankings agree with the bias in place
    requests = toy_requests(3, n_candidates=4) + toy_requests(2, n_candidates=6, seed=9)
    for mode in ("generate", "first_token"):
        reference = LLM4PRRanker(model, builder, mode=mode, batch_size=1, cache_prefix=False).rank(requests)
        batched = LLM4PRRanker(model, builder, mode=mode, batch_size=5, cache_prefix=True).rank(requests)
        assert [r.ranking for r in batched] == [r.ranking for r in reference]


def test_position_prior_is_trained_and_saved(tmp_path: Path) -> None:
    from llm4pr.model.checkpoint import load_weights, save_checkpoint
    from llm4pr.training.trainer import batch_loss

    model, builder = make_model(seed=8, position_prior=True, candidate_prior=False)
    factory = ExampleFactory(builder, TOY_SCHEMA, max_history=10, shuffle_candidates=False)
    examples = [factory.main(r, random.Random(0)) for r in toy_requests(4, seed=14)]
    batch_loss(model, builder, examples, listwise_weight=1.0).backward()
    assert model.position_prior is not None and model.position_prior.grad is not None
    assert model.position_prior.grad[:5].abs().sum() > 0 and model.position_prior.grad[5:].abs().sum() == 0  # 5 toy candidates
    with torch.no_grad():
        model.position_prior.normal_()
    save_checkpoint(model, tmp_path)
    fresh, _ = make_model(seed=9, position_prior=True, candidate_prior=False)
    load_weights(fresh, tmp_path)
    torch.testing.assert_close(fresh.position_prior, model.position_prior)


def with_history_prior(seed: int = 8) -> tuple[LLM4PRModel, PromptBuilder]:
    """A model with `history_prior` whose key map is not zero (as after training)."""
    model, builder = make_model(seed=seed, candidate_prior=False, history_prior=True)
    assert model.history_prior is not None
    with torch.no_grad():
        model.history_prior.key.weight.normal_(std=1.0)
    return model, builder


def history_labelled(request: PostRankRequest, labels: list[float]) -> PostRankRequest:
    history = [item.model_copy(update={"label": label}) for item, label in zip(request.history, labels, strict=True)]
    return request.model_copy(update={"history": history})


def test_history_prior_scores_each_candidate_against_the_users_label_weighted_history() -> None:
    model, builder = with_history_prior()
    model.eval()
    request, _, batch, _ = one_main_prompt(builder)
    request = history_labelled(request, [5.0, 1.0, 3.0])
    inputs = [PromptInputs(request.query, request.user, request.history, request.candidates)]
    with torch.no_grad():
        soft = model.soft_tokens(inputs, batch.slot_sources) / model.soft_token_scale
        _, prior = model.encode(batch, inputs)
    sources = batch.slot_sources[0]
    history = [k for k, (source, _) in enumerate(sources) if source == "history"]
    candidates = [k for k, (source, _) in enumerate(sources) if source == "candidate"]
    prior_map = model.history_prior
    assert prior_map is not None and prior is not None
    deviation = torch.tensor([2.0, -2.0, 0.0])  # labels 5, 1, 3 minus their mean 3
    with torch.no_grad():
        taste = (prior_map.key(soft[history]) * deviation.unsqueeze(-1)).mean(0)
        expected = prior_map.query(soft[candidates]) @ taste
    ids = builder.identifier_ids[: len(candidates)]
    torch.testing.assert_close(prior[0, ids], expected)
    assert expected.abs().max() > 1e-3  # the path is live, not zero
    others = [t for t in range(prior.shape[-1]) if t not in set(ids)]
    assert prior[0, others].abs().max() == 0


def test_history_prior_reads_history_labels_and_never_candidate_labels() -> None:
    model, builder = with_history_prior(seed=9)
    model.eval()
    request, _, batch, _ = one_main_prompt(builder)
    liked_first = history_labelled(request, [5.0, 1.0, 1.0])

    def prior_of(r: PostRankRequest) -> torch.Tensor:
        with torch.no_grad():
            prior = model.encode(batch, [PromptInputs(r.query, r.user, r.history, r.candidates)])[1]
        assert prior is not None
        return prior

    relabelled = liked_first.model_copy(update={"candidates": [c.model_copy(update={"label": 1.0}) for c in liked_first.candidates]})
    torch.testing.assert_close(prior_of(relabelled), prior_of(liked_first))
    assert not torch.allclose(prior_of(history_labelled(request, [1.0, 5.0, 1.0])), prior_of(liked_first))
    # equal labels say nothing about taste: every deviation is 0
    assert prior_of(history_labelled(request, [4.0, 4.0, 4.0])).abs().max() == 0


def test_history_prior_starts_at_zero_and_trains_at_the_direct_paths_rate() -> None:
    model, builder = make_model(seed=10, candidate_prior=False, history_prior=True)
    request, _, batch, _ = one_main_prompt(builder)
    request = history_labelled(request, [5.0, 1.0, 3.0])
    prior = model.encode(batch, [PromptInputs(request.query, request.user, request.history, request.candidates)])[1]
    assert prior is not None and prior.abs().max() == 0
    prior[0, builder.identifier_ids[0]].backward()
    assert model.history_prior is not None and model.history_prior.key.weight.grad.abs().sum() > 0  # type: ignore[union-attr]
    direct = {id(p) for p in model.direct_path_parameters()}
    assert {id(p) for p in model.history_prior.parameters()} <= direct
    assert any(name.startswith("history_prior.") for name in model.trainable_state_dict())
