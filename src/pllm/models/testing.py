"""A tiny random model + tokenizer for tests: built offline in milliseconds, deterministic per seed,
and a real `LlamaForCausalLM` (q_proj/k_proj/v_proj/o_proj...) so peft, TRL and soft-prompt code can
wrap it exactly as they would wrap the embedded model."""

from __future__ import annotations

import torch

from pllm.models.hf import HFGenerator

UNK, PAD, BOS, EOS = "<unk>", "<pad>", "<s>", "</s>"
CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [UNK, PAD, BOS, EOS, *CHAT_TOKENS]

# Words the tokenizer knows: digits and Yes/No for label scoring, plus words common in task prompts.
_CORPUS = """
0 1 2 3 4 5 6 7 8 9 10 Yes No yes no . , ? ! : ; ' " - ( ) [ ] / * # = %
the a an of to and or in on for with is are was were be this that it its as at by from not
what which who how why when answer question rating rate score review reviews title text user profile
product movie book paper article tweet news category label output input example examples
good bad great terrible excellent poor love hate like best worst nice fine ok very really
I you he she we they my your his her our their me him us them
please give only one word number between following based on previous past history write generate
sentence summary headline abstract paraphrase personalized style topic citation reference
"""

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def tiny_vocab(vocab_words: list[str] | None = None) -> dict[str, int]:
    """Special tokens first, then the built-in words, then `vocab_words` (duplicates dropped)."""
    vocab: dict[str, int] = {}
    for word in [*SPECIAL_TOKENS, *_CORPUS.split(), *(vocab_words or [])]:
        if word not in vocab:
            vocab[word] = len(vocab)
    return vocab


def make_tiny_tokenizer(vocab_words: list[str] | None = None):  # -> PreTrainedTokenizerFast
    """A word-level tokenizer (whitespace/punctuation split, unknown words -> <unk>) with a chat template.

    Word level keeps the prompt/continuation boundary trivial: " Yes" after a prompt is one token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab=tiny_vocab(vocab_words), unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token=UNK, pad_token=PAD, bos_token=BOS,
                                  eos_token=EOS, additional_special_tokens=CHAT_TOKENS)
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def make_tiny_generator(seed: int = 0, vocab_words: list[str] | None = None) -> HFGenerator:
    """A random 2-layer Llama (hidden 32, 4 heads, 2 KV heads) behind `HFGenerator`, on CPU, float32.

    Weights use a larger init scale than usual so logits are peaked: greedy decoding then has no
    near-ties, and batched vs one-by-one generation agree exactly. The global RNG is left untouched.
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = make_tiny_tokenizer(vocab_words)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        initializer_range=0.2, tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return HFGenerator.from_model(model, tokenizer, model_id=f"tiny-llama-seed{seed}")
