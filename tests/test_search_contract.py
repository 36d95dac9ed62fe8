"""The Search contract, run over every search strategy."""

from __future__ import annotations

from tests.contracts import SearchContract
from tuner.search import GridSearch, Search
from tuner.search._halving import SuccessiveHalving
from tuner.search._random import RandomSearch
from tuner.search._tpe import TPESearch


class TestGridSearchContract(SearchContract):
    def make_search(self) -> Search:
        return GridSearch()


class TestRandomSearchContract(SearchContract):
    def make_search(self) -> Search:
        return RandomSearch(seed=0)


class TestTPESearchContract(SearchContract):
    def make_search(self) -> Search:
        return TPESearch(seed=0, n_trials=20, n_startup_trials=3, max_repeats=20)


class TestSuccessiveHalvingContract(SearchContract):
    def make_search(self) -> Search:
        return SuccessiveHalving(n_configs=6, min_fidelity=0.5, eta=2)


class TestSuccessiveHalvingOverTPEContract(SearchContract):
    def make_search(self) -> Search:
        inner = TPESearch(seed=1, n_trials=6, n_startup_trials=2, max_repeats=20)
        return SuccessiveHalving(inner, n_configs=6, min_fidelity=0.5, eta=2)


def test_grid_search_proposes_every_config_once_in_grid_order() -> None:
    s = GridSearch()
    s.start(SearchContract.space)
    got = []
    while (p := s.ask()) is not None:
        got.append(p.config)
    assert got == list(SearchContract.space.configs())
