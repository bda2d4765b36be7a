"""Exceptions raised by the TrueFoundry provider.

Errors that no retry can mend (a rejected key, an unknown job, a job that failed or was
cancelled) are also ``AirflowFailException``s: Airflow fails the task without spending its task
retries, and a sensor with ``soft_fail=True`` skips instead. Messages never carry the API key.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class TrueFoundryError(AirflowException):
    """Base class of every error this provider raises.

    ``retryable`` is true for failures that may pass on their own (rate limits, 5xx, network
    errors, a garbled body): the hook retries those, and a sensor keeps waiting through them.
    """

    retryable: bool = False


class TrueFoundryAPIError(TrueFoundryError):
    """The gateway answered with an HTTP error status.

    :param status_code: the HTTP status the gateway sent.
    :param body_excerpt: the start of the response body (a few hundred characters at most).
    :param retry_after: seconds the gateway asked us to wait (``Retry-After``), if it said so.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body_excerpt: str = "",
        retry_after: float | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code  # type: ignore[assignment]  # AirflowException types it HTTPStatus
        self.body_excerpt = body_excerpt
        self.retry_after = retry_after
        self.retryable = retryable


class TrueFoundryAuthError(TrueFoundryAPIError, AirflowFailException):
    """The gateway rejected the API key (HTTP 401) or refused access to the job (HTTP 403)."""


class FineTuningJobNotFound(TrueFoundryAPIError, AirflowFailException):
    """The gateway does not know the fine-tuning job (HTTP 404)."""


class TrueFoundryConnectionError(TrueFoundryError):
    """The gateway could not be reached, or did not answer in time (retryable, but for TLS).

    :param request_sent: false only when the request certainly never reached the gateway (the
        connection was refused or never opened), so even a create may be sent again.
    """

    retryable = True

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class TrueFoundryResponseError(TrueFoundryError):
    """The gateway answered 200, but the body is not a fine-tuning job.

    A body that is not JSON at all (cut off, an HTML page from a proxy) is retryable; JSON of the
    wrong shape is not, since asking again will not change the gateway's contract.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class TrueFoundryConfigError(TrueFoundryError, AirflowFailException):
    """The connection or the arguments are unusable (bad URL, missing key, bad job id)."""


class FineTuningJobFailed(TrueFoundryError, AirflowFailException):
    """The fine-tuning job ended with status ``failed``.

    :param job: the job as the gateway last reported it (its ``error`` says why, when given).
    """

    def __init__(self, message: str, *, job: object | None = None) -> None:
        super().__init__(message)
        self.job = job


class FineTuningJobCancelled(TrueFoundryError, AirflowFailException):
    """The fine-tuning job ended with status ``cancelled``.

    :param job: the job as the gateway last reported it.
    """

    def __init__(self, message: str, *, job: object | None = None) -> None:
        super().__init__(message)
        self.job = job


class FineTuningJobWaitTimeout(TrueFoundryError):
    """The create operator's ``wait_timeout`` passed while the job was still running.

    The job is left running, not cancelled; a task retry reattaches to it and waits again (not an
    ``AirflowFailException``, so Airflow's task retries apply).

    :param job_id: the job that is still running.
    """

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id
