"""Search strategies behind one ask/tell interface: swap one for another in one line."""

from tuner.search._base import Measured, Proposal, Search
from tuner.search._grid import GridSearch
from tuner.search._halving import HalvingSettings, SuccessiveHalving
from tuner.search._list import ListSearch
from tuner.search._optuna import open_storage
from tuner.search._random import RandomSearch, RandomSettings
from tuner.search._shared import SharedSearch
from tuner.search._study import StudyStore
from tuner.search._tpe import TPESearch, TPESettings

__all__ = [
    "GridSearch",
    "HalvingSettings",
    "ListSearch",
    "Measured",
    "Proposal",
    "RandomSearch",
    "RandomSettings",
    "Search",
    "SharedSearch",
    "StudyStore",
    "SuccessiveHalving",
    "TPESearch",
    "TPESettings",
    "open_storage",
]
