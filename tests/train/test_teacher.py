"""Teacher scores land on the right texts, in pos/neg order."""

from __future__ import annotations

import pytest

from flagembed.train.teacher import add_teacher_scores


class LengthScorer:
    """Score = length of query + passage, so every score identifies its pair."""

    def __init__(self) -> None:
        self.calls = 0

    def compute_score(self, pairs: list[tuple[str, str]], **kwargs: object) -> list[float]:
        self.calls += 1
        return [float(len(q) * 1000 + len(p)) for q, p in pairs]


def test_scores_follow_pos_and_neg_order_in_one_call():
    examples = [
        {"query": "q", "pos": ["aa", "aaaa"], "neg": ["b", "bbb", "bbbbb"], "extra": 1},
        {"query": "qq", "pos": ["c"]},
    ]
    scorer = LengthScorer()
    out = add_teacher_scores(scorer, examples)
    assert scorer.calls == 1  # all pairs in one engine stream
    assert out[0]["pos_scores"] == [1002.0, 1004.0] and out[0]["neg_scores"] == [1001.0, 1003.0, 1005.0]
    assert out[1]["pos_scores"] == [2001.0] and out[1]["neg_scores"] == []
    assert out[0]["extra"] == 1 and "pos_scores" not in examples[0]  # inputs untouched
    with_instr = add_teacher_scores(scorer, examples[:1], query_instruction="Q: ")
    assert with_instr[0]["pos_scores"][0] == 4002.0


def test_bad_records_and_scorers_raise():
    with pytest.raises(ValueError, match=r"examples\[0\]"):
        add_teacher_scores(LengthScorer(), [{"pos": ["x"]}])

    class Short(LengthScorer):
        def compute_score(self, pairs, **kwargs):  # type: ignore[no-untyped-def]
            return [0.0]

    with pytest.raises(ValueError, match="2 pairs"):
        add_teacher_scores(Short(), [{"query": "q", "pos": ["a"], "neg": ["b"]}])


def test_progress_bar_over_pairs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    import sys

    from flagembed.train import teacher

    examples = [{"query": f"q{i}", "pos": ["a" * (i % 50 + 1)], "neg": ["b", "bb"]} for i in range(400)]
    plain = add_teacher_scores(LengthScorer(), examples)
    assert "Scoring" not in capsys.readouterr().err  # not a terminal: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(teacher, "SCORE_CHUNK", 500)
    scorer = LengthScorer()
    shown = add_teacher_scores(scorer, examples)
    err = capsys.readouterr().err
    assert "Scoring" in err and "/1200" in err and scorer.calls == 3
    assert shown == plain  # chunked scoring lands every score on its pair
