from flagembed.engine import tokenize


def test_matches_tokenizer_truncation_and_counts(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    texts = ["the cells", "the cancer cells of the human brain are " * 5, "a", "the " * 7]
    out = tokenize(tok, texts, max_length=8)
    expected = tok(texts, truncation=True, max_length=8)["input_ids"]
    assert out.ids == expected
    full = tok(texts)["input_ids"]
    assert out.truncated.tolist() == [len(x) > 8 for x in full]
    assert out.num_truncated == 2
