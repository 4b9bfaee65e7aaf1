"""When each vector of a batch enters and leaves an engine: the result of every engine's
cycle model, and the one place that turns it into the figures a run reports.

Edges are counted from the rising edge that accepts the batch's first ``act`` beat (edge 0),
as :file:`sim/harness/stream_harness.v` counts them: a batch's ``cycles`` are its last
``res`` beat's edge minus its first ``act`` beat's edge, plus one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["NEVER", "Timeline"]

#: An edge before every other: what "the previous vector" did before the first one.
NEVER = -(1 << 62)


@dataclass(frozen=True)
class Timeline:
    """Per vector of a batch, the edges of its first and last ``act`` beats and of its first
    and last ``res`` beats (int64 arrays of shape ``(B,)``), with no back-pressure.

    Attributes
    ----------
    act_first, act_last, res_first, res_last : numpy.ndarray
    """

    act_first: np.ndarray
    act_last: np.ndarray
    res_first: np.ndarray
    res_last: np.ndarray

    @classmethod
    def from_lists(cls, act_first, act_last, res_first, res_last) -> "Timeline":
        """The timeline of four sequences of edges (any array-like of integers)."""
        return cls(*(np.asarray(values, dtype=np.int64)
                     for values in (act_first, act_last, res_first, res_last)))

    @property
    def batch(self) -> int:
        return int(self.act_first.size)

    @property
    def cycles(self) -> int:
        """First ``act`` beat accepted to last ``res`` beat received, both counted."""
        return int(self.res_last[-1]) + 1

    @property
    def first_result_latency(self) -> int:
        """Cycles from the first vector's last ``act`` beat to its first ``res`` beat: the
        engine's ``latency`` plus what each engine's model says comes before its first result
        (the rest of the first row block's work; lfsr's index stage settling after a load;
        permdiag's and cim's live work)."""
        return int(self.res_first[0] - self.act_last[0])
