import dataclasses
import json

from hf_barred.llm.base import SamplingParams
from hf_barred.llm.cache import CachedBackend, ResponseCache
from hf_barred.llm.structured import extract_json_object, parse_json_answer, structured_chat
from tests.utils.scripted_backend import ScriptedBackend

SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["True", "False"]}, "confidence": {"type": "number"}},
    "required": ["label", "confidence"],
}


def test_extracts_from_fences_and_prose():
    assert extract_json_object('noise {"a": 1} tail') == {"a": 1}
    assert extract_json_object('```json\n{"a": {"b": [1, 2]}}\n```') == {"a": {"b": [1, 2]}}
    assert extract_json_object('{broken {"a": 2}') == {"a": 2}
    assert extract_json_object("no json here") is None


def test_validation_errors_name_the_problem():
    data, error = parse_json_answer('{"label": "Maybe", "confidence": 0.5}', SCHEMA)
    assert data is None and "label" in error and "Maybe" in error


def test_repair_round_fixes_a_bad_answer_in_one_batched_call(tmp_path):
    def reply(conversation):
        if "could not be used" in conversation[-1]["content"]:
            return '{"label": "True", "confidence": 0.9}'
        if conversation[-1]["content"] == "bad":
            return "I think it's true"
        return '{"label": "False", "confidence": 0.2}'

    backend = ScriptedBackend(reply)
    engine = CachedBackend(backend, ResponseCache(tmp_path / "r.sqlite"))
    convs = [[{"role": "user", "content": c}] for c in ("good", "bad")]
    results = structured_chat(engine, convs, SCHEMA, SamplingParams(), max_repairs=2)
    assert [r.data["label"] for r in results] == ["False", "True"]
    assert [r.attempts for r in results] == [1, 2]
    assert len(backend.sent) == 3
    repair = backend.sent[-1]
    assert repair[1] == {"role": "assistant", "content": "I think it's true"}
    assert json.dumps(SCHEMA) in repair[2]["content"]


def test_failures_after_the_bound_keep_raw_text_and_error(tmp_path):
    backend = ScriptedBackend(lambda c: "never json")
    engine = CachedBackend(backend, ResponseCache(tmp_path / "r.sqlite"))
    [result] = structured_chat(engine, [[{"role": "user", "content": "x"}]], SCHEMA, SamplingParams(), max_repairs=2)
    assert result.data is None and result.raw == "never json"
    assert "no JSON object" in result.error and result.attempts == 3
    assert len(backend.sent) == 3


class Constraining(ScriptedBackend):
    """A scripted engine that claims constrained decoding and records the schemas it is sent."""

    supports_json_schema = True

    def __init__(self, reply):
        super().__init__(reply)
        self.schemas = []

    def chat(self, conversations, params, on_result=None):
        self.schemas.append(params.json_schema)
        return super().chat(conversations, params, on_result)


def test_schema_is_sent_to_engines_that_constrain(tmp_path):
    backend = Constraining(lambda c: '{"label": "True", "confidence": 1}')
    structured_chat(
        CachedBackend(backend, ResponseCache(tmp_path / "r.sqlite")),
        [[{"role": "user", "content": "x"}]],
        SCHEMA,
        SamplingParams(),
    )
    assert backend.schemas == [SCHEMA]


def test_constrained_schema_is_decoded_with_and_schema_validates(tmp_path):
    strict = {
        **SCHEMA,
        "properties": {"label": {"type": "string", "enum": ["True", "False"]}},
        "additionalProperties": False,
    }
    # the engine ignored the strict schema (extra key): the lenient schema still decides validity
    backend = Constraining(lambda c: '{"label": "True", "confidence": 1, "extra": 1}')
    engine = CachedBackend(backend, ResponseCache(tmp_path / "r.sqlite"))
    [result] = structured_chat(
        engine, [[{"role": "user", "content": "x"}]], SCHEMA, SamplingParams(), constrained_schema=strict
    )
    assert backend.schemas == [strict] and result.ok and result.data["extra"] == 1
    plain = CachedBackend(
        ScriptedBackend(lambda c: '{"label": "True", "confidence": 1}'), ResponseCache(tmp_path / "p.sqlite")
    )
    [result] = structured_chat(
        plain, [[{"role": "user", "content": "x"}]], SCHEMA, SamplingParams(), constrained_schema=strict
    )
    assert result.ok  # an engine without constrained decoding is never sent a schema


def test_json_repair_mends_near_json_but_never_a_truncated_answer(tmp_path):
    assert extract_json_object("{'label': 'True', 'confidence': 0.5,}") == {"label": "True", "confidence": 0.5}
    assert extract_json_object('Here: {label: "False", confidence: 1}') == {"label": "False", "confidence": 1}
    assert extract_json_object('{"label": "True", "confidence": 0.', repair=False) is None

    class Truncating(ScriptedBackend):
        def chat(self, conversations, params, on_result=None):
            def cut_off(i, completion):
                if on_result is not None:
                    on_result(i, dataclasses.replace(completion, finish_reason="length"))

            return [
                dataclasses.replace(c, finish_reason="length") for c in super().chat(conversations, params, cut_off)
            ]

    cut = '{"label": "True", "confidence": 0.9, "reasoning": "The user asks'
    engine = CachedBackend(Truncating(lambda c: cut), ResponseCache(tmp_path / "t.sqlite"))
    [result] = structured_chat(engine, [[{"role": "user", "content": "x"}]], SCHEMA, SamplingParams(), max_repairs=0)
    assert result.data is None and result.raw == cut  # counted as a failure, raw text kept
    assert "cut off at max_tokens" in result.error
    mended = CachedBackend(
        ScriptedBackend(lambda c: "{'label': 'True', 'confidence': 1,}"), ResponseCache(tmp_path / "m.sqlite")
    )
    [result] = structured_chat(mended, [[{"role": "user", "content": "x"}]], SCHEMA, SamplingParams(), max_repairs=0)
    assert result.ok and result.data == {"label": "True", "confidence": 1} and result.attempts == 1


def test_answer_models_validate_leniently_and_decode_strictly(tmp_path):
    from hf_barred.stages.answers import Instantiations, JudgeAnswer

    assert JudgeAnswer.validation_error({"label": "health_advice", "confidence": "high"}) is None
    assert JudgeAnswer.validation_error({"label": 0.5}).startswith("at 'label': ")
    assert Instantiations.validation_error({"values": [{"value": "night", "p": 0.2}]}) is None  # extra keys pass
    assert Instantiations.validation_error({"values": [{"applies": "yes"}]}) == "'values/0/value' is required"
    grammar = Instantiations.grammar(max_items={"values": 4})
    item = grammar["properties"]["values"]["items"]
    assert item["required"] == ["value", "applies", "probability"] and item["additionalProperties"] is False
    assert grammar["properties"]["values"]["maxItems"] == 4 and "$defs" not in grammar
    backend = Constraining(lambda c: '{"reasoning": "r", "confidence": 0.9, "label": "yes"}')
    [result] = structured_chat(
        CachedBackend(backend, ResponseCache(tmp_path / "a.sqlite")),
        [[{"role": "user", "content": "x"}]],
        JudgeAnswer,
        SamplingParams(),
    )
    assert result.ok and result.data["label"] == "yes" and backend.schemas == [JudgeAnswer.grammar()]
    bad = ScriptedBackend(lambda c: '{"reasoning": "r"}')
    [result] = structured_chat(
        CachedBackend(bad, ResponseCache(tmp_path / "b.sqlite")),
        [[{"role": "user", "content": "x"}]],
        JudgeAnswer,
        SamplingParams(),
        max_repairs=1,
    )
    assert result.error == "'label' is required" and result.raw == '{"reasoning": "r"}' and len(bad.sent) == 2
    assert json.dumps(JudgeAnswer.grammar()) in bad.sent[1][-1]["content"]  # the repair shows the grammar
