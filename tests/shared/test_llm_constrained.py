"""shared.llm helpers of issue 14 (pure logic): closing a grammar-valid JSON prefix, one-token labels."""

from __future__ import annotations

import json

import pytest

from shared.llm import CallableScorer, LLMUnavailable, close_json, label_token_ids

SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "array"}, "b": {"type": "array"}, "c": {"type": "string"}},
    "required": ["a", "b", "c"],
}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ('{"a": ["x", "y', {"a": ["x", "y"], "b": [], "c": ""}),
        ('{"a": ["x"], "b', {"a": ["x"], "b": [], "c": ""}),
        ('{"a": ["x"], "b":', {"a": ["x"], "b": [], "c": ""}),
        ('{"a": ["x",', {"a": ["x"], "b": [], "c": ""}),
        ('{ "a" : [ "fo\\', {"a": ["fo"], "b": [], "c": ""}),
        ("{", {"a": [], "b": [], "c": ""}),
        ('{"b": ["z"], "a": []', {"a": [], "b": ["z"], "c": ""}),
    ],
)
def test_close_json_turns_every_cut_prefix_into_a_schema_complete_document(prefix: str, expected: dict) -> None:
    out = close_json(prefix, SCHEMA)
    assert json.loads(out) == expected
    assert list(json.loads(out)) == ["a", "b", "c"]  # the schema's property order


def test_close_json_leaves_complete_documents_alone() -> None:
    doc = '{"a": [], "b": ["q"], "c": "s"}'
    assert close_json(doc, SCHEMA) == doc
    assert close_json("not json at all") == "not json at all"


def test_labels_must_be_single_distinct_tokens() -> None:
    vocab = {"A": [1], "B": [2], "AB": [1, 2], "C": [1]}
    assert label_token_ids(lambda t: vocab[t], ["A", "B"]) == [1, 2]
    with pytest.raises(LLMUnavailable):
        label_token_ids(lambda t: vocab[t], ["A", "AB"])
    with pytest.raises(LLMUnavailable):
        label_token_ids(lambda t: vocab[t], ["A", "C"])


def test_callable_scorer_records_prompts_and_returns_floats() -> None:
    llm = CallableScorer(lambda *_a, **_k: "x", lambda _p, labels: [len(x) for x in labels])
    assert llm.score_labels("p", ["A", "BB"]) == [1.0, 2.0] and llm.calls == ["p"]
