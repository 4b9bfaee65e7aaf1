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
    """Per vector of a batch, the edges of its first and last ``act`` beats and of every one
    of its ``res`` beats, with no back-pressure.

    Attributes
    ----------
    act_first, act_last : numpy.ndarray
        int64 ``(B,)``.
    res : numpy.ndarray
        int64 ``(B, result_beats_per_vector)``, in the order the beats leave.
    """

    act_first: np.ndarray
    act_last: np.ndarray
    res: np.ndarray

    @classmethod
    def from_lists(cls, act_first, act_last, res) -> "Timeline":
        """The timeline of two sequences of edges and a sequence of sequences of edges, one
        per vector (any array-likes of integers)."""
        return cls(np.asarray(act_first, dtype=np.int64), np.asarray(act_last, dtype=np.int64),
                   np.asarray(res, dtype=np.int64).reshape(len(act_first), -1))

    @property
    def res_first(self) -> np.ndarray:
        return self.res[:, 0]

    @property
    def res_last(self) -> np.ndarray:
        return self.res[:, -1]

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
