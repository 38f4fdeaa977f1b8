"""The dino.txt tokenizer: ids equal to open_clip's CLIP tokenizer on tricky strings (live when open_clip is
installed; otherwise the hard-coded ids below, produced by ``open_clip_torch`` 3.3.0 ``SimpleTokenizer`` with
``ftfy`` 6.3.1), truncation, special-token strings, decode round trips, and where the vocabulary comes from."""

from __future__ import annotations

import importlib.util
import io
import sys

import pytest
import torch

from dinov2.text import tokenizer as tok

VOCAB = tok.find_vocab()
pytestmark = pytest.mark.skipif(VOCAB is None, reason="no CLIP BPE vocabulary (pip install open_clip_torch)")
HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None and importlib.util.find_spec("ftfy") is not None

# text -> ids without SOT / EOT (open_clip_torch 3.3.0, clean="lower")
REFERENCE = {
    "a photo of a dog.": [320, 1125, 539, 320, 1929, 269],
    "A PHOTO OF A DOG.": [320, 1125, 539, 320, 1929, 269],
    "123456": [272, 273, 274, 275, 276, 277],
    "&amp;lt;b&amp;gt; bold &quot;quoted&quot;": [283, 321, 285, 8911, 257, 27706, 257],
    "tabs\tand\nnewlines   and  spaces ": [29163, 537, 1218, 3418, 537, 9006],
    "café naïve æsthetic": [15304, 1097, 35689, 563, 42495, 82, 7954],
    "日本語のテキスト": [39121, 44353, 34002, 252, 21575, 2429, 228, 47121, 32421, 486],
    "emoji 🐶🚀 and ©®": [16327, 14466, 13542, 537, 31148, 8436],
    "": [],
    "it's don't we're I've I'm you'll he'd": [585, 568, 847, 713, 649, 982, 328, 1200, 328, 880, 592, 1342, 797, 1896],
    "hello, world!!! (really?) [yes] {no} #tag @user $5.99 50% a/b c\\d": [
        3306,
        267,
        1002,
        995,
        263,
        1414,
        9626,
        314,
        1958,
        316,
        346,
        871,
        348,
        258,
        3640,
        287,
        7031,
        259,
        276,
        269,
        280,
        280,
        276,
        271,
        260,
        320,
        270,
        321,
        322,
        315,
        323,
    ],
    "Ünïcödé ΑΒΓ αβγ кириллица": [
        6522,
        77,
        35689,
        66,
        7255,
        67,
        4166,
        138,
        109,
        138,
        110,
        138,
        367,
        138,
        109,
        138,
        110,
        138,
        367,
        27152,
        16701,
        16370,
        29503,
        119,
        47611,
        16701,
        141,
        228,
        27080,
    ],
    "state-of-the-art e-mail    co-operate": [1295, 268, 539, 268, 518, 268, 794, 324, 268, 2614, 1320, 268, 19306],
}
MOJIBAKE = "cafÃ© mojibake"  # ftfy repairs it to "café mojibake"
MOJIBAKE_IDS = {"ftfy": [15304, 617, 3252, 11878], "without ftfy": [3471, 127, 352, 5811, 617, 3252, 11878]}


def _open_clip_tokenizer_module():
    """open_clip's ``tokenizer.py`` alone (importing the package would import timm and its models: seconds)."""
    folder = importlib.util.find_spec("open_clip").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("_open_clip_tokenizer", f"{folder}/tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer() -> tok.Tokenizer:
    return tok.get_tokenizer()


@pytest.mark.parametrize("text", list(REFERENCE))
def test_ids_equal_the_reference(tokenizer, text):
    ids = tokenizer.tokenize([text])[0]
    want = [49406, *REFERENCE[text], 49407]
    assert ids[: len(want)].tolist() == want and not ids[len(want) :].any()


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch / ftfy not installed (the hard-coded ids still run)")
def test_ids_equal_open_clip_live(tokenizer):
    reference = _open_clip_tokenizer_module().SimpleTokenizer()
    texts = [*REFERENCE, MOJIBAKE, " ".join(["word"] * 200), "x " * 75]
    assert torch.equal(tokenizer.tokenize(texts), reference(texts))


def test_ftfy_clean_up_and_its_fallback(tokenizer, monkeypatch):
    if importlib.util.find_spec("ftfy") is not None:
        assert tokenizer.encode(MOJIBAKE) == MOJIBAKE_IDS["ftfy"]
    monkeypatch.setitem(sys.modules, "ftfy", None)  # as if ftfy were not installed: NFC normalisation only
    assert tok.Tokenizer(VOCAB).encode(MOJIBAKE) == MOJIBAKE_IDS["without ftfy"]
    assert tok.Tokenizer(VOCAB).encode("cafe\u0301") == REFERENCE["café naïve æsthetic"][:1]  # NFC: é composed


def test_truncation_keeps_the_end_token(tokenizer):
    ids = tokenizer.tokenize(" ".join(["word"] * 200))
    assert ids.shape == (1, 77) and ids[0, 0] == 49406 and ids[0, -1] == 49407 and int(ids[0].argmax()) == 76
    fits = tokenizer.tokenize("x " * 75)[0]  # 75 tokens + SOT + EOT = 77: no truncation
    assert fits[-1] == 49407 and (fits[1:-1] == tokenizer.encode("x")[0]).all()
    assert tokenizer.tokenize(["a", "b"], context_length=5).shape == (2, 5)


def test_special_token_strings(tokenizer):
    assert tokenizer.encode("x<|endoftext|>y") == [343, 49407, 344]  # released: the literal becomes the EOT id
    assert 49407 not in tokenizer.encode("<end_of_text> stays text")  # open_clip's spelling is plain text here


def test_decode_round_trips(tokenizer):
    for text in ("café naïve æsthetic", "日本語のテキスト", "emoji 🐶🚀 and ©®", "a photo of a dog."):
        decoded = tokenizer.decode(tokenizer.encode(text))  # each word ends with a space, punctuation included
        assert decoded.replace(" ", "") == text.lower().replace(" ", "") and decoded.endswith(" ")


def test_vocabulary_sources(monkeypatch, tmp_path):
    assert tok.get_tokenizer(io.BytesIO(VOCAB.read_bytes())).vocab_size == 49408  # a file object, as released
    monkeypatch.setattr(tok, "find_vocab", lambda: None)
    with pytest.raises(FileNotFoundError, match="vocab_path=.*open_clip"):
        tok.get_tokenizer()
    with pytest.raises(FileNotFoundError, match="missing.txt.gz"):
        tok.get_tokenizer(tmp_path / "missing.txt.gz")
    (tmp_path / "other.txt").write_text("header\na b\n")
    with pytest.raises(ValueError, match="not CLIP's BPE merges file"):
        tok.get_tokenizer(tmp_path / "other.txt")
