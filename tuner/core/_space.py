"""The search space: a list of values per knob over a base configuration."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tuner.core._config import KNOBS, ServingConfig
from tuner.core._errors import ConfigError

MAX_CONFIGS = 1_000_000
"""The most configurations a :class:`SearchSpace` may hold (it builds and checks each one)."""


class SearchSpace:
    """Every combination of the given knob values, applied over a base ``ServingConfig``.

    Values are converted to the knob's type (``8.0`` -> ``8``) and must not repeat once
    converted. A space holds at most :data:`MAX_CONFIGS` configurations.

    Combinations vLLM would refuse (for example ``enable_chunked_prefill=False`` with a budget
    below ``max_model_len``) raise :class:`ConfigError` listing them, unless
    ``skip_invalid=True``, which drops them and keeps them in :attr:`excluded` with the reason.

    Example:
        >>> space = SearchSpace({"max_num_batched_tokens": [32, 64, 512],
        ...                      "long_prefill_token_threshold": [0, 32]},
        ...                     base=ServingConfig(max_num_seqs=8))
        >>> len(space)
        6
    """

    def __init__(
        self,
        dimensions: Mapping[str, Sequence[Any]],
        base: ServingConfig | None = None,
        *,
        skip_invalid: bool = False,
    ) -> None:
        if not isinstance(dimensions, Mapping):
            raise ConfigError(
                f"SearchSpace: dimensions must be a mapping knob -> list of values, "
                f"got {type(dimensions).__name__}"
            )
        if base is None:
            base = ServingConfig()
        elif not isinstance(base, ServingConfig):
            raise ConfigError(f"SearchSpace.base: expected a ServingConfig, got {base!r}")
        dims: dict[str, tuple[Any, ...]] = {}
        for knob, values in dimensions.items():
            if knob not in KNOBS:
                raise ConfigError(
                    f"SearchSpace: unknown knob {knob!r}; allowed: {', '.join(KNOBS)}"
                )
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise ConfigError(f"SearchSpace[{knob!r}] = {values!r}: must be a list of values")
            vals = tuple(values)
            if not vals:
                raise ConfigError(f"SearchSpace[{knob!r}]: needs at least one value, got []")
            converted = []
            for v in vals:  # each value on its own, so the error names the knob and value
                try:
                    converted.append(base.convert(knob, v))
                except ConfigError as e:
                    prefix = f"ServingConfig.{knob} = "
                    clauses = [c for c in str(e).split("; ") if c.startswith(prefix)]
                    why = clauses[0].split(": ", 1)[1] if clauses else str(e)
                    raise ConfigError(
                        f"SearchSpace[{knob!r}]: value {v!r} is not allowed: {why}"
                    ) from None
            # Compare what the config holds: 8 and 8.0, or True and 1, are one point, not two.
            if len(set(converted)) != len(converted):
                raise ConfigError(
                    f"SearchSpace[{knob!r}] = {list(vals)!r}: values repeat once converted to "
                    f"the knob's type ({converted!r}); give each value once"
                )
            dims[knob] = tuple(converted)
        size = math.prod(len(v) for v in dims.values())
        if size > MAX_CONFIGS:
            shape = " x ".join(f"{len(v)} {k}" for k, v in dims.items())
            raise ConfigError(
                f"SearchSpace: {shape} values make {size:,} configurations, more than the "
                f"{MAX_CONFIGS:,} a space may hold (every one is built and checked up front); "
                "give fewer values per knob (e.g. powers of two) and let TPESearch or "
                "RandomSearch sample them rather than a grid"
            )
        self._base = base
        self._dims = dims
        configs: list[ServingConfig] = []
        excluded: list[tuple[dict[str, Any], str]] = []
        for combo in itertools.product(*dims.values()):
            changes = dict(zip(dims, combo, strict=False))
            try:
                configs.append(base.replace(**changes))
            except ConfigError as e:
                excluded.append((changes, str(e)))
        if excluded and not skip_invalid:
            shown = "\n".join(f"  - {c}: {why}" for c, why in excluded[:10])
            more = f"\n  ... and {len(excluded) - 10} more" if len(excluded) > 10 else ""
            raise ConfigError(
                f"SearchSpace: {len(excluded)} of {len(excluded) + len(configs)} combinations "
                f"are configurations vLLM refuses:\n{shown}{more}\n"
                "Fix the values, or pass skip_invalid=True to search only the valid ones."
            )
        if not configs:
            raise ConfigError("SearchSpace: no valid configuration in the space")
        self._configs = tuple(configs)
        self._members = frozenset(configs)
        self._excluded = tuple(excluded)

    @property
    def base(self) -> ServingConfig:
        """The configuration every point starts from."""
        return self._base

    @property
    def dimensions(self) -> dict[str, tuple[Any, ...]]:
        """Knob -> candidate values, in the given order."""
        return dict(self._dims)

    @property
    def excluded(self) -> tuple[tuple[dict[str, Any], str], ...]:
        """Combinations dropped by ``skip_invalid=True``, each with vLLM's reason."""
        return self._excluded

    def configs(self) -> tuple[ServingConfig, ...]:
        """Every valid configuration, in grid order (the last knob varies fastest)."""
        return self._configs

    def __iter__(self) -> Iterator[ServingConfig]:
        return iter(self._configs)

    def __len__(self) -> int:
        return len(self._configs)

    def __contains__(self, config: object) -> bool:
        return config in self._members

    def point(self, config: ServingConfig) -> dict[str, Any]:
        """The knob values of ``config`` on this space's dimensions."""
        return {k: getattr(config, k) for k in self._dims}

    def __repr__(self) -> str:
        dims = ", ".join(f"{k}={list(v)}" for k, v in self._dims.items())
        return f"SearchSpace({dims}; {len(self)} configs)"
