"""When to ask again: backoff, Retry-After, and whether a failed attempt may have been applied."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_tfy.exceptions import (
    TrueFoundryAPIError,
    TrueFoundryConfigError,
    TrueFoundryConnectionError,
    TrueFoundryError,
)

if TYPE_CHECKING:
    import tenacity

# Eight retries with backoff from 1 s capped at 30 s wait at least 60 s in all: a one-minute
# gateway blip passes inside a single call.
DEFAULT_MAX_RETRIES = 8
DEFAULT_RETRY_DELAY = 1.0
MAX_BACKOFF = 30.0
# A Retry-After up to this is honoured inside the call; a longer one is left to the next poll,
# so one call never blocks a worker for longer than the gateway's blip is likely to last.
MAX_RETRY_AFTER = 60.0


def could_have_been_applied(error: BaseException) -> bool:
    """Whether the gateway may have acted on the attempt that ended in ``error``.

    Only two outcomes prove it did not: the request never left (connection refused or never
    opened: ``request_sent`` is false), or the gateway answered with a 4xx, 429 included, which
    refuses the request. A 5xx, a reset or a timeout after sending, or a 2xx with an unreadable
    body may all follow a job the gateway created.
    """
    if isinstance(error, TrueFoundryConfigError):
        return False  # raised before any request
    if isinstance(error, TrueFoundryConnectionError):
        return error.request_sent
    if isinstance(error, TrueFoundryAPIError):
        return not 400 <= int(error.status_code) < 500
    return True


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before asking again after a transient failure.

    :param max_retries: retries after the first attempt within one call.
    :param retry_delay: the first backoff in seconds; it doubles per retry, up to ``max_delay``.
    :param max_delay: the backoff's cap.
    :param max_retry_after: the longest ``Retry-After`` honoured within one call.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    retry_delay: float = DEFAULT_RETRY_DELAY
    max_delay: float = MAX_BACKOFF
    max_retry_after: float = MAX_RETRY_AFTER

    @classmethod
    def from_params(cls, *, max_retries: Any = None, retry_delay: Any = None) -> RetryPolicy:
        """Validate user-facing hook parameters (``None`` keeps the default)."""
        max_retries = DEFAULT_MAX_RETRIES if max_retries is None else max_retries
        retry_delay = DEFAULT_RETRY_DELAY if retry_delay is None else retry_delay
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise TrueFoundryConfigError(
                f"max_retries must be a whole number 0 or more, got {max_retries!r}."
            )
        if (
            isinstance(retry_delay, bool)
            or not isinstance(retry_delay, int | float)
            or not 0 <= retry_delay < math.inf
        ):
            raise TrueFoundryConfigError(
                f"retry_delay must be a number of seconds 0 or more, got {retry_delay!r}."
            )
        return cls(max_retries, float(retry_delay), max(MAX_BACKOFF, float(retry_delay)))

    def backoff(self, retry_number: int, rng: Callable[[], float] = random.random) -> float:
        """Exponential backoff with jitter for the n-th retry (1-based).

        Half the step is fixed and half random: callers that failed together spread out, and a
        wait is never near zero, so a struggling gateway is not hammered.
        """
        step = min(self.max_delay, self.retry_delay * 2 ** min(retry_number - 1, 30))
        return step / 2 + rng() * step / 2

    def should_retry(self, retry_number: int, error: BaseException, *, safe_to_repeat: bool = True) -> bool:
        """Whether retry ``retry_number`` (1-based) of one call should happen after ``error``.

        A request that is not ``safe_to_repeat`` (a create) is repeated only when the gateway
        certainly did not act on it (:func:`could_have_been_applied`).
        """
        if retry_number > self.max_retries or not isinstance(error, TrueFoundryError) or not error.retryable:
            return False
        if not safe_to_repeat and could_have_been_applied(error):
            return False
        retry_after = getattr(error, "retry_after", None)
        return retry_after is None or retry_after <= self.max_retry_after

    def wait_before_retry(
        self,
        retry_number: int,
        error: BaseException,
        rng: Callable[[], float] = random.random,
        *,
        safe_to_repeat: bool = True,
    ) -> float | None:
        """Seconds to wait before retry ``retry_number`` within one call, or None to give up."""
        if not self.should_retry(retry_number, error, safe_to_repeat=safe_to_repeat):
            return None
        retry_after = getattr(error, "retry_after", None)
        return retry_after if retry_after is not None else self.backoff(retry_number, rng)

    def tenacity_args(
        self,
        *,
        safe_to_repeat: bool = True,
        deadline: float | None = None,
        before_sleep: Callable[[tenacity.RetryCallState], Any] | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments of ``tenacity.Retrying`` and ``tenacity.AsyncRetrying`` for one call.

        The hook's loop and the trigger's are both built from this, so they retry alike: what
        :meth:`should_retry` allows, after :meth:`wait_before_retry`, and never a sleep that would
        end past ``deadline`` (wall-clock ``time.time()``): a wait's last poll is at its deadline.
        """

        def error(state: tenacity.RetryCallState) -> BaseException:
            assert state.outcome is not None  # tenacity asks only after an attempt
            return state.outcome.exception() or Exception()

        return {
            "retry": lambda state: self.should_retry(
                state.attempt_number, error(state), safe_to_repeat=safe_to_repeat
            ),
            "wait": lambda state: self.wait_before_retry(state.attempt_number, error(state)) or 0.0,
            "stop": lambda state: sleeps_past(state, deadline),
            "before_sleep": before_sleep,
            "reraise": True,
        }


def sleeps_past(state: tenacity.RetryCallState, deadline: float | None) -> bool:
    """Whether a retry loop's next sleep would end past ``deadline`` (wall clock; None: never)."""
    return deadline is not None and time.time() + state.upcoming_sleep > deadline


def wait_after_failed_poll(error: BaseException, poll_interval: float) -> float:
    """What a failure that outlasted a call's retries means for a wait (worker or deferred alike).

    Raises ``error`` if no retry can mend it; otherwise the wait goes on (one bad minute must not
    fail an hours-long wait), and this returns the seconds until the next poll: the interval, or a
    longer ``Retry-After`` honoured in full.
    """
    if not isinstance(error, TrueFoundryError) or not error.retryable:
        raise error
    return max(poll_interval, getattr(error, "retry_after", None) or 0.0)
