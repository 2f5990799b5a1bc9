"""Tiny CLIP and T5 tokenizers built in code (no hub, no sentencepiece model file).

Both share one small English word list, so ordinary portrait prompts tokenize to varied ids
(a whole word is one token; anything else falls back to characters), which is what prompt
encoding, caching and truncation tests need.
"""

from __future__ import annotations

from tokenizers import pre_tokenizers
from transformers import CLIPTokenizer, T5Tokenizer

_WORD_TEXT = """
a an the of and with in on at by for to from as is are this that it her his their its
portrait photo photograph photography picture image shot close up closeup headshot face
woman man girl boy person people model lady old young child smiling smile eyes eye hair
skin lips nose mouth cheek freckles beard glasses hat dress shirt jacket coat suit
light lighting natural window soft hard rim back key fill studio daylight sunlight golden
hour shadow shadows dark bright warm cold cool color colour black white red blue green
yellow brown grey gray film grain cinematic dramatic moody lens mm bokeh depth field
shallow sharp focus detailed detail details texture realistic photorealistic high quality
professional camera canon nikon sony kodak portra analog background blurred outdoor indoor
street city park forest beach sky sun night evening morning looking viewer front side
profile three quarter view upper body half full wearing holding standing sitting long
short curly straight blonde brunette expression serious calm happy sad neutral gentle
"""
WORDS = tuple(dict.fromkeys(_WORD_TEXT.split()))

CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
T5_SPECIALS = ("<pad>", "</s>", "<unk>")
_T5_CHARS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()[]{}/&%+*=_#@"
)


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE: every byte (alone and word-final) plus left-to-right merges per word."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for char in alphabet:
        add(char)
    for char in alphabet:
        add(char + "</w>")
    for word in WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        current = parts[0]
        for part in parts[1:]:
            if (current, part) not in merges:
                merges.append((current, part))
            current += part
            add(current)
    add(CLIP_BOS)
    add(CLIP_EOS)
    return vocab, merges


def build_tiny_clip_tokenizer() -> CLIPTokenizer:
    """CLIP tokenizer over the tiny vocabulary; pad = eos = <|endoftext|> as in CLIP-L."""
    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges)


def t5_pieces() -> list[tuple[str, float]]:
    """Unigram pieces: specials first (pad 0, eos 1, unk 2 as in T5), words, then characters."""
    pieces = [(token, 0.0) for token in T5_SPECIALS]
    pieces.append(("\u2581", -2.0))
    pieces += [("\u2581" + word, -5.0) for word in WORDS]
    pieces += [(char, -10.0) for char in _T5_CHARS]
    return pieces


def build_tiny_t5_tokenizer() -> T5Tokenizer:
    """T5 tokenizer over the tiny vocabulary, with no extra <extra_id_n> tokens."""
    return T5Tokenizer(vocab=t5_pieces(), extra_ids=0)
