"""The timing of the two-bank input buffer of the dense, ternary and lfsr engines
(:class:`~secateur.hdl.actbuffer.ActivationBuffer`; the ternary engine has the same banks
inline).

The ``act`` stream writes a vector's ``beats`` beats into the write bank, one per cycle;
the edge that writes the last one makes the bank *full*, and the writer moves to the other
bank. A bank is written again only after the reader *released* it: the edge of the last
issue of the vector it holds clears it, so its first beat is accepted at the next edge.
The reader (the engine's sequencer) is engine-specific and is passed in as a function.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .timeline import NEVER, Timeline

__all__ = ["Reader", "two_bank_timeline"]

#: ``reader(vector, full, released) -> (release, res)``: the vector's bank is full from the
#: edge after ``full``; the previous vector released the other bank at ``released``
#: (:data:`~secateur.models.perf.timeline.NEVER` for the first vector). The reader returns
#: the edge of the vector's last issue and those of its ``res`` beats.
Reader = Callable[[int, int, int], tuple[int, np.ndarray]]


def two_bank_timeline(beats: int, batch: int, reader: Reader) -> Timeline:
    """The timeline of ``batch`` vectors of ``beats`` ``act`` beats each, offered back to back
    from edge 0, through two banks read by ``reader``.

    Parameters
    ----------
    beats : int
        ``act`` beats per vector, ``>= 1``.
    batch : int
        Vectors, ``>= 1``.
    reader : Reader
        The engine's sequencer.

    Returns
    -------
    Timeline
    """
    act_first, act_last, res, release = [], [], [], []
    for vector in range(batch):
        # A bank takes the vector after next once that vector's reader released it, and the
        # stream writes one beat per cycle.
        first = 0 if vector == 0 else act_last[-1] + 1
        if vector >= 2:
            first = max(first, release[-2] + 1)
        full = first + beats - 1
        released = release[-1] if release else NEVER
        done, results = reader(vector, full, released)
        act_first.append(first)
        act_last.append(full)
        res.append(results)
        release.append(done)
    return Timeline.from_lists(act_first, act_last, res)
