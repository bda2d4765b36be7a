"""The sync hook: moves bytes with ``requests``; every decision is in :mod:`..protocol`."""

from __future__ import annotations

import os
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

import requests
import tenacity
import urllib3
from airflow.providers.common.compat.sdk import BaseHook, mask_secret
from requests.adapters import HTTPAdapter
from requests_toolbelt import MultipartEncoder

from airflow_provider_tfy import protocol
from airflow_provider_tfy.exceptions import (
    FineTuningJobNotFound,
    TrueFoundryAPIError,
    TrueFoundryAuthError,
    TrueFoundryConnectionError,
    TrueFoundryError,
)
from airflow_provider_tfy.header_spec import CREATE_FIELDS, CreateJobArgs, HeaderArgs, with_keywords
from airflow_provider_tfy.hooks._sources import FileSource, SizedReader
from airflow_provider_tfy.metrics import JobMetric, count
from airflow_provider_tfy.protocol import Headers
from airflow_provider_tfy.provider_info import CONN_TYPE, EXTRA_FIELDS, HOOK_NAME, ui_field_behaviour

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.sdk import ObjectStoragePath

    from airflow_provider_tfy.models import FineTuningJob, TrueFoundryFile

T = TypeVar("T")


class TrueFoundryHook(BaseHook):
    """Talk to the TrueFoundry AI Gateway's fine-tuning API, retrying transient failures.

    The connection's host is the gateway base URL (with any path prefix), its password the API key;
    extras give the ``x-tfy-*`` header defaults and the timeout. 429, 5xx and transport errors are
    retried with backoff, honouring ``Retry-After``; a create only if the gateway surely did not act.

    :param truefoundry_conn_id: the Airflow connection to use.
    :param timeout: seconds per HTTP request (overrides the connection's ``timeout`` extra).
    :param max_retries: retries after each call's first attempt (default 8).
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
        # A session-level auth stops requests reading .netrc, whose credentials would replace our key.
        session.auth = _keep_headers
        adapter = _LargeBlockAdapter()
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    @cached_property
    def gateway(self) -> protocol.Gateway:
        """The sans-I/O core for this gateway: it builds the requests and reads the answers."""
        return protocol.Gateway(self.config)

    def get_fine_tuning_job(self, job_id: str, **headers: Unpack[HeaderArgs]) -> FineTuningJob:
        """Retrieve one fine-tuning job (``GET /fine_tuning/jobs/{job_id}``).

        Every method takes the header arguments (:class:`~airflow_provider_tfy.protocol.HeaderArgs`),
        which override the connection's extra, and raises a :class:`TrueFoundryError` saying what failed.
        """
        return self._call(self.gateway.retrieve(job_id, Headers.from_args(headers, "get_fine_tuning_job")))

    def upload_file(
        self,
        file: str | os.PathLike[str] | ObjectStoragePath,
        *,
        purpose: str = protocol.DEFAULT_PURPOSE,
        validate: bool = True,
        **headers: Unpack[HeaderArgs],
    ) -> TrueFoundryFile:
        """Upload a training file (``POST /files``, multipart), streamed; a retry sends it again.

        :param file: a local path, or an Airflow ``ObjectStoragePath`` (or a URL string such as ``s3://b/k``).
        :param purpose: the file's purpose, ``fine-tune`` for training data.
        :param validate: first refuse, sending nothing, a file that is empty, over 512 MB or has a line
            that is not a JSON object (naming the first bad lines).
        """
        source = FileSource(file)
        request = self.gateway.upload(
            filename=source.name, purpose=purpose, headers=Headers.from_args(headers, "upload_file")
        )
        if validate:
            source.validate()
        else:
            source.open().close()  # a missing or unreadable file is refused before any request
        uploaded = self._call(request, source)
        self.log.info(
            "Uploaded %s as file %s (%s bytes, purpose %s).",
            source.location,
            uploaded.id,
            uploaded.bytes,
            purpose,
        )
        return uploaded

    @with_keywords(CREATE_FIELDS, before="idempotency_key")
    def create_fine_tuning_job(
        self, *, idempotency_key: str | None = None, **arguments: Unpack[CreateJobArgs]
    ) -> FineTuningJob:
        """Start a fine-tuning job (``POST /fine_tuning/jobs``); never a second one by retrying.

        The keyword arguments are the gateway's body fields
        (:class:`~airflow_provider_tfy.header_spec.CreateArgs`; ``job_metadata`` is the job's
        ``metadata``), checked before any request, and the header arguments.
        Without ``idempotency_key`` a create is repeated only if the gateway surely did not act on it;
        an unknown outcome raises an error saying so. With it (1-64 of ``[A-Za-z0-9._:-]``), a live or
        succeeded job carrying it, looked for before creating and before each retry, is returned
        instead; each look, and one after creating, converges overlapping calls' jobs on one.
        """
        key = protocol.validate_idempotency_key(idempotency_key)
        headers: dict[str, Any] = dict(arguments)  # what is left once the create fields are taken
        fields = {name: headers.pop(name) for name in CREATE_FIELDS if name in headers}
        body = protocol.create_body(**fields, idempotency_key=key)
        overrides = Headers.from_args(headers, "create_fine_tuning_job")
        request = self.gateway.create(body, overrides)
        if key is not None and (existing := self._reattach(key, overrides)):
            return existing
        attempts, unsure = 0, False

        def look_then_create() -> tuple[FineTuningJob, bool]:
            nonlocal attempts, unsure
            # After an unknown outcome a keyed create looks first (the loop's wait lets the job show).
            if unsure and key is not None and (existing := self._reattach(key, overrides)):
                return existing, False
            attempts += 1
            try:
                return self.gateway.read(request, self._send(request)), True
            except TrueFoundryError as err:
                unsure = protocol.could_have_been_applied(err)
                if unsure and key is not None:
                    self.log.warning(
                        "Creating the fine-tuning job may or may not have worked (%s); looking for a job "
                        "with idempotency key %r before creating it again.",
                        err,
                        key,
                    )
                raise

        try:
            # With a key every failure may be retried: the look above keeps it to one job.
            job, created = self._loops[key is not None](look_then_create)
        except TrueFoundryError as err:
            if not protocol.could_have_been_applied(err):
                raise
            if key is None:
                raise protocol.create_outcome_unknown(err, request.target) from None
            if existing := self._reattach(key, overrides):
                return existing
            raise protocol.create_not_done(err, key, attempts) from None
        if not created:
            return job
        count(JobMetric.CREATED)
        self.log.info(
            "Created fine-tuning job %s (model %s, status %s%s).",
            job.id,
            job.model,
            job.status,
            f", idempotency key {key!r}" if key else "",
        )
        if key is None:
            return job
        try:  # an overlapping try may have created one too: both must end on the same job
            return self._converge(key, overrides, created=job) or job
        except TrueFoundryError as err:  # the job exists: never lose it over the second look
            self.log.warning(
                "Could not look for other fine-tuning jobs with idempotency key %r (%s); a later look "
                "converges them.",
                key,
                err,
            )
            return job

    def converge_fine_tuning_jobs(
        self, idempotency_key: str, **headers: Unpack[HeaderArgs]
    ) -> FineTuningJob | None:
        """Converge the jobs carrying ``idempotency_key`` on one, and return it (None if none lives).

        The survivor is the oldest job not failed or cancelled; the others in progress are cancelled
        (named in a warning where the gateway cannot cancel).
        """
        overrides = Headers.from_args(headers, "converge_fine_tuning_jobs")
        key = protocol.validate_idempotency_key(idempotency_key)
        if key is None:
            raise TypeError("converge_fine_tuning_jobs() needs an idempotency_key")
        return self._converge(key, overrides)

    def list_fine_tuning_jobs(
        self,
        *,
        job_metadata: dict[str, str] | None = None,
        page_size: int = 20,
        after: str | None = None,
        **headers: Unpack[HeaderArgs],
    ) -> Iterator[FineTuningJob]:
        """Iterate over fine-tuning jobs, newest first, fetching pages lazily.

        :param job_metadata: only jobs whose metadata holds every pair.
        :param page_size: jobs per request (1-100).
        :param after: start after this job id.
        """
        overrides = Headers.from_args(headers, "list_fine_tuning_jobs")
        wanted = protocol.validate_metadata_filter(job_metadata)
        # Built now, so bad arguments fail at the call rather than at the first next().
        self.gateway.list(page_size, after=after, job_metadata=wanted, headers=overrides)
        pages = self._pages(wanted, page_size, after, overrides)
        return (job for page in pages for job in page.jobs if protocol.carries_metadata(job, wanted))

    def cancel_fine_tuning_job(self, job_id: str, **headers: Unpack[HeaderArgs]) -> FineTuningJob:
        """Cancel a fine-tuning job (``POST /fine_tuning/jobs/{job_id}/cancel``) and return it."""
        job = self._call(self.gateway.cancel(job_id, Headers.from_args(headers, "cancel_fine_tuning_job")))
        self.log.info(
            "Asked the gateway to cancel fine-tuning job %s; its status is now %s.", job.id, job.status
        )
        return job

    def test_connection(self) -> tuple[bool, str]:
        """Make one cheap authenticated call (``GET /fine_tuning/jobs?limit=1``) and say what works."""
        try:
            request = self.gateway.list(1)
            self.gateway.read(request, self._send(request))
        except TrueFoundryConnectionError as err:
            return False, f"Could not reach the gateway: {err}"
        except TrueFoundryAuthError as err:
            detail = f" ({err.body_excerpt.rstrip('. ')})" if err.body_excerpt else ""
            return False, (
                f"The gateway at {self.config.origin} rejected the API key (HTTP {err.status_code}){detail}. "
                "Check that the API key is a valid TrueFoundry token that may read fine-tuning jobs."
            )
        except FineTuningJobNotFound:
            return False, (
                f"{self.config.base_url} does not serve TrueFoundry's fine-tuning API (HTTP 404 for "
                f"{protocol.JOBS_PATH}). Check the gateway base URL, including any path prefix such as "
                "/api/llm."
            )
        except TrueFoundryError as err:
            return False, str(err)
        return True, (
            f"Connected to the TrueFoundry gateway at {self.config.base_url}; the API key was accepted."
        )

    def _pages(
        self, wanted: dict[str, str], page_size: int, after: str | None, overrides: Headers
    ) -> Iterator[protocol.JobPage]:
        while True:
            page = self._call(
                self.gateway.list(page_size, after=after, job_metadata=wanted, headers=overrides)
            )
            yield page
            if (after := protocol.next_page_after(page.jobs, page.has_more, after)) is None:
                return

    def _reattach(self, key: str, overrides: Headers) -> FineTuningJob | None:
        if (job := self._converge(key, overrides)) is not None:
            count(JobMetric.REATTACHED)
            self.log.info(
                "Reattached to fine-tuning job %s (status %s) carrying idempotency key %r; "
                "no new job was created.",
                job.id,
                job.status,
                key,
            )
        return job

    def _converge(
        self, key: str, overrides: Headers, created: FineTuningJob | None = None
    ) -> FineTuningJob | None:
        wanted = {protocol.IDEMPOTENCY_METADATA_KEY: key}
        # ``created`` goes first, as the list may not show it yet: the list's copy is fresher.
        jobs = [created] if created else []
        for number, page in enumerate(self._pages(wanted, protocol.LOOKUP_PAGE_SIZE, None, overrides), 1):
            jobs += (job for job in page.jobs if protocol.carries_metadata(job, wanted))
            if page.has_more and number >= protocol.LOOKUP_MAX_PAGES:
                self.log.warning(
                    "Stopped looking for a fine-tuning job with idempotency key %r after the newest %d "
                    "jobs (%d pages): the gateway seems to ignore the list's metadata filter, and "
                    "older jobs are not checked.",
                    key,
                    number * protocol.LOOKUP_PAGE_SIZE,
                    number,
                )
                break
        survivor, to_cancel = protocol.converge(jobs, key)
        cancelled: list[str] = []
        for job in to_cancel:
            try:
                self._call(self.gateway.cancel(job.id, overrides))
            except TrueFoundryError as err:  # the survivor stands whatever a cancel answers
                if not (isinstance(err, TrueFoundryAPIError) and err.status_code in (404, 405)):
                    self.log.warning("Could not cancel fine-tuning job %s: %s", job.id, err)
                    continue
                self.log.warning(
                    "The gateway cannot cancel fine-tuning jobs (HTTP %s): jobs %s all carry idempotency "
                    "key %r and may all run (and be billed); %s is the one waited on. Cancel the others "
                    "at the gateway.",
                    err.status_code,
                    ", ".join(sorted({j.id for j in jobs})),
                    key,
                    survivor.id if survivor else None,
                )
                break
            cancelled.append(job.id)
        if cancelled:
            count(JobMetric.DUPLICATE_CANCELLED, len(cancelled))
        if survivor is not None and (cancelled or (created is not None and survivor.id != created.id)):
            self.log.info(
                "Fine-tuning jobs with idempotency key %r converge on %s (status %s); cancelled: %s.",
                key,
                survivor.id,
                survivor.status,
                ", ".join(cancelled) or "none",
            )
        return survivor

    def _call(self, request: protocol.Request[T], source: FileSource | None = None) -> T:
        return self._loops[request.safe_to_repeat](
            lambda: self.gateway.read(request, self._send(request, source))
        )

    @cached_property
    def _loops(self) -> dict[bool, tenacity.Retrying]:
        # Built once per hook (a poll should not pay for it): for requests safe to repeat, and the others.
        def log_retry(state: tenacity.RetryCallState) -> None:
            self.log.warning(
                "TrueFoundry call failed (%s); retry %d of %d in %.1f s.",
                state.outcome.exception() if state.outcome else None,
                state.attempt_number,
                self.retry_policy.max_retries,
                state.upcoming_sleep,
            )

        return {
            safe: tenacity.Retrying(
                **self.retry_policy.tenacity_args(safe_to_repeat=safe, before_sleep=log_retry)
            )
            for safe in (True, False)
        }

    def _send(self, request: protocol.Request[Any], source: FileSource | None = None) -> protocol.Answer:
        """One exchange: the status, headers and whole body, or the protocol's transport error."""
        deadline = time.monotonic() + request.read_timeout
        stream = None
        try:
            data: Any = request.body
            headers = request.headers
            if (upload := request.upload) is not None and source is not None:
                stream = source.open()  # afresh for each attempt: a retry streams from the start
                # ``purpose`` first, so a server knows it before the bytes.
                file_part = (upload.filename, SizedReader(stream, source), upload.content_type)
                data = MultipartEncoder(
                    fields=[(upload.purpose_field, upload.purpose), (upload.file_field, file_part)]
                )
                headers = {**headers, "Content-Type": data.content_type}
            response = self.session.request(
                request.method,
                request.url,
                headers=headers,
                data=data,
                timeout=(request.connect_timeout, request.read_timeout),
                allow_redirects=False,
                verify=self.config.verify,
                stream=True,
            )
            if stream is not None:
                # A 512 MB upload may outlast the timeout while making progress: the deadline starts now.
                deadline = time.monotonic() + request.read_timeout
            with response:
                body = _read_body(response, request, deadline)
        except requests.exceptions.SSLError as err:
            raise protocol.tls_error(request, _reason(err)) from None
        # Reading the raw body bypasses requests' wrapping of urllib3's errors, hence those here.
        except (requests.Timeout, urllib3.exceptions.ReadTimeoutError) as err:
            raise protocol.transport_error(
                request, type(err).__name__, timed_out=True, sent=not _never_sent(err)
            ) from None
        except (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError,
        ) as err:
            raise protocol.transport_error(request, _reason(err), sent=not _never_sent(err)) from None
        except OSError as err:  # requests' own errors are OSErrors too, hence last
            if isinstance(self.config.verify, str):
                raise protocol.ca_bundle_error(self.config.verify, str(err)) from None
            raise protocol.transport_error(request, _reason(err)) from None
        finally:
            if stream is not None:
                stream.close()
        return protocol.Answer(
            response.status_code, {k.lower(): v for k, v in response.headers.items()}, body
        )

    # Airflow 2.11-3.1 only: 3.2+ renders the declarative form in the provider info instead.
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


def _read_body(response: requests.Response, request: protocol.Request[Any], deadline: float) -> bytes:
    # The read timeout bounds each socket read only: bound the whole body in time and size too.
    # read1 returns whatever one socket read brings, so the deadline is checked that often.
    read = getattr(response.raw, "read1", None) or response.raw.read
    chunks, size = [], 0
    while chunk := read(64 * 1024, decode_content=True):
        chunks.append(chunk)
        size += len(chunk)
        if time.monotonic() > deadline:
            raise protocol.transport_error(request, "the body did not arrive in time", timed_out=True)
        if size > protocol.MAX_BODY_BYTES:
            raise protocol.body_too_large(request)
    return b"".join(chunks)


def _reason(err: BaseException) -> str:
    # requests nests the useful cause several deep.
    while (deeper := err.__cause__ or err.__context__) is not None:
        err = deeper
    text = str(err)
    return type(err).__name__ + (f": {text[:200]}" if text else "")


def _keep_headers(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


class _LargeBlockAdapter(HTTPAdapter):
    # urllib3 sends a body 16 KiB per read by default, which cost 40% of a 512 MB upload's speed.
    _pool_kwargs = {"blocksize": 1 << 20} if int(urllib3.__version__.split(".")[0]) >= 2 else {}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **{**self._pool_kwargs, **kwargs})

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        return super().proxy_manager_for(proxy, **{**self._pool_kwargs, **kwargs})


def _never_sent(err: BaseException) -> bool:
    # Only opening a connection raises NewConnectionError or ConnectTimeoutError; requests nests
    # them in MaxRetryError.reason and exception chains.
    seen: set[int] = set()
    pending: list[object] = [err]
    while pending:
        error = pending.pop()
        if not isinstance(error, BaseException) or id(error) in seen:
            continue  # not an error: None, or a reason given as text (ssl errors' own ``reason``)
        seen.add(id(error))
        if isinstance(error, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError):
            return True
        pending += [error.__cause__, error.__context__, getattr(error, "reason", None), *error.args]
    return False
