"""`grpo tiny-model DIR`: a 2-layer Qwen2 causal LM with random weights and a chat-template tokenizer, offline.

It is what tests, demos and benchmarks train: it loads in milliseconds and a CPU runs about 30 GRPO steps a
second on it. Its byte-level BPE tokenizer is trained on a small built-in corpus, so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 2+2? The answer is 4. Count to ten: 1 2 3 4 5 6 7 8 9 10.",
    "<think> Let me think step by step. </think> <answer> 42 </answer>",
    "Say hi. Hello! Tell me a story about a cat, a dog and a bird.",
    "user assistant system: You are a helpful assistant.",
]


def build_tiny_model(
    out_dir: Path,
    vocab_size: int = 512,
    hidden_size: int = 32,
    layers: int = 2,
    seed: int = 0,
    reward_model: bool = False,
) -> Path:
    """Write a tiny random causal LM (or, with `reward_model`, a 1-label sequence classifier) and its tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    tokenizer_core = Tokenizer(models.BPE())
    tokenizer_core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer_core.decoder = decoders.ByteLevel()
    tokenizer_core.train_from_iterator(
        CORPUS * 4,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    config.num_labels = 1  # used only by the reward-model variant
    model = Qwen2ForSequenceClassification(config) if reward_model else Qwen2ForCausalLM(config)
    if not reward_model:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
