"""`grpo tiny-model DIR --tool-calling`: a tiny Qwen3 that calls a calculator tool, trained offline in seconds.

Tests and the demo need a model that really emits tool calls, so that TRL's tool loop (parse the call, run the tool,
append the result, generate on) runs on a CPU. This one is trained for a few hundred steps of plain causal-LM loss
on conversations in which a user asks an arithmetic question ("What is 3 + 4?"), the assistant calls the built-in
`calculator(expression="3 + 4")` (sandbox/builtin_tools.py), the tool answers `7` and the assistant says "The answer
is 7.". Sampled at temperature 1.0, as GRPO samples, it calls the calculator almost always, with the question's
expression about nine times in ten, and then answers with the tool's result a little less often: groups of
rollouts still hold right and wrong ones, which GRPO learns from.

Its chat template is TRL's copy of Qwen2.5's, which `trl.chat_template_utils.add_response_schema` recognises (it
compares the string), so `GRPOTrainer(tools=[...])` parses the calls with no configuration; the template is
prefix-preserving, so TRL trains with it as it is. The system prompts it was trained with show the calculator's
schemas of `tool_schemas()`: a tool with another name, parameters or docstring renders a prompt it has never seen.

Qwen3, not Qwen2 as in `tiny_model.py`: `AutoTokenizer` loads a `qwen2` checkpoint's tokenizer as `Qwen2Tokenizer`,
which replaces the saved pre-tokenizer with Qwen's own, and the model would then read other tokens than it was
trained on; for `qwen3` it keeps the saved one. (Qwen3's normalised queries and keys also learn to copy sooner.)
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sandbox.builtin_tools import calculator

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

# Marked special, as in Qwen: the end of turn is the EOS. The tool-call markers are added tokens that decode as text.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]
ASSISTANT_HEADER = "<|im_start|>assistant\n"
OPERATORS = ("+", "-", "*")
QUESTIONS = (
    "What is {}?",
    "Compute {}.",
    "How much is {}?",
    "Calculate {}.",
    "Please work out {}.",
    "Use the calculator: {}?",
)
# A second wording of the calculator's docstring (the function's, then its parameter's), as a test's environment
# might write it, so that the model is not tied to one exact system prompt.
OTHER_WORDING = (
    "Evaluate an arithmetic expression and return the result.",
    'The arithmetic expression to evaluate, for example "3 + 4".',
)

Conversation = tuple[int, list[dict[str, Any]]]  # (which of tool_schemas() its system prompt shows, its messages)


@dataclass(frozen=True)
class Recipe:
    """How the tool-calling model is built; the defaults train in 10 to 15 s on one CPU core."""

    hidden_size: int = 64
    layers: int = 4
    vocab_size: int = 1024
    steps: int = 350
    batch_size: int = 8
    learning_rate: float = 2e-3
    seed: int = 0


ATTEMPTS = 3  # seeds tried, from Recipe.seed on
MIN_RIGHT_ARGUMENTS = 0.5  # the share of held-out questions called with the right expression that a build keeps


def tool_schemas() -> list[dict[str, Any]]:
    """The calculator's schemas the model is trained with: the built-in's docstring and `OTHER_WORDING`, each with
    its result type (the function itself passed to TRL) and without (the service's stand-ins, whose signatures
    carry no return annotation)."""
    from transformers.utils.chat_template_utils import get_json_schema

    builtin = get_json_schema(calculator)
    other = copy.deepcopy(builtin)
    other["function"]["description"] = OTHER_WORDING[0]
    other["function"]["parameters"]["properties"]["expression"]["description"] = OTHER_WORDING[1]
    schemas = []
    for schema in (builtin, other):
        without_return = copy.deepcopy(schema)
        without_return["function"].pop("return")
        schemas += [schema, without_return]
    return schemas


def random_expression(rng: random.Random) -> str:
    """An arithmetic question's expression, such as `37 * 4`: two numbers below 100 and one of + - *."""
    return f"{_random_number(rng)} {rng.choice(OPERATORS)} {_random_number(rng)}"


def _random_number(rng: random.Random) -> int:
    # As many one-digit numbers as two-digit ones: questions such as "What is 6 * 8?" are common.
    return rng.randint(0, 9) if rng.random() < 0.5 else rng.randint(10, 99)


def question(expression: str, rng: random.Random) -> str:
    """A user's question about `expression`, in one of the phrasings the model was trained on."""
    return rng.choice(QUESTIONS).format(expression)


def conversation(expression: str, rng: random.Random) -> list[dict[str, Any]]:
    """The conversation the model learns: a question, a calculator call, the tool's result, the answer."""
    result = calculator(expression)
    call = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": expression}}}
    return [
        {"role": "user", "content": question(expression, rng)},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "name": "calculator", "content": result},
        {"role": "assistant", "content": f"The answer is {result}."},
    ]


def held_out_expressions(count: int = 64, seed: int = 1234) -> list[str]:
    """Expressions never used in training, for measuring how well the model calls the tool."""
    rng = random.Random(seed)
    expressions: set[str] = set()
    while len(expressions) < count:
        expressions.add(random_expression(rng))
    return sorted(expressions)


@dataclass(frozen=True)
class BuiltToolModel:
    """What `build_tiny_tool_model` wrote: where, from which seed, and how well that model calls the tool."""

    path: Path
    seed: int
    share: ToolCallShare


def build_tiny_tool_model(out_dir: Path, recipe: Recipe | None = None) -> BuiltToolModel:
    """Train and write the tool-calling tiny model and its tokenizer; deterministic for a given recipe.

    Whether a few hundred steps teach a model this small to copy the question's expression into the call depends on
    its random start: about five seeds in six do (the others copy the numbers and guess the operator). So the build
    measures what it trained on held-out questions and, below `MIN_RIGHT_ARGUMENTS`, trains again from the next
    seed, up to `ATTEMPTS` times; it keeps the last model when none reaches it (its share says so).
    """
    recipe = recipe or Recipe()
    for attempt in range(ATTEMPTS):
        seed = recipe.seed + attempt
        _write_model(out_dir, replace(recipe, seed=seed))
        share = measure_tool_calls(out_dir)
        if share.right_arguments >= MIN_RIGHT_ARGUMENTS * share.prompts:
            break
    return BuiltToolModel(out_dir, seed, share)


def _write_model(out_dir: Path, recipe: Recipe) -> None:
    import torch

    rng = random.Random(recipe.seed)
    held_out = set(held_out_expressions())
    schemas = tool_schemas()
    conversations = [
        (rng.randrange(len(schemas)), conversation(expression, rng))
        for expression in _training_expressions(rng, held_out, recipe)
    ]
    # The system prompts are the same from one conversation to the next: a few dozen show the tokenizer everything.
    tokenizer = _train_tokenizer(_render(conversations[:60], schemas), recipe.vocab_size)
    threads = torch.get_num_threads()
    # One thread: the matrices are tiny, and a second thread only contends with whatever else runs on the machine.
    torch.set_num_threads(1)
    try:
        model = _train_model(tokenizer, _rollout_tokens(tokenizer, _render(conversations, schemas)), recipe)
    finally:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _training_expressions(rng: random.Random, held_out: set[str], recipe: Recipe) -> Iterator[str]:
    produced = 0
    while produced < recipe.steps * recipe.batch_size:
        expression = random_expression(rng)
        if expression not in held_out:
            produced += 1
            yield expression


def _render(conversations: list[Conversation], schemas: list[dict[str, Any]]) -> list[str]:
    """The conversations as the chat template writes them, each with its own tool schema in the system prompt."""
    from transformers.utils.chat_template_utils import render_jinja_template
    from trl.chat_template_utils import qwen2_5_chat_template

    texts = [""] * len(conversations)
    for which, schema in enumerate(schemas):
        rows = [row for row, (shown, _) in enumerate(conversations) if shown == which]
        # Annotated as returning a str, it returns (the texts, the generation indices).
        rendered, _ = cast(
            tuple[list[str], Any],
            render_jinja_template(
                conversations=[conversations[row][1] for row in rows],
                tools=[schema],
                chat_template=qwen2_5_chat_template,
            ),
        )
        for row, text in zip(rows, rendered, strict=True):
            texts[row] = text
    return texts


def _train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from trl.chat_template_utils import qwen2_5_chat_template

    core = Tokenizer(models.BPE())
    # Digits one by one, so any number is spelled with ten tokens the model has seen; no split on spaces, so the
    # fixed system prompt and the JSON around the arguments merge into a few tokens and sequences stay short.
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIAL_TOKENS)
    core.add_tokens([AddedToken(token, special=False, normalized=False) for token in TOOL_TOKENS])
    core.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS + TOOL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=qwen2_5_chat_template,
    )


def _rollout_tokens(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> list[tuple[list[int], list[int]]]:
    """Each rendered conversation's token ids as TRL's tool loop builds them, and which ones the model must write.

    TRL tokenizes the prompt, appends the generated ids, then the tool's turn tokenized on its own, then generates
    again: so the pieces are tokenized separately here too (tokenizing the whole text would merge the assistant
    header with the answer's first word into a token the rollout never produces).
    """
    pieces: list[str] = []
    for text in texts:
        before_call, call_and_tool, answer = text.removesuffix("\n").split(ASSISTANT_HEADER)
        call, tool = call_and_tool.split("<|im_end|>", 1)
        pieces += [before_call + ASSISTANT_HEADER, call + "<|im_end|>", tool + ASSISTANT_HEADER, answer]
    encoded = tokenizer(pieces, add_special_tokens=False)["input_ids"]
    examples = []
    for start in range(0, len(encoded), 4):
        prompt, call, tool, answer = encoded[start : start + 4]
        learned = [0] * len(prompt) + [1] * len(call) + [0] * len(tool) + [1] * len(answer)
        examples.append((prompt + call + tool + answer, learned))
    return examples


def _train_model(
    tokenizer: PreTrainedTokenizerFast, examples: list[tuple[list[int], list[int]]], recipe: Recipe
) -> PreTrainedModel:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(recipe.seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.hidden_size * 2,
        num_hidden_layers=recipe.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=recipe.hidden_size // 4,
        max_position_embeddings=1024,
        # A short RoPE wavelength: what the model must learn is to copy tokens a few positions back (the expression
        # into the call, the tool's result into the answer), and it learns that sooner when near positions differ more.
        rope_parameters={"rope_type": "default", "rope_theta": 10.0},
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 30))
    model.train()
    for start in range(0, len(examples), recipe.batch_size):
        input_ids, labels = _batch(examples[start : start + recipe.batch_size], tokenizer.pad_token_id)
        # Padding sits on the right, where causal attention never looks back at it: no attention mask needed.
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        warmup.step()
    model.eval()
    return model


def _batch(examples: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[Any, Any]:
    import torch

    length = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), length), pad_id)
    labels = torch.full((len(examples), length), -100)
    for row, (ids, learned) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor([t if keep else -100 for t, keep in zip(ids, learned, strict=True)])
    return input_ids, labels


@dataclass(frozen=True)
class ToolCallShare:
    """Of `prompts` unseen arithmetic questions, how many completions (sampled at temperature 1.0, as GRPO samples)
    parse into a `calculator` call, how many of those carry the question's expression, and how many of those then
    answer with the tool's result."""

    prompts: int
    calls_calculator: int
    right_arguments: int
    right_answers: int

    def describe(self) -> str:
        """One line for people: the three shares in percent."""
        share = {name: 100 * getattr(self, name) / self.prompts for name in ("calls_calculator", "right_arguments")}
        return (
            f"of {self.prompts} unseen questions sampled at temperature 1.0, {share['calls_calculator']:.0f}% call "
            f"calculator, {share['right_arguments']:.0f}% with the right expression, "
            f"{100 * self.right_answers / self.prompts:.0f}% then answer with its result"
        )


def measure_tool_calls(
    model_dir: Path, prompts: int = 64, seed: int = 0, tool: dict[str, Any] | Callable[..., Any] = calculator
) -> ToolCallShare:
    """Sample the model on held-out questions, with `tool` (a function or its schema) in the system prompt, and
    parse its completions the way `GRPOTrainer` does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.chat_template_utils import add_response_schema, parse_response

    tokenizer: Any = add_response_schema(AutoTokenizer.from_pretrained(model_dir))
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    rng = random.Random(seed)
    expressions = held_out_expressions(prompts)
    torch.manual_seed(seed)
    prompt_ids = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question(expression, rng)}],
            tools=[tool],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        for expression in expressions
    ]
    calls, right, follow_ups = 0, 0, []
    for expression, ids, completion in zip(
        expressions, prompt_ids, _sample(model, tokenizer, prompt_ids, 48), strict=True
    ):
        tool_calls = parse_response(tokenizer, completion, prefix=ids, tools=[tool]).get("tool_calls") or []
        if not tool_calls or tool_calls[0]["function"]["name"] != "calculator":
            continue
        calls += 1
        if tool_calls[0]["function"]["arguments"] == {"expression": expression}:
            right += 1
            tool_turn = f"\n<|im_start|>user\n<tool_response>\n{calculator(expression)}\n</tool_response><|im_end|>\n"
            follow_ups.append((expression, ids + completion + tokenizer.encode(tool_turn + ASSISTANT_HEADER)))
    answers = _sample(model, tokenizer, [ids for _, ids in follow_ups], 16) if follow_ups else []
    answered = sum(
        calculator(expression) in tokenizer.decode(answer)
        for (expression, _), answer in zip(follow_ups, answers, strict=True)
    )
    return ToolCallShare(prompts, calls, right, answered)


def _sample(model: Any, tokenizer: Any, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Completions sampled as GRPO samples them (temperature 1.0, no top-k or top-p), each up to its EOS."""
    import torch

    width = max(len(ids) for ids in prompt_ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompt_ids])
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompt_ids])
    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
        )
    completions = []
    for row in output[:, width:].tolist():
        end = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        completions.append(row[:end])
    return completions
