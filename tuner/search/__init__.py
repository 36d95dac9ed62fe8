"""Search strategies behind one ask/tell interface: swap one for another in one line."""

from tuner.search._base import Measured, Proposal, Search
from tuner.search._grid import GridSearch
from tuner.search._halving import SuccessiveHalving
from tuner.search._list import ListSearch
from tuner.search._random import RandomSearch
from tuner.search._tpe import TPESearch

__all__ = [
    "GridSearch",
    "ListSearch",
    "Measured",
    "Proposal",
    "RandomSearch",
    "Search",
    "SuccessiveHalving",
    "TPESearch",
]
