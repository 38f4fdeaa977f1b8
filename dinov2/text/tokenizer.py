"""CLIP's byte-level BPE tokenizer (OpenAI vocabulary ``bpe_simple_vocab_16e6.txt.gz``), as dino.txt uses it.

``Tokenizer(vocab_path).tokenize(texts, context_length=77)`` gives the released ids: ``[SOT] + BPE ids + [EOT]``,
zero-padded; a text longer than the context is truncated (never rejected) with its last id set to EOT. The literal
strings ``<|startoftext|>`` / ``<|endoftext|>`` inside a text become the special ids (as released).

Clean-up before splitting: ``ftfy.fix_text`` (when ``ftfy`` is installed), HTML unescaping twice, whitespace runs
collapsed to one space, lower case. Without ``ftfy`` only its NFC normalisation is done (``ftfy`` also repairs mojibake,
e.g. ``"cafÃ©"`` -> ``"café"``, and a few other encoding accidents; ordinary text gets identical ids either way).

The vocabulary comes from ``vocab_path`` (a file, a ``.gz`` file, a readable binary file object, or a URL downloaded
through :func:`dinov2.models.weights.download`), else from an installed package that ships the same file
(``open_clip`` or OpenAI's ``clip``); :func:`find_vocab` says which. Nothing is downloaded unless a URL is given.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import os
import unicodedata
from pathlib import Path
from typing import BinaryIO

import torch

from dinov2.models.weights import download, is_url

__all__ = ["Tokenizer", "get_tokenizer", "find_vocab", "VOCAB_FILENAME", "VOCAB_URL", "SOT", "EOT"]

VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_URL = "https://dl.fbaipublicfiles.com/dinov2/thirdparty/bpe_simple_vocab_16e6.txt.gz"  # the released copy
_PACKAGES = ("open_clip", "clip")  # installed packages that ship the OpenAI CLIP vocabulary file
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
_NUM_MERGES = 49152 - 256 - 2  # vocabulary 49408 = 256 bytes x 2 (with and without </w>) + merges + 2 specials
_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@functools.lru_cache
def _regex():
    """The ``regex`` module (optional extra ``text``; ``re`` lacks the unicode classes ``\\p{L}``)."""
    try:
        import regex
    except ImportError as err:
        raise ImportError("the dino.txt tokenizer needs the 'regex' package: pip install regex") from err
    return regex


@functools.lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Every byte -> a printable character: printable Latin-1 bytes stand for themselves, the others for 256+k."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _fix_text(text: str) -> str:
    if importlib.util.find_spec("ftfy") is not None:
        import ftfy  # optional: the released clean-up

        return ftfy.fix_text(text)
    return unicodedata.normalize("NFC", text)  # ftfy's default normalisation, without its mojibake repairs


def clean_text(text: str) -> str:
    """The released clean-up: fix the text, unescape HTML twice, collapse whitespace, lower case."""
    text = html.unescape(html.unescape(_fix_text(text))).strip()
    return _regex().sub(r"\s+", " ", text).strip().lower()


def _read_merges(vocab: str | os.PathLike | BinaryIO) -> list[tuple[str, str]]:
    if hasattr(vocab, "read"):
        data = vocab.read()
    else:
        data = Path(vocab).read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic
        data = gzip.decompress(data)
    lines = data.decode("utf-8").split("\n")[1 : _NUM_MERGES + 1]  # the first line is a header
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != _NUM_MERGES or any(len(merge) != 2 for merge in merges):
        raise ValueError(f"vocabulary {vocab!r} is not CLIP's BPE merges file ({VOCAB_FILENAME}): pass that file")
    return merges


class Tokenizer:
    """CLIP BPE: ``encode(text) -> ids``, ``decode(ids) -> text``, ``tokenize(texts, context_length) -> [n, C]``."""

    def __init__(self, vocab_path: str | os.PathLike | BinaryIO) -> None:
        merges = _read_merges(vocab_path)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {char: byte for byte, char in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.bpe_ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.cache = {SOT: SOT, EOT: EOT}
        self.sot_token_id, self.eot_token_id = self.encoder[SOT], self.encoder[EOT]
        self.vocab_size = len(vocab)

    def bpe(self, token: str) -> str:
        """Greedy BPE of one pre-split piece (byte characters): merge the lowest-ranked pair until none applies;
        returns the BPE tokens joined by spaces, the last one ending in ``</w>``."""
        if token in self.cache:
            return self.cache[token]
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[token] = " ".join(word)
        return self.cache[token]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (without start / end tokens)."""
        ids = []
        for piece in _regex().findall(_SPLIT, clean_text(text), _regex().IGNORECASE):
            piece = "".join(self.byte_encoder[byte] for byte in piece.encode("utf-8"))
            ids.extend(self.encoder[token] for token in self.bpe(piece).split(" "))
        return ids

    def decode(self, tokens) -> str:
        """Text of token ids (word ends become spaces; invalid UTF-8 is replaced)."""
        text = "".join(self.decoder[int(token)] for token in tokens)
        data = bytearray(self.byte_decoder[char] for char in text)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")

    def tokenize(self, texts: str | list[str], context_length: int = 77) -> torch.LongTensor:
        """``[len(texts), context_length]`` ids: SOT + ids + EOT, zero-padded; too long: cut, last id EOT."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            tokens = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(tokens) > context_length:
                tokens = tokens[:context_length]
                tokens[-1] = self.eot_token_id
            result[i, : len(tokens)] = torch.tensor(tokens)
        return result

    def __call__(self, texts: str | list[str], context_length: int = 77) -> torch.LongTensor:
        return self.tokenize(texts, context_length)


def find_vocab() -> Path | None:
    """The CLIP vocabulary file shipped by an installed package (``open_clip``, then ``clip``), or None.
    Packages are located, not imported."""
    for package in _PACKAGES:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            candidate = Path(folder) / VOCAB_FILENAME
            if candidate.is_file():
                return candidate
    return None


def get_tokenizer(vocab_path: str | os.PathLike | BinaryIO | None = None) -> Tokenizer:
    """The dino.txt tokenizer: vocabulary from ``vocab_path`` (file, file object or URL), else from an installed
    package (:func:`find_vocab`); ``FileNotFoundError`` naming both options when there is none."""
    if vocab_path is None:
        vocab_path = find_vocab()
        if vocab_path is None:
            raise FileNotFoundError(
                f"no CLIP BPE vocabulary ({VOCAB_FILENAME}) found: pass vocab_path='/path/to/{VOCAB_FILENAME}' "
                f"(or vocab_path='{VOCAB_URL}' to download the released copy), or install a package that ships it "
                "(pip install open_clip_torch)"
            )
    elif is_url(str(vocab_path)) and not hasattr(vocab_path, "read"):
        vocab_path = download(str(vocab_path), argument="vocab_path")
    elif not hasattr(vocab_path, "read") and not Path(vocab_path).expanduser().is_file():
        raise FileNotFoundError(
            f"vocab_path {str(vocab_path)!r} is not a file: pass the path of {VOCAB_FILENAME} or leave vocab_path "
            "unset to use the copy of an installed package (open_clip)"
        )
    if isinstance(vocab_path, (str, os.PathLike)):
        vocab_path = Path(vocab_path).expanduser()
    return Tokenizer(vocab_path)
