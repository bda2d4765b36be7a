"""The sync hook: moves bytes with ``requests``; every decision is in :mod:`..protocol`."""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import requests
import tenacity
import urllib3
from airflow.providers.common.compat.sdk import BaseHook, mask_secret

from airflow_provider_tfy import protocol
from airflow_provider_tfy.exceptions import (
    FineTuningJobNotFound,
    TrueFoundryAuthError,
    TrueFoundryConnectionError,
    TrueFoundryError,
)
from airflow_provider_tfy.provider_info import CONN_TYPE, EXTRA_FIELDS, HOOK_NAME, ui_field_behaviour

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_tfy.models import FineTuningJob

T = TypeVar("T")


class TrueFoundryHook(BaseHook):
    """Talk to the TrueFoundry AI Gateway's fine-tuning API.

    The connection's host is the gateway base URL (with any path prefix), its password the API
    key; optional extras give defaults for the ``x-tfy-*`` headers and the request timeout.
    Transient failures (429, 500, 502, 503, 504, connection errors, timeouts) are retried with
    exponential backoff and jitter, honouring ``Retry-After``.

    :param truefoundry_conn_id: the Airflow connection to use.
    :param timeout: seconds per HTTP request; overrides the connection's ``timeout`` extra.
    :param max_retries: retries after the first attempt of each call (default 8).
    :param retry_delay: the first retry's backoff in seconds (default 1), doubling up to 30.
    """

    conn_name_attr = "truefoundry_conn_id"
    default_conn_name = "truefoundry_default"
    conn_type = CONN_TYPE
    hook_name = HOOK_NAME

    def __init__(
        self,
        truefoundry_conn_id: str = default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry_delay: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.truefoundry_conn_id = truefoundry_conn_id
        self.timeout = (
            None if timeout is None else protocol.positive_number(timeout, "timeout", "TrueFoundryHook")
        )
        self.retry_policy = protocol.RetryPolicy.from_params(max_retries=max_retries, retry_delay=retry_delay)

    @cached_property
    def config(self) -> protocol.GatewayConfig:
        """The gateway settings, read from the Airflow connection once per hook."""
        conn = self.get_connection(self.truefoundry_conn_id)
        if conn.password:
            mask_secret(conn.password)
        return protocol.gateway_config(
            self.truefoundry_conn_id,
            host=conn.host,
            password=conn.password,
            extra=conn.extra_dejson,
            timeout=self.timeout,
        )

    @cached_property
    def session(self) -> requests.Session:
        """One session per hook, so successive polls reuse the TCP/TLS connection."""
        session = requests.Session()
        # Proxies and CA bundles may come from the environment, but .netrc credentials must not
        # replace our Authorization header: a session-level auth stops requests reading .netrc.
        session.auth = _keep_headers
        return session

    def get_fine_tuning_job(
        self,
        job_id: str,
        *,
        provider_name: str | None = None,
        provider_model: str | None = None,
        vertex_storage_bucket_name: str | None = None,
        file_purpose: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> FineTuningJob:
        """Retrieve one fine-tuning job (``GET /fine_tuning/jobs/{job_id}``).

        Header arguments override the connection's extra; unset ones send no header.

        :raises TrueFoundryAuthError: the key was rejected (401/403).
        :raises FineTuningJobNotFound: the gateway does not know the job (404).
        :raises TrueFoundryAPIError: any other HTTP error, or a transient one that outlasted retries.
        :raises TrueFoundryConnectionError: the gateway was unreachable through every retry.
        :raises TrueFoundryResponseError: the answer is not a fine-tuning job.
        """
        overrides = protocol.header_options(
            provider_name=provider_name,
            provider_model=provider_model,
            vertex_storage_bucket_name=vertex_storage_bucket_name,
            file_purpose=file_purpose,
            metadata=metadata,
        )
        request = protocol.job_request(self.config, job_id, overrides)
        return self._with_retries(
            lambda: protocol.read_job_response(self.config, request, *self._send(request), job_id=job_id)
        )

    def test_connection(self) -> tuple[bool, str]:
        """Make one cheap authenticated call (``GET /fine_tuning/jobs?limit=1``) and say what works.

        The messages name no connection id: Airflow's Test button runs this under a throwaway one.
        """
        try:
            config = self.config
            request = protocol.list_request(config, limit=1)
            protocol.read_list_response(config, request, *self._send(request))
        except TrueFoundryConnectionError as err:
            return False, f"Could not reach the gateway: {err}"
        except TrueFoundryAuthError as err:
            detail = f" ({err.body_excerpt.rstrip('. ')})" if err.body_excerpt else ""
            return False, (
                f"The gateway at {config.origin} rejected the API key (HTTP {err.status_code}){detail}. "
                "Check that the API key is a valid TrueFoundry token that may read fine-tuning jobs."
            )
        except FineTuningJobNotFound:
            return False, (
                f"{config.base_url} does not serve TrueFoundry's fine-tuning API (HTTP 404 for "
                f"{protocol.JOBS_PATH}). Check the gateway base URL, including any path prefix "
                "such as /api/llm."
            )
        except TrueFoundryError as err:
            return False, str(err)
        return True, f"Connected to the TrueFoundry gateway at {config.base_url}; the API key was accepted."

    def _send(self, request: protocol.Request) -> tuple[int, dict[str, str], bytes]:
        deadline = time.monotonic() + request.deadline
        try:
            response = self.session.request(
                request.method,
                request.url,
                headers=request.headers,
                timeout=(request.connect_timeout, request.read_timeout),
                allow_redirects=False,
                verify=self.config.verify,
                stream=True,
            )
            with response:
                body = self._read_body(response, request, deadline)
        except requests.exceptions.SSLError as err:
            raise protocol.tls_error(request, _reason(err)) from None
        except requests.Timeout as err:
            raise protocol.transport_error(request, type(err).__name__, timed_out=True) from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
            raise protocol.transport_error(request, _reason(err)) from None
        except OSError as err:  # requests' own errors are OSErrors too, hence last
            if isinstance(self.config.verify, str):
                raise protocol.ca_bundle_error(self.config.verify, str(err)) from None
            raise protocol.transport_error(request, _reason(err)) from None
        return response.status_code, {k.lower(): v for k, v in response.headers.items()}, body

    @staticmethod
    def _read_body(response: requests.Response, request: protocol.Request, deadline: float) -> bytes:
        # The read timeout bounds each socket read only; this bounds the whole body, so a server
        # that trickles bytes cannot hold a worker forever, and a runaway body cannot fill memory.
        # read1 returns whatever one socket read brings, so the deadline is checked that often.
        read = getattr(response.raw, "read1", None) or response.raw.read
        chunks, size = [], 0
        while chunk := _read_chunk(read, request):
            chunks.append(chunk)
            size += len(chunk)
            if time.monotonic() > deadline:
                raise protocol.transport_error(request, "the body did not arrive in time", timed_out=True)
            if size > protocol.MAX_BODY_BYTES:
                raise protocol.body_too_large(request)
        return b"".join(chunks)

    def _with_retries(self, call: Callable[[], T]) -> T:
        policy = self.retry_policy
        try:
            # Most calls succeed at once: they should not pay for building the retry machinery.
            return call()
        except TrueFoundryError as err:
            if not policy.should_retry(1, err):
                raise
            first_failure: TrueFoundryError | None = err

        def attempt() -> T:
            # Tenacity's first attempt replays the failure above, so it counts and waits as usual.
            nonlocal first_failure
            failure, first_failure = first_failure, None
            if failure is not None:
                raise failure
            return call()

        def error_of(state: tenacity.RetryCallState) -> BaseException:
            assert state.outcome is not None  # tenacity asks only after an attempt
            return state.outcome.exception() or Exception()

        def log_retry(state: tenacity.RetryCallState) -> None:
            self.log.warning(
                "TrueFoundry call failed (%s); retry %d of %d in %.1f s.",
                error_of(state),
                state.attempt_number,
                policy.max_retries,
                state.upcoming_sleep,
            )

        retrying = tenacity.Retrying(
            retry=lambda state: policy.should_retry(state.attempt_number, error_of(state)),
            wait=lambda state: policy.wait_before_retry(state.attempt_number, error_of(state)) or 0.0,
            before_sleep=log_retry,
            reraise=True,
        )
        return retrying(attempt)

    # Connection form for Airflow 2.11-3.1; Airflow 3.2+ renders the declarative form in the
    # provider info instead and never calls these.
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the extra fields as wtforms widgets (Airflow before 3.2)."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import StringField
        from wtforms.validators import Optional

        return {
            name: StringField(
                lazy_gettext(spec["label"]),
                widget=BS3TextFieldWidget(),
                validators=[Optional()],
                description=spec["description"],
            )
            for name, spec in EXTRA_FIELDS.items()
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return the hidden, relabelled and placeholder fields (Airflow before 3.2)."""
        return ui_field_behaviour()


def _read_chunk(read: Callable[..., bytes], request: protocol.Request) -> bytes:
    # Reading the raw stream bypasses requests' own wrapping of urllib3's errors: map them here.
    try:
        return read(64 * 1024, decode_content=True)
    except urllib3.exceptions.ReadTimeoutError as err:
        raise protocol.transport_error(request, type(err).__name__, timed_out=True) from None
    except urllib3.exceptions.HTTPError as err:  # a cut-off body, a reset, a bad encoding
        raise protocol.transport_error(request, _reason(err)) from None


def _reason(err: BaseException) -> str:
    """A short cause for a connection error: requests nests the useful part several deep."""
    cause: BaseException | None = err
    while cause is not None and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
    text = str(cause or err)
    return type(cause or err).__name__ + (f": {text[:200]}" if text else "")


def _keep_headers(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request
