"""A tiny random Llama with its own tokenizer, built locally in seconds (no model hub needed).

It exists so that a real ``vllm serve`` can be started on any machine (CPU included) to test
and demonstrate :class:`~tuner.backends.VLLMServerBackend`: its weights are random, so its text
is noise, but the engine schedules and runs it exactly like any other Llama.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tuner.core import BackendError

#: Bump when the recipe changes, so that an older build is rebuilt rather than reused.
RECIPE_VERSION = 1
_MARKER = "tuner-tiny-model.json"
_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
_WORDS_TEXT = (
    "the a of to and in is it you that he was for on are with as his they be at one have "
    "this from or had by hot word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been now "
    "find any new work part take get place made live where after back little only round man "
    "year came show every good me give our under name very through just form sentence great "
    "think say help low line differ turn cause much mean before move right boy old too same "
    "tell does set three want air well also play small end put home read hand port large spell "
    "add even land here must big high such follow act why ask men change went light kind off "
    "need house picture try us again animal point mother world near build self earth father"
)


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendError(
            f"build_tiny_model needs the {module!r} package ({e}); install it with "
            "`pip install transformers tokenizers safetensors torch` (a vLLM install has them)"
        ) from e


def _corpus(n_lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words_all = _WORDS_TEXT.split()
    lines = []
    for _ in range(n_lines):
        words = rng.choices(words_all, k=rng.randint(4, 24))
        if rng.random() < 0.3:
            words.append(str(rng.randint(0, 99_999)))
        lines.append(" ".join(words) + rng.choice([".", "!", "?", ",", ";", ":"]))
    return lines


def _spec(
    vocab_size: int, max_position_embeddings: int, seed: int, shape: dict[str, int]
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "recipe": RECIPE_VERSION,
        "vocab_size": vocab_size,
        "max_position_embeddings": max_position_embeddings,
        "seed": seed,
    }
    # Only a shape other than the default is recorded, so default builds keep their marker.
    spec.update({k: v for k, v in shape.items() if v != _DEFAULT_SHAPE[k]})
    return spec


#: The default architecture: hidden size, layers, attention heads (head_dim is always 32).
_DEFAULT_SHAPE = {"hidden_size": 64, "num_layers": 2, "num_heads": 4}


def is_tiny_model(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a complete tiny model built by :func:`build_tiny_model`."""
    marker = Path(path) / _MARKER
    try:
        return bool(json.loads(marker.read_text(encoding="utf-8")).get("recipe") == RECIPE_VERSION)
    except (OSError, ValueError, AttributeError):
        return False


def build_tiny_model(
    path: str | os.PathLike[str],
    *,
    vocab_size: int = 2048,
    max_position_embeddings: int = 4096,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
) -> Path:
    """Build a tiny random Llama and its byte-level BPE tokenizer into ``path`` (idempotent).

    The recipe (see ``VLLM_CPU.md``): a byte-level BPE tokenizer trained with ``tokenizers`` on
    generated text (vocabulary ``vocab_size``, special tokens ``<unk> <s> </s> <pad>``) saved as
    a ``PreTrainedTokenizerFast``; a ``LlamaConfig`` with hidden size 64, intermediate 128, 2
    layers, 4 heads, 2 KV heads and ``head_dim=32`` (vLLM's CPU attention rejects head sizes
    under 32); random bf16 weights saved as safetensors. About 0.3 M parameters, built in a few
    seconds. If ``path`` already holds a build of the same recipe, it is returned as is; the
    build is written to a sibling folder and renamed into place, so an interrupted build never
    leaves a half-built model behind.

    Args:
        path: The folder to build into (created; its parent must be writable).
        vocab_size: Tokenizer and embedding size (>= 300: 256 bytes + specials + merges).
        max_position_embeddings: The longest sequence the model accepts; vLLM refuses a
            ``--max-model-len`` above it.
        seed: Seeds the training text and the weights.
        hidden_size: The model width (the MLP is twice as wide).
        num_layers: The model depth.
        num_heads: Query heads of 32 dimensions each (half as many KV heads): attention's
            share of a step grows with it and with ``num_layers``.

    Returns:
        The model folder, ready for ``vllm serve <path>``.

    Raises:
        BackendError: ``transformers``, ``tokenizers`` or ``torch`` is not installed.
        ValueError: ``vocab_size`` or ``max_position_embeddings`` is out of range.

    Example:
        >>> from tuner.backends.live._tiny_model import build_tiny_model
        >>> model_dir = build_tiny_model("/tmp/tuner-tiny-llama")  # doctest: +SKIP
        >>> sorted(p.name for p in model_dir.iterdir())[:2]  # doctest: +SKIP
        ['config.json', 'generation_config.json']
    """
    if not isinstance(vocab_size, int) or vocab_size < 300:
        raise ValueError(f"build_tiny_model(vocab_size={vocab_size!r}): must be an int >= 300")
    if not isinstance(max_position_embeddings, int) or max_position_embeddings < 16:
        raise ValueError(
            f"build_tiny_model(max_position_embeddings={max_position_embeddings!r}): "
            "must be an int >= 16"
        )
    shape = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads}
    for name, value in shape.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"build_tiny_model({name}={value!r}): must be an int >= 1")
    if num_heads % 2:
        raise ValueError(
            f"build_tiny_model(num_heads={num_heads!r}): must be even (KV heads: half)"
        )
    target = Path(path).expanduser().resolve()
    spec = _spec(vocab_size, max_position_embeddings, seed, shape)
    marker = target / _MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == spec:
                return target
        except ValueError:
            pass
    if target.exists() and any(target.iterdir()) and not marker.is_file():
        raise ValueError(
            f"build_tiny_model: {target} exists, is not empty and holds no tiny model; "
            "give an empty or new folder"
        )

    tokenizers = _require("tokenizers")
    transformers = _require("transformers")
    torch = _require("torch")

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=_SPECIAL_TOKENS,
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(_corpus(20_000, seed), trainer=trainer)
        fast = transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="<unk>",
            bos_token="<s>",
            eos_token="</s>",
            pad_token="<pad>",
            model_max_length=max_position_embeddings,
        )
        fast.save_pretrained(staging)

        config = transformers.LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads // 2,
            head_dim=32,
            max_position_embeddings=max_position_embeddings,
            bos_token_id=fast.bos_token_id,
            eos_token_id=fast.eos_token_id,
            pad_token_id=fast.pad_token_id,
            tie_word_embeddings=False,
            torch_dtype="bfloat16",
        )
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(staging, safe_serialization=True)
        (staging / _MARKER).write_text(json.dumps(spec), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
