"""Parser unit tests: every accepted and rejected answer form (never a default value)."""

from __future__ import annotations

import pytest

from thtb.judge.parsers import (
    ParseError,
    eval_score,
    find_json_object,
    parse_alpagasus,
    parse_bloom,
    parse_bloom_level,
    parse_description,
    parse_disciplines,
    parse_text,
    strip_noise,
    to_snake_case,
)
from thtb.judge.prompts import (
    ALPAGASUS,
    BLOOM,
    BLOOM_LEVEL,
    DISCIPLINE_DESCRIPTION,
    DISCIPLINES,
    TEMPLATES,
)
from thtb.eval.prompts import (
    PAIRWISE,
    PAIRWISE_FORCED,
    PAIRWISE_TEMPLATES,
    RESPOND,
    parse_pairwise,
    parse_pairwise_forced,
)
from thtb.scorers.base import BLOOM_BANDS


# ------------------------------------------------------------------------------ noise
def test_strip_think_and_fences():
    assert strip_noise("<think>hmm {\"level\": 1}</think>\nanswer") == "answer"
    assert strip_noise("reasoning here</think>answer") == "answer"
    assert strip_noise("```json\n{\"a\": 1}\n```") == '{"a": 1}'
    assert strip_noise("<THINK>x</THINK> ok") == "ok"
    with pytest.raises(ParseError, match="unterminated"):
        strip_noise("<think>never closed {\"level\": \"Apply\"}")


# ------------------------------------------------------------------------------ scores
@pytest.mark.parametrize(
    ("value", "expected"),
    [(7, 7), (7.0, 7), ("7", 7), ("3+4", 7), ("3 + 4", 7), ("(2+1)*3", 9), ("14/2", 7), ("2*(3+4)-7", 7),
     ("3+4 = 7", 7), ("score = 12", 12), ("-1+8", 7), (" 16 ", 16),
     # fractional scores, as the authors keep them
     (7.5, 7.5), ("7.5", 7.5), ("7/2", 3.5), ("7.", 7),
     # a text naming exactly one number
     ("7 points", 7), ("about 9", 9), ("score: 8", 8), ("~9", 9), ("Score: 8.5.", 8.5), ("(8)", 8),
     ("2+5 = 7 points", 7), ("＋7", 7), ("１２", 12), ("abs(7)", 7)],
)
def test_eval_score_accepts(value, expected):
    out = eval_score(value)
    assert out == expected
    assert type(out) is (float if expected % 1 else int)  # whole numbers come back as int


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "must be a number"), (True, "must be a number"), (False, "must be a number"),
        ([7], "must be a number"), ({"a": 1}, "must be a number"),
        (float("nan"), "finite"), (float("inf"), "finite"), (10**400, "overflows"),
        ("seven", "not a number"), ("high", "not a number"), ("", "not a number"), ("   ", "not a number"),
        ("nan", "not a number"), ("inf", "not a number"), ("__import__('os')", "not a number"),
        ("7 = seven", "not a number"),
        # two or more numbers that are not one expression: ambiguous
        ("7 or 8", "ambiguous"), ("between 7 and 9", "ambiguous"), ("7-8 points", "ambiguous"),
        ("7–8", "ambiguous"), ("8 out of 21", "ambiguous"), ("Level 3, score 8", "ambiguous"),
        ("1e3", "ambiguous"), ("= 7 or 8", "ambiguous"),
        ("2**3", "unsupported"), ("3+", "not a valid"), ("1/0", "division by zero"),
        ("9" * 101, "longer than"),
    ],
)
def test_eval_score_rejects(value, message):
    with pytest.raises(ParseError, match=message):
        eval_score(value)


# ------------------------------------------------------------------------------ JSON + Bloom
def test_find_json_object_in_prose():
    assert find_json_object('Sure! Here it is: {"level": "Apply", "score": 8} hope it helps {"x": 1}') == {
        "level": "Apply",
        "score": 8,
    }
    with pytest.raises(ParseError):
        find_json_object("no json here")
    with pytest.raises(ParseError):
        find_json_object("[1, 2, 3]")


@pytest.mark.parametrize(
    ("text", "level", "score"),
    [
        ('{"level": "Apply", "score": 8, "reasoning": "uses a formula"}', "Apply", 8),
        ('{"level": "apply", "score": "8", "reasoning": "r"}', "Apply", 8),
        ('{"level": "CREATE", "score": "10+11", "reasoning": "r"}', "Create", 21),
        ('{"level": "Analyze", "score": "5+6 = 11", "reasoning": "r"}', "Analyze", 11),
        ('{"level": "Evaluate", "score": 3+10, "reasoning": "unquoted expression"}', "Evaluate", 13),
        ('{"level": "Apply", "score": 7.5, "reasoning": "r"}', "Apply", 7.5),
        ('{"level": "Apply", "score": "7 points", "reasoning": "r"}', "Apply", 7),
        ('{"level": "Create", "score": about 19, "reasoning": "unquoted words"}', "Create", 19),
        ('{"level": "Analyze", "score": "~11", "reasoning": "r"}', "Analyze", 11),
        ('<think>Let me think.</think>\n```json\n{"level": "Remember", "score": 1, "reasoning": "r"}\n```', "Remember", 1),
        ('The task asks to list facts.\n{"level": "Remember", "score": 2, "reasoning": "r"}\nDone.', "Remember", 2),
        ('{"Level": " Understand ", "Score": 6, "Reasoning": "r"}', "Understand", 6),
    ],
)
def test_parse_bloom_accepts(text, level, score):
    out = parse_bloom(text)
    assert out["level"] == level and out["score"] == score
    assert isinstance(out["reasoning"], str)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"level": "Apply", "score": 12, "reasoning": "r"}', "outside the Apply band"),
        ('{"level": "Create", "score": 22}', "outside"),
        ('{"level": "Remember", "score": 0}', "outside"),
        ('{"level": "Synthesis", "score": 17}', "not one of"),
        ('{"level": 3, "score": 8}', "not one of"),
        ('{"score": 8}', "no 'level'"),
        ('{"level": "Apply"}', "no 'score'"),
        ('{"level": "Apply", "score": "high"}', "not a number"),
        ('{"level": "Apply", "score": 9.5}', "outside the Apply band"),
        ('{"level": "Understand", "score": 6.5}', "outside the Understand band"),
        ('{"level": "Apply", "score": "7 or 8"}', "ambiguous"),
        ('{"level": "Apply", "score": "between 7 and 9"}', "ambiguous"),
        ('{"level": "Apply", "score": NaN}', "finite"),
        ('{"level": "Apply", "score": true}', "must be a number"),
        ('{"level": "Apply", "score": [8]}', "must be a number"),
        ("Apply, 8", "no JSON object"),
        ("", "no JSON object"),
    ],
)
def test_parse_bloom_rejects(text, message):
    with pytest.raises(ParseError, match=message):
        parse_bloom(text)


def test_parse_bloom_every_band_edge():
    for level, (lo, hi) in BLOOM_BANDS.items():
        assert parse_bloom(f'{{"level": "{level}", "score": {lo}}}')["score"] == lo
        assert parse_bloom(f'{{"level": "{level}", "score": {hi}}}')["score"] == hi
        for bad in (lo - 1, hi + 1):
            with pytest.raises(ParseError):
                parse_bloom(f'{{"level": "{level}", "score": {bad}}}')


def test_judge_bloom_scorer_keeps_fractional_scores():
    """A fractional judge score flows through JudgeBloomScorer as the authors keep it (7.5), whole
    scores stay int, an ambiguous one is an error (after the re-asks), never a default."""
    from tests.helpers import ScriptedJudge
    from thtb.judge.scorers import JudgeBloomScorer

    answers = {
        "q1": '{"level": "Apply", "score": 7.5, "reasoning": "r"}',
        "q2": '{"level": "Apply", "score": "about 9", "reasoning": "r"}',
        "q3": '{"level": "Apply", "score": "7 or 8", "reasoning": "r"}',
    }

    def answer(conversation):
        text = conversation[1]["content"]
        return next(a for q, a in answers.items() if q in text)

    out = JudgeBloomScorer(ScriptedJudge(answer, max_attempts=2)).score(list(answers), ["x"] * 3)
    assert out["bloom_score"].tolist()[:2] == [7.5, 9] and type(out["bloom_score"][1]) is int
    assert out["bloom_score"][2] is None and "ambiguous" in out["error"][2]


def test_parse_bloom_level():
    assert parse_bloom_level('{"level": "analyze", "reasoning": "compare"}') == {"level": "Analyze", "reasoning": "compare"}
    assert parse_bloom_level("Evaluate.")["level"] == "Evaluate"
    assert parse_bloom_level("<think>x</think> **Create**")["level"] == "Create"
    for bad in ("Synthesis", '{"level": "Synthesis"}', "It is probably Apply or Analyze", ""):
        with pytest.raises(ParseError):
            parse_bloom_level(bad)


# ------------------------------------------------------------------------------ disciplines
def test_to_snake_case():
    assert to_snake_case("Computer Science") == "computer_science"
    assert to_snake_case(" - Molecular-Biology ") == "molecular_biology"
    assert to_snake_case("1. Law") == "law"
    assert to_snake_case("  ") == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("biology, chemistry", ["biology", "chemistry"]),
        ("Computer Science, Mathematics, computer_science", ["computer_science", "mathematics"]),
        ("physics\nmathematics\n", ["physics", "mathematics"]),
        ("- physics\n- economics", ["physics", "economics"]),
        ("1. history\n2. political science", ["history", "political_science"]),
        ("Disciplines: law, ethics", ["law", "ethics"]),
        ('["linguistics", "Psychology"]', ["linguistics", "psychology"]),
        ("<think>hmm</think>music_theory,, ,", ["music_theory"]),
        ("```\nastronomy; physics\n```", ["astronomy", "physics"]),
    ],
)
def test_parse_disciplines_accepts(text, expected):
    assert parse_disciplines(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", " , ,\n", "<think>only thinking</think>", "This question is mostly about how the economy of a country grows over time"],
)
def test_parse_disciplines_rejects(text):
    with pytest.raises(ParseError):
        parse_disciplines(text)


def test_parse_description():
    assert parse_description("<think>plan</think>\n  Physics studies matter.\n It uses maths. ") == (
        "Physics studies matter. It uses maths."
    )
    for bad in ("", "   ", "<think>only</think>"):
        with pytest.raises(ParseError):
            parse_description(bad)


# ------------------------------------------------------------------------------ prompts
def test_templates_render_and_mention_contract():
    item = {"query": "Write a poem about the sea.", "response": "Waves..."}
    bloom = BLOOM.messages(item)[-1]["content"]
    for text in ("Remember: 1-3", "Understand: 4-6", "Apply: 7-9", "Analyze: 10-12", "Evaluate: 13-15", "Create: 16-21"):
        assert text in bloom
    assert item["query"] in bloom and item["response"] in bloom and '"score"' in bloom
    level_only = BLOOM_LEVEL.messages(item)[-1]["content"]
    assert item["response"] in level_only and '"score"' not in level_only
    disc = DISCIPLINES.messages(item)
    assert item["query"] in disc[-1]["content"] and item["response"] not in " ".join(m["content"] for m in disc)
    assert "lower_snake_case" in disc[-1]["content"] and DISCIPLINES.params["temperature"] == 0
    desc = DISCIPLINE_DESCRIPTION.messages({"discipline": "molecular_biology"})[-1]["content"]
    assert "molecular biology" in desc and "3 to 5 sentences" in desc
    assert set(TEMPLATES) == {"bloom", "bloom_level", "disciplines", "discipline_description", "alpagasus"}
    with pytest.raises(KeyError):
        DISCIPLINES.messages({"text": "x"})
    assert "{error}" not in BLOOM.followup_message("bad")


# ------------------------------------------------------------------------------ AlpaGasus
@pytest.mark.parametrize(
    ("text", "score", "reason"),
    [
        ("4.5\nThe response is accurate.", 4.5, "The response is accurate."),
        ("5", 5.0, ""),
        ("0\nWrong answer.", 0.0, "Wrong answer."),
        ("Score: 4.5\nGood.", 4.5, "Good."),
        ("score: 3", 3.0, ""),
        ("Accuracy score: 2.5\nPartly right.\nMisses one step.", 2.5, "Partly right. Misses one step."),
        ("4.5/5\nok", 4.5, "ok"),
        ("4 / 5", 4.0, ""),
        ("Score: 4.5 out of 5.\nok", 4.5, "ok"),
        ("**4.5**\nok", 4.5, "ok"),
        ("**Score:** 4\nok", 4.0, "ok"),
        ("Rating - 3.5", 3.5, ""),
        ("\n\n  4.0  \n\nfine", 4.0, "fine"),
        ("<think>The answer is right, maybe 6?</think>\n5\nCorrect.", 5.0, "Correct."),
        ("```\n4.5\nok\n```", 4.5, "ok"),
    ],
)
def test_parse_alpagasus_accepts(text, score, reason):
    assert parse_alpagasus(text) == {"score": score, "reason": reason}


@pytest.mark.parametrize(
    "text",
    [
        "", "   \n ", "<think>only thinking</think>", "<think>never closed 4.5",
        "5.5", "6\nexcellent", "-1", "Score: 7", "4/10", "8 out of 10",
        "4 or 5", "4, 5", "4 5", "The response is accurate. 4.5", "Score:\n4.5", "nan", "four", "4,5",
        "Explanation first.\n4.5",
    ],
)
def test_parse_alpagasus_rejects(text):
    with pytest.raises(ParseError):
        parse_alpagasus(text)


def test_alpagasus_template_is_the_authors_prompt():
    item = {"query": "Give three tips for staying healthy.", "response": "Eat well, sleep, exercise."}
    msgs = ALPAGASUS.messages(item)
    assert msgs[0] == {"role": "system", "content": "We would like to request your feedback on the performance of "
                       "AI assistant in response to the instruction and the given input displayed following."}
    user = msgs[1]["content"]
    assert item["query"] in user and item["response"] in user
    assert user.index(item["query"]) < user.index(item["response"]) < user.index("Please rate according")
    assert "a score on a scale of 0 to 5" in user and "avoiding any potential bias." in user
    assert ALPAGASUS.id == "alpagasus@1" and ALPAGASUS.params["temperature"] == 0
    assert ALPAGASUS.fields == ("query", "response")
    assert "{error}" not in ALPAGASUS.followup_message("bad")


@pytest.mark.parametrize(
    ("text", "winner"),
    [
        ('{"reasoning": "a is clearer", "winner": "a"}', "a"),
        ('```json\n{"winner": "Output (b)", "reasoning": "more complete"}\n```', "b"),
        ('<think>hmm</think>{"reasoning": "same", "winner": "TIE"}', "tie"),
        ("Output (a)", "a"),
        ("(b)", "b"),
        ("B", "b"),
        ("tie.", "tie"),
        ("Output (a) is better.\nOutput (b) is not equally good", "a"),
        ("Output (b) is indeed better than Output (a).", "b"),
        ("**Output (b)**\nIt answers the question.", "b"),
    ],
)
def test_parse_pairwise_accepts(text, winner):
    assert parse_pairwise(text)["winner"] == winner


@pytest.mark.parametrize(
    "text",
    ["", "Both outputs are good.", '{"reasoning": "x"}', '{"winner": "c"}', '{"winner": "a and b"}',
     "The output is better.", "Output (c) is better.", "Your answer is correct.",
     "Output (a) is better and output (b) is good too", "<think>unfinished"],
)
def test_parse_pairwise_rejects(text):
    with pytest.raises(ParseError):
        parse_pairwise(text)


@pytest.mark.parametrize(
    ("text", "winner"),
    [("Output (a)\nClearer.", "a"), ("**Output (b)**\nIt answers the question.", "b"), ("(b)", "b"),
     ('{"winner": "a", "reasoning": "x"}', "a"), ("Output (b) is clearly better than Output (a).", "b")],
)
def test_parse_pairwise_forced_accepts_a_or_b(text, winner):
    assert parse_pairwise_forced(text)["winner"] == winner == parse_pairwise(text)["winner"]


@pytest.mark.parametrize("text", ["Tie", "tie.\nBoth are fine.", '{"winner": "TIE"}', "**Tie**", "", "Both."])
def test_parse_pairwise_forced_rejects_a_tie(text):
    with pytest.raises(ParseError):  # never a default verdict: a tie is re-asked, then counted as a failure
        parse_pairwise_forced(text)


def test_pairwise_and_respond_templates():
    item = {"instruction": "Name a colour.", "output_a": "Red.", "output_b": "Blue."}
    for template in (PAIRWISE, PAIRWISE_FORCED):
        system, user = (m["content"] for m in template.messages(item))
        assert user.index("Name a colour.") < user.index("## Output (a)\nRed.") < user.index("## Output (b)\nBlue.")
        assert template.params["temperature"] == 0 and '"Output (a)" or "Output (b)"' in user
        # system and user ask for the same answer: a first-line verdict, then a sentence — never JSON
        assert "JSON" not in system and "first line" in system and "first line" in user
        assert "first line" in template.followup_message("bad") and "{error}" not in template.followup_message("x")
    with_tie, forced = (t.messages(item) for t in (PAIRWISE, PAIRWISE_FORCED))
    assert '"Tie"' in with_tie[1]["content"] and "Tie" in with_tie[0]["content"]
    assert '"Tie"' not in forced[1]["content"] and "no tie" in forced[0]["content"]
    assert (PAIRWISE.id, PAIRWISE_FORCED.id) == ("pairwise@3", "pairwise_forced@1")
    assert PAIRWISE_TEMPLATES == {"forced": PAIRWISE_FORCED, "with_tie": PAIRWISE}
    assert PAIRWISE.parser is parse_pairwise and PAIRWISE_FORCED.parser is parse_pairwise_forced
    assert parse_pairwise("Output (b)\nMore complete.") == {"winner": "b", "reasoning": "More complete."}
    assert RESPOND.messages({"instruction": "Hi?"}) == [{"role": "user", "content": "Hi?"}]
    assert parse_text("<think>plan</think>\n Hello ") == "Hello" and parse_text("") == ""
