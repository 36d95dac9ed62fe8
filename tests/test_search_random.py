"""RandomSearch: seeded, uniform, never repeats, exhausts the space when asked to."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.contracts import SMALL, SearchContract
from tuner import Loop, Objective, SearchError, SearchSpace, ServingConfig
from tuner.backends import SimulatorBackend
from tuner.core._config import ServingConfig as Config
from tuner.search._random import RandomSearch

SPACE = SearchContract.space


def proposals(search: RandomSearch, space: SearchSpace = SPACE) -> list[Config]:
    search.start(space)
    out = []
    while (p := search.ask()) is not None:
        assert p.fidelity == 1.0
        out.append(p.config)
    return out


def test_random_search_exhausts_the_space_without_repeats() -> None:
    got = proposals(RandomSearch(seed=3))
    assert len(got) == len(SPACE)
    assert set(got) == set(SPACE.configs())


def test_random_search_stops_after_max_trials() -> None:
    assert len(proposals(RandomSearch(seed=0, max_trials=3))) == 3
    assert len(proposals(RandomSearch(seed=0, max_trials=10 * len(SPACE)))) == len(SPACE)


def test_random_search_is_reproducible_per_seed() -> None:
    assert proposals(RandomSearch(seed=7)) == proposals(RandomSearch(seed=7))
    orders = {tuple(proposals(RandomSearch(seed=s))) for s in range(6)}
    assert len(orders) > 1, "the seed must change the order"
    assert proposals(RandomSearch(seed=7)) != list(SPACE.configs())


def test_random_search_restarts_from_the_beginning_on_start() -> None:
    s = RandomSearch(seed=1, max_trials=4)
    assert proposals(s) == proposals(s)


def test_random_search_through_the_loop_records_each_config_once() -> None:
    loop = Loop(
        SimulatorBackend(), RandomSearch(seed=2, max_trials=5), Objective.minimize("total_steps")
    )
    result = loop.run(SPACE, SMALL)
    configs = [t.config for t in result.trials]
    assert len(configs) == 5 == len(set(configs))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    max_trials=st.one_of(st.none(), st.integers(1, 20)),
    values=st.lists(st.integers(1, 64), min_size=1, max_size=6, unique=True),
)
def test_random_search_proposes_distinct_configs_of_the_space(
    seed: int, max_trials: int | None, values: list[int]
) -> None:
    space = SearchSpace(
        {"max_num_seqs": values}, base=ServingConfig(max_num_batched_tokens=64, max_num_seqs=1)
    )
    got = proposals(RandomSearch(seed=seed, max_trials=max_trials), space)
    assert len(got) == len(set(got)) == min(max_trials or len(space), len(space))
    assert all(c in space for c in got)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, r"RandomSearch\.seed = -1"),
        ({"seed": 2**32}, r"RandomSearch\.seed"),
        ({"seed": True}, r"RandomSearch\.seed = True"),
        ({"seed": "0"}, r"RandomSearch\.seed = '0'"),
        ({"max_trials": 0}, r"RandomSearch\.max_trials = 0: Input should be greater"),
        ({"max_trials": 2.5}, r"RandomSearch\.max_trials = 2\.5"),
    ],
)
def test_random_search_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(SearchError, match=match):
        RandomSearch(**kwargs)  # type: ignore[arg-type]
