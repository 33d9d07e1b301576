from captioning.core.vocab import Vocabulary, detokenize, tokenize


def test_tokenize_lowercases_and_drops_final_period():
    assert tokenize("A Man riding a horse.") == ["a", "man", "riding", "a", "horse"]


def test_emoji_names_round_trip():
    text = "woman walking: medium skin tone"
    vocab = Vocabulary.build([text])
    assert vocab.decode(vocab.encode(text)) == text
    two = "people holding hands: light skin tone, dark skin tone"
    assert detokenize(tokenize(two)) == two


def test_specials_min_count_and_unknown_words():
    vocab = Vocabulary.build(["a cat", "a dog", "a cat"], min_count=2)
    assert vocab.words[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert vocab.words[4:] == ["a", "cat"]  # most frequent first; "dog" is below min_count
    ids = vocab.encode("a dog")
    assert ids == [vocab.start_id, vocab.index["a"], vocab.unk_id, vocab.end_id]
    assert vocab.decode(ids) == "a <unk>"


def test_max_length_and_json_round_trip():
    vocab = Vocabulary.build(["one two three four"])
    assert vocab.encode("one two three four", max_length=2) == [1, vocab.index["one"], vocab.index["two"], 2]
    again = Vocabulary.from_json(vocab.to_json())
    assert again.words == vocab.words and again.encode("three") == vocab.encode("three")


def test_decode_stops_at_end_and_skips_padding():
    vocab = Vocabulary.build(["red circle"])
    ids = [1, vocab.index["red"], 0, vocab.index["circle"], 2, vocab.index["red"]]
    assert vocab.decode_tokens(ids) == ["red", "circle"]
