"""A tiny random-weight LLaVA folder, laid out like JoyCaption Beta One's Hugging Face folder.

JoyCaption Beta One (fancyfeast/llama-joycaption-beta-one-hf-llava) is a LLaVA model built on
a SigLIP so400m vision tower at 384 px / patch 14 (27 x 27 = 729 image tokens; SigLIP has no
class token, so every patch is kept: the "full" feature strategy) and a Llama 3.1 text model
with Llama 3 chat headers. The folder written here keeps that image geometry and the folder's
kinds of files (config.json, model.safetensors, generation_config.json, tokenizer and
processor files, a chat template) with tiny widths, so `Captioner.load` reads it through
exactly the code path it uses for the real folder. Its captions are random characters.

The tokenizer is built in code (no hub): one token per character over printable ASCII plus
the typographic marks JoyCaption's prompts use, with Llama 3 style special tokens and the
`<image>` token that the processor expands to one token per image patch.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    SiglipImageProcessor,
    SiglipVisionConfig,
)

IMAGE_SIZE = 384
PATCH_SIZE = 14
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 729, as JoyCaption Beta One
IMAGE_TOKEN = "<image>"
BOS, EOS, EOT, PAD, UNK = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
    "<unk>",
)
HEADER_START, HEADER_END = "<|start_header_id|>", "<|end_header_id|>"
SPECIAL_TOKENS = (BOS, EOS, EOT, PAD, HEADER_START, HEADER_END, IMAGE_TOKEN)
# Printable ASCII plus the marks in JoyCaption's prompt templates (em dash, curly quotes, ...).
CHARACTERS = (
    string.printable.replace("\x0b", "").replace("\x0c", "") + "\u2014\u201c\u201d\u2019\u2026"
)

# Llama 3 chat layout; the image token opens the first user turn, so a conversation whose
# contents are plain strings (the way JoyCaption's own code sends them) carries one image.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- set state = namespace(image_placed=false) %}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'user' and not state.image_placed %}"
    "{{- '<image>' }}{%- set state.image_placed = true %}"
    "{%- endif %}"
    "{{- message['content'] | trim }}{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer with Llama 3 style special tokens and `<image>`."""
    vocab = {UNK: 0}
    for char in CHARACTERS:
        vocab.setdefault(char, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(token, special=True) for token in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )


def build_tiny_processor() -> LlavaProcessor:
    """The LLaVA processor: 384 px squares normalised to [-1, 1] (mean 0.5, std 0.5)."""
    image_processor = SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tiny_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=0,
    )


def tiny_llava_config(tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    """JoyCaption's LLaVA layout with tiny widths (hidden 32, two layers per tower)."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=ids[BOS],
        eos_token_id=[ids[EOS], ids[EOT]],
        pad_token_id=ids[PAD],
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids[IMAGE_TOKEN],
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="full",
        image_seq_length=IMAGE_TOKENS,
    )


def build_tiny_llava(folder: Path, seed: int = 0) -> Path:
    """Write a complete tiny LLaVA folder (weights from `seed`) and return its path.

    The global torch RNG is left as it was: the weights come from a forked generator.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    processor = build_tiny_processor()
    config = tiny_llava_config(processor.tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    text = config.text_config
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        pad_token_id=text.pad_token_id,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
