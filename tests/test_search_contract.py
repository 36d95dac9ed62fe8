"""The Search contract, run over every search strategy."""

from __future__ import annotations

from tests.contracts import SearchContract
from tuner.search import GridSearch, Search


class TestGridSearchContract(SearchContract):
    def make_search(self) -> Search:
        return GridSearch()


def test_grid_search_proposes_every_config_once_in_grid_order() -> None:
    s = GridSearch()
    s.start(SearchContract.space)
    got = []
    while (p := s.ask()) is not None:
        got.append(p.config)
    assert got == list(SearchContract.space.configs())
