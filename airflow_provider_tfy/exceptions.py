"""Every error the provider raises (never with the API key); ``AirflowFailException``s skip retries."""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class TrueFoundryError(AirflowException):
    """Base class of every error this provider raises; ``retryable`` if it may pass on its own."""

    retryable: bool = False


class TrueFoundryAPIError(TrueFoundryError):
    """The gateway answered with an HTTP error ``status_code``, ``body_excerpt`` and maybe ``retry_after``."""

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
        self.body_excerpt = body_excerpt  # the start of the body, a few hundred characters at most
        self.retry_after = retry_after  # seconds, from Retry-After
        self.retryable = retryable


class TrueFoundryAuthError(TrueFoundryAPIError, AirflowFailException):
    """The gateway rejected the API key (HTTP 401) or refused access to the job (HTTP 403)."""


class FineTuningJobNotFound(TrueFoundryAPIError, AirflowFailException):
    """The gateway does not know the fine-tuning job (HTTP 404)."""


class TrueFoundryConnectionError(TrueFoundryError):
    """The gateway was unreachable or slow (retryable, but for TLS); ``request_sent``: maybe reached it."""

    retryable = True

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class TrueFoundryResponseError(TrueFoundryError):
    """The gateway answered 200, but the body is not what was asked for (retryable if not JSON at all)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class TrueFoundryConfigError(TrueFoundryError, AirflowFailException):
    """The connection or the arguments are unusable (bad URL, missing key, bad job id)."""


class _JobEnded(TrueFoundryError, AirflowFailException):
    def __init__(self, message: str, *, job: object | None = None) -> None:
        super().__init__(message)
        self.job = job  # the job as the gateway last reported it


class FineTuningJobFailed(_JobEnded):
    """The fine-tuning job ended with status ``failed``; ``job.error`` says why, when given."""


class FineTuningJobCancelled(_JobEnded):
    """The fine-tuning job ended with status ``cancelled``."""


class FineTuningJobWaitTimeout(TrueFoundryError):
    """The create operator's ``wait_timeout`` passed: job ``job_id`` is left running; a retry reattaches."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id
