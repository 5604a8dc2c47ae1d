"""Traffic envelopes (network calculus): the most arrivals in any window of each length.

For window lengths ΔT_k = T_s·2^k ≤ 60 s the envelope rate r_k is the largest
number of arrivals in any window (t − ΔT_k, t] divided by ΔT_k. Short windows
measure burstiness, long ones approach the mean rate. A window's count only
changes at an arrival, so the maximum is attained by a window ending at one.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from inferline.errors import ConfigError
from inferline.workload import Trace

__all__ = [
    "MAX_WINDOW_S",
    "MIN_SERVICE_S",
    "TrafficEnvelope",
    "envelope_windows",
    "planned_envelope",
]

#: Longest envelope window (paper §5.1).
MAX_WINDOW_S = 60.0
#: Floor on T_s, the shortest window, so that a very fast pipeline keeps few windows.
MIN_SERVICE_S = 0.01


def envelope_windows(service_s: float, max_window_s: float = MAX_WINDOW_S) -> tuple[float, ...]:
    """ΔT_k = T_s·2^k for k = 0, 1, … while ≤ ``max_window_s`` (T_s floored at 10 ms)."""
    if not service_s > 0 or not np.isfinite(service_s):
        raise ConfigError(f"the service time must be positive, got {service_s}", field="service_s")
    base = max(float(service_s), MIN_SERVICE_S)
    if base > max_window_s:
        return (base,)
    out = []
    w = base
    while w <= max_window_s:
        out.append(w)
        w *= 2.0
    return tuple(out)


def planned_envelope(
    trace: Trace | npt.NDArray[np.float64], windows: tuple[float, ...]
) -> npt.NDArray[np.float64]:
    """Envelope rates (qps) of a whole trace, one per window (vectorised, O(n log n) per window)."""
    a = np.asarray(trace.arrival_s if isinstance(trace, Trace) else trace, dtype=np.float64)
    out = np.zeros(len(windows))
    if a.size == 0:
        return out
    idx = np.arange(a.size)
    for k, w in enumerate(windows):
        counts = idx - np.searchsorted(a, a - w, side="right") + 1
        out[k] = counts.max() / w
    return out


@njit(cache=True)
def _advance_windows(  # type: ignore[no-untyped-def]
    buf, n_old, windows, lo, best
):
    """Two-pointer sweep: one head index per window (a deque over the shared buffer).

    ``buf[:n_old]`` were seen before, the rest are new. For every new arrival i and
    window k the heads move past arrivals ≤ buf[i] − ΔT_k, so the window holds
    i − lo[k] + 1 arrivals; each head only moves forward (amortised O(1)).
    ``best[k]`` receives the largest count over the new arrivals.
    """
    for k in range(windows.shape[0]):
        best[k] = 0
    for i in range(n_old, buf.shape[0]):
        t = buf[i]
        for k in range(windows.shape[0]):
            edge = t - windows[k]
            j = lo[k]
            while buf[j] <= edge:
                j += 1
            lo[k] = j
            c = i - j + 1
            if c > best[k]:
                best[k] = c


class TrafficEnvelope:
    """The envelope of a live arrival stream, updated incrementally.

    :meth:`observe` takes the arrivals since the previous call (sorted, not before
    earlier ones) and returns, per window, the largest rate of any window ending
    at one of them — the *live* rates the Tuner compares with the planned
    envelope. :attr:`rates` is the envelope of everything seen so far. Arrivals
    older than the longest window are dropped, so memory is bounded by the
    arrivals of one longest window.
    """

    def __init__(self, windows: tuple[float, ...]) -> None:
        if not windows:
            raise ConfigError("an envelope needs at least one window", field="windows")
        self.windows = np.asarray(windows, dtype=np.float64)
        self._buf = np.zeros(0)
        self._lo = np.zeros(len(windows), dtype=np.int64)
        self._best = np.zeros(len(windows), dtype=np.int64)
        self.rates = np.zeros(len(windows))
        self.arrivals_seen = 0

    def observe(self, arrivals_s: npt.ArrayLike) -> npt.NDArray[np.float64]:
        new = np.asarray(arrivals_s, dtype=np.float64)
        if new.size == 0:
            return np.zeros(self.windows.shape[0])
        if self._buf.size and new[0] < self._buf[-1]:
            raise ConfigError("arrivals must be observed in time order", field="arrivals_s")
        n_old = self._buf.size
        buf = np.concatenate([self._buf, new]) if n_old else new.copy()
        _advance_windows(buf, n_old, self.windows, self._lo, self._best)
        live = self._best / self.windows
        np.maximum(self.rates, live, out=self.rates)
        self.arrivals_seen += new.size
        # drop what no window can reach any more
        cut = int(self._lo.min())
        if cut > 0:
            buf = buf[cut:]
            self._lo -= cut
        self._buf = buf
        return live
