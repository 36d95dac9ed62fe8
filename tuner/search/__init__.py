"""Search strategies behind one ask/tell interface."""

from tuner.search._base import Proposal, Search
from tuner.search._grid import GridSearch

__all__ = ["GridSearch", "Proposal", "Search"]
