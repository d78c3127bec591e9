"""
When to try a deferred message again: a pure function of its attempts so
far, its arrival time and now (the "retry rules are pure functions of
(state, now)" habit), so every schedule is testable without waiting.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    intervals: tuple = (300, 600, 1200, 2400, 3600)
    """Seconds before retry 1, 2, ...; the last one repeats."""
    max_age: float = 5 * 86400
    """Give up this many seconds after the message arrived."""

    def next_attempt(self, attempts, received_at, now):
        """
        The time of the next attempt after C{attempts} failed ones, or
        C{None} when the message has expired and must be reported.
        """
        if now - received_at >= self.max_age:
            return None
        index = min(max(attempts, 1), len(self.intervals)) - 1
        when = now + self.intervals[index]
        return min(when, received_at + self.max_age)
