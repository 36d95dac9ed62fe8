"""ModelSpec: the architecture facts of a decoder LLM that sizing and timing need."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tuner.core import ConfigError, FrozenModel
from tuner.hardware._names import lookup, normalize

Dtype = Literal["bfloat16", "float16", "float32"]
AttentionKind = Literal["full", "sliding_window", "mla"]

DTYPE_BYTES: dict[str, float] = {"bfloat16": 2, "float16": 2, "float32": 4}


class ModelSpec(FrozenModel):
    """A decoder-only transformer as vLLM sees it (the text decoder of multimodal models).

    Parameter counts are derived from the architecture when not given. Attention is one of
    ``full``; ``sliding_window`` (``sliding_layers`` hold at most ``sliding_window`` tokens,
    the rest are full, as in gemma-2/3 and gpt-oss); or ``mla`` (DeepSeek: one latent of
    ``kv_lora_rank + qk_rope_head_dim`` values per token and layer, shared by all heads).

    Example:
        >>> m = ModelSpec.named("llama-3.1-8b")
        >>> m.num_layers, m.num_kv_heads, round(m.total_params / 1e9, 2)
        (32, 8, 8.03)
    """

    name: str = "custom"
    """The model's name (Hugging Face id where known)."""
    num_layers: int = Field(ge=1, le=1000)
    """Decoder layers (``num_hidden_layers``)."""
    hidden_size: int = Field(ge=1)
    """Residual stream width."""
    num_attention_heads: int = Field(ge=1)
    """Query heads."""
    num_kv_heads: int = Field(ge=1)
    """Key/value heads (GQA; equal to query heads for MHA)."""
    head_dim: int = Field(ge=1)
    """Width of one attention head."""
    intermediate_size: int = Field(ge=1)
    """Dense gated-MLP width (also the expert width unless ``moe_intermediate_size`` is set)."""
    vocab_size: int = Field(ge=1)
    """Vocabulary (embedding rows)."""
    num_experts: int = Field(default=0, ge=0)
    """Routed experts per MoE layer (0 = dense model)."""
    experts_per_token: int = Field(default=0, ge=0)
    """Experts each token is routed to (``num_experts_per_tok``)."""
    moe_intermediate_size: int | None = Field(default=None, ge=1)
    """Width of one expert's gated MLP (None = ``intermediate_size``)."""
    dtype: Dtype = "bfloat16"
    """Native weight and activation dtype (``torch_dtype``)."""
    quantization: str | None = None
    """Quantization of the checkpoint itself (``quantization_config.quant_method``), e.g. mxfp4."""
    attention: AttentionKind = "full"
    """Attention kind (see the class docstring)."""
    sliding_window: int | None = Field(default=None, ge=1)
    """Tokens a sliding-window layer attends to (and keeps in its KV cache)."""
    sliding_layers: tuple[int, ...] = ()
    """Indices of the sliding-window layers (the others are full attention)."""
    kv_lora_rank: int | None = Field(default=None, ge=1)
    """MLA latent width (DeepSeek ``kv_lora_rank``)."""
    qk_rope_head_dim: int | None = Field(default=None, ge=0)
    """MLA decoupled RoPE key width, stored next to the latent."""
    q_lora_rank: int | None = Field(default=None, ge=1)
    """MLA query low-rank width (None = full-rank query projection)."""
    qk_nope_head_dim: int | None = Field(default=None, ge=0)
    """MLA per-head non-RoPE query/key width."""
    v_head_dim: int | None = Field(default=None, ge=1)
    """MLA per-head value width."""
    tie_word_embeddings: bool = False
    """The LM head reuses the input embedding."""
    attention_bias: bool = False
    """QKV projections have biases (Qwen2, gpt-oss)."""
    max_position_embeddings: int = Field(default=8192, ge=1)
    """Longest context the model supports: vLLM's derived ``max_model_len``."""
    extra_params: int = Field(default=0, ge=0)
    """Parameters outside the text decoder that vLLM also loads (vision tower, projector)."""
    total_params: int = Field(default=0, ge=0)
    """All parameters (0 = derive from the architecture)."""
    active_params: int = Field(default=0, ge=0)
    """Parameters used per token: all but the unrouted experts (0 = derive)."""

    @model_validator(mode="after")
    def _check_and_derive(self) -> ModelSpec:
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.num_experts and not 1 <= self.experts_per_token <= self.num_experts:
            raise ValueError(
                f"experts_per_token ({self.experts_per_token}) must be in 1..num_experts "
                f"({self.num_experts}) for an MoE model"
            )
        if self.attention == "sliding_window":
            if self.sliding_window is None or not self.sliding_layers:
                raise ValueError(
                    "attention='sliding_window' needs sliding_window and sliding_layers"
                )
            bad = [i for i in self.sliding_layers if not 0 <= i < self.num_layers]
            if bad:
                raise ValueError(f"sliding_layers {bad} are outside 0..{self.num_layers - 1}")
        if self.attention == "mla" and (self.kv_lora_rank is None or self.qk_rope_head_dim is None):
            raise ValueError("attention='mla' needs kv_lora_rank and qk_rope_head_dim")
        # Frozen: fill the derived counts once, through object.__setattr__.
        if not self.total_params:
            object.__setattr__(self, "total_params", self._count_params(active=False))
        if not self.active_params:
            object.__setattr__(self, "active_params", self._count_params(active=True))
        return self

    # --- parameter accounting (also used by the memory model) -------------------------------

    @property
    def expert_width(self) -> int:
        """Width of one expert's MLP."""
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def embedding_params(self) -> int:
        """Input embedding parameters."""
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """LM head parameters (0 when tied to the embedding)."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def attention_params_per_layer(self) -> int:
        """Q, K, V, O projections (and QKV biases) of one layer."""
        h, nq, hd = self.hidden_size, self.num_attention_heads, self.head_dim
        if self.attention == "mla":
            rope, lora = self.qk_rope_head_dim or 0, self.kv_lora_rank or 0
            nope, vd = self.qk_nope_head_dim or hd, self.v_head_dim or hd
            q = (
                h * self.q_lora_rank + self.q_lora_rank * nq * (nope + rope)
                if self.q_lora_rank
                else h * nq * (nope + rope)
            )
            return q + h * (lora + rope) + lora * nq * (nope + vd) + nq * vd * h
        qkv = h * (nq + 2 * self.num_kv_heads) * hd
        bias = (nq + 2 * self.num_kv_heads) * hd if self.attention_bias else 0
        return qkv + bias + nq * hd * h

    @property
    def expert_params(self) -> int:
        """One expert's gated MLP (gate, up, down)."""
        return 3 * self.hidden_size * self.expert_width

    @property
    def mlp_params_per_layer(self) -> int:
        """Dense MLP, or every expert plus the router, of one layer."""
        if self.num_experts:
            return self.num_experts * self.expert_params + self.hidden_size * self.num_experts
        return 3 * self.hidden_size * self.intermediate_size

    def _count_params(self, *, active: bool) -> int:
        mlp = self.mlp_params_per_layer
        if active and self.num_experts:
            mlp -= (self.num_experts - self.experts_per_token) * self.expert_params
        per_layer = self.attention_params_per_layer + mlp + 2 * self.hidden_size
        return (
            self.num_layers * per_layer
            + self.embedding_params
            + self.lm_head_params
            + self.hidden_size
            + (0 if active else self.extra_params)
        )

    @property
    def matmul_params_per_token(self) -> int:
        """Weights each token multiplies through: active parameters less the embedding lookup."""
        return self.active_params - self.embedding_params

    @property
    def full_attention_layers(self) -> int:
        """Layers whose KV cache grows with the whole context."""
        return self.num_layers - len(self.sliding_layers)

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_hf_config(
        cls, config: str | Path | dict[str, Any], name: str | None = None
    ) -> ModelSpec:
        """Read a Hugging Face ``config.json`` (a path to the file, its folder, or a dict).

        Nested ``text_config`` (gemma-3, llava-style multimodal models) is used for the decoder.

        Example:
            >>> ModelSpec.from_hf_config({"num_hidden_layers": 2, "hidden_size": 64,
            ...     "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100}).head_dim
            16
        """
        if isinstance(config, (str, Path)):
            path = Path(config)
            if path.is_dir():
                path = path / "config.json"
            try:
                raw = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ConfigError(
                    f"cannot read a Hugging Face config from {str(path)!r}: {e}"
                ) from None
            name = name or (path.parent.name if path.parent.name else None)
        else:
            raw = dict(config)
        return cls(**_fields_from_hf(raw, name or str(raw.get("_name_or_path") or "custom")))

    @classmethod
    def named(cls, name: str) -> ModelSpec:
        """A model shipped with the package, by Hugging Face id or short name (case-insensitive).

        Raises:
            ConfigError: The name is unknown; the message lists the closest known names.
        """
        table, ids = _shipped()
        hf_id = lookup("model", name, table, ids)
        return cls.from_hf_config(_shipped_raw()[hf_id], name=hf_id)

    @staticmethod
    def known_names() -> tuple[str, ...]:
        """Hugging Face ids of every shipped model."""
        return tuple(_shipped_raw())


def _fields_from_hf(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """Map config.json keys (Llama, Qwen, Mistral, Gemma, Phi, gpt-oss, DeepSeek) to fields."""
    top = raw
    text = dict(raw.get("text_config") or raw)
    dtype = str(
        text.get("torch_dtype") or text.get("dtype") or top.get("torch_dtype") or "bfloat16"
    )
    quant = (text.get("quantization_config") or top.get("quantization_config") or {}).get(
        "quant_method"
    )

    def req(key: str, *alts: str) -> Any:
        for k in (key, *alts):
            if text.get(k) is not None:
                return text[k]
        raise ConfigError(f"Hugging Face config for {name!r} lacks {key!r}")

    layers = int(req("num_hidden_layers", "n_layer", "num_layers"))
    hidden = int(req("hidden_size", "n_embd", "d_model"))
    heads = int(req("num_attention_heads", "n_head"))
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    experts = int(
        text.get("num_local_experts")
        or text.get("num_experts")
        or text.get("n_routed_experts")
        or 0
    )
    fields: dict[str, Any] = dict(
        name=name,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=int(req("intermediate_size", "ffn_dim", "n_inner")),
        vocab_size=int(req("vocab_size")),
        num_experts=experts,
        experts_per_token=int(text.get("num_experts_per_tok") or 0) if experts else 0,
        moe_intermediate_size=text.get("moe_intermediate_size") if experts else None,
        dtype=dtype if dtype in DTYPE_BYTES else "bfloat16",
        quantization=quant,
        tie_word_embeddings=bool(text.get("tie_word_embeddings", top.get("tie_word_embeddings"))),
        attention_bias=bool(text.get("attention_bias") or text.get("model_type") == "qwen2"),
        max_position_embeddings=int(text.get("max_position_embeddings") or 8192),
        extra_params=int(top.get("vision_params") or 0),
    )
    if text.get("kv_lora_rank"):
        fields.update(
            attention="mla",
            kv_lora_rank=text["kv_lora_rank"],
            qk_rope_head_dim=text.get("qk_rope_head_dim", 64),
            q_lora_rank=text.get("q_lora_rank"),
            qk_nope_head_dim=text.get("qk_nope_head_dim"),
            v_head_dim=text.get("v_head_dim"),
        )
    sliding = _sliding_layers(text, layers)
    if sliding:
        fields.update(
            attention="sliding_window",
            sliding_window=int(text["sliding_window"]),
            sliding_layers=sliding,
        )
    return fields


def _sliding_layers(text: dict[str, Any], layers: int) -> tuple[int, ...]:
    """Which layers use the sliding window, following vLLM's model code for each family."""
    window = text.get("sliding_window")
    if not window or text.get("use_sliding_window") is False:
        return ()
    if types := text.get("layer_types"):
        return tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    model_type = str(text.get("model_type", ""))
    if model_type == "gemma2":  # even layers are local (vllm/model_executor/models/gemma2.py)
        return tuple(range(0, layers, 2))
    if model_type.startswith("gemma3"):  # every `pattern`-th layer is global
        pattern = int(text.get("sliding_window_pattern") or 6)
        return tuple(i for i in range(layers) if (i + 1) % pattern)
    if model_type in ("mistral", "mixtral", "qwen2", "qwen3"):  # one window for every layer
        return tuple(range(layers))
    return ()


@cache
def _shipped_raw() -> dict[str, dict[str, Any]]:
    text = resources.files("tuner.hardware").joinpath("models.json").read_text()
    models: dict[str, dict[str, Any]] = json.loads(text)["models"]
    return models


@cache
def _shipped() -> tuple[dict[str, str], tuple[str, ...]]:
    """Normalised name -> Hugging Face id, with short aliases (no org, no -Instruct/-it)."""
    table: dict[str, str] = {}
    for hf_id in _shipped_raw():
        short = hf_id.split("/", 1)[1]
        for alias in (
            hf_id,
            short,
            short.removesuffix("-Instruct").removesuffix("-it"),
            short.removesuffix("-Instruct-v0.1").removesuffix("-Instruct-v0.3"),
        ):
            table.setdefault(normalize(alias), hf_id)
    # Llama 3.x: a 70B/8B without a minor version means the latest release of that size.
    table[normalize("llama-3-8b")] = "meta-llama/Llama-3.1-8B-Instruct"
    table[normalize("llama-3-70b")] = "meta-llama/Llama-3.3-70B-Instruct"
    table[normalize("Meta-Llama-3.1-8B-Instruct")] = "meta-llama/Llama-3.1-8B-Instruct"
    table[normalize("Meta-Llama-3.1-70B-Instruct")] = "meta-llama/Llama-3.1-70B-Instruct"
    for size in ("1B", "3B"):
        table[normalize(f"llama-3.2-{size}")] = f"meta-llama/Llama-3.2-{size}-Instruct"
    table[normalize("mistral-7b")] = "mistralai/Mistral-7B-Instruct-v0.3"
    table[normalize("mixtral-8x7b")] = "mistralai/Mixtral-8x7B-Instruct-v0.1"
    table[normalize("phi-3-mini")] = "microsoft/Phi-3-mini-4k-instruct"
    return table, tuple(_shipped_raw())
