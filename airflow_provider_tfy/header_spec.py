"""The arguments declared once: the ``x-tfy-*`` headers and the create fields.

Imports nothing of Airflow or the provider: its metadata and DAG parsing read it. (No postponed
annotations here: ``CreateArgs`` must tell its required keys at run time.)
"""

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Required, TypedDict, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class HeaderSpec:
    """One ``x-tfy-*`` header argument: what every task, hook, trigger and the connection form take."""

    name: str
    doc: str  # the ``:param`` line
    label: str  # the connection form's
    description: str
    placeholder: str
    mapping: bool = False  # an object of strings (or its JSON text), not a string
    account: bool = False  # chooses the provider account a job runs under: part of its idempotency key

    @property
    def header(self) -> str:
        """The HTTP header: ``x-tfy-`` and the name in kebab-case."""
        return "x-tfy-" + self.name.replace("_", "-")


# The one declaration: adding a header here adds it to the tasks, hook, triggers and form.
HEADERS: tuple[HeaderSpec, ...] = (
    HeaderSpec(
        "provider_name",
        "the provider-account integration (e.g. ``openai-main``)",
        "Provider account",
        "Default x-tfy-provider-name header: the name of your provider-account integration in "
        "TrueFoundry (for example openai-main), not the vendor's name. Needed when the gateway "
        "cannot tell which account a job belongs to.",
        "openai-main",
        account=True,
    ),
    HeaderSpec(
        "provider_model",
        "the provider's base model id (Vertex AI)",
        "Provider model",
        "Default x-tfy-provider-model header: the provider's base model id. Vertex AI jobs need "
        "it (for example gemini-2.0-flash-001); leave empty for OpenAI.",
        "gemini-2.0-flash-001",
        account=True,
    ),
    HeaderSpec(
        "vertex_storage_bucket_name",
        "the GCS bucket for tuning data and outputs (Vertex AI)",
        "Vertex storage bucket",
        "Default x-tfy-vertex-storage-bucket-name header: the GCS bucket holding tuning data and "
        "outputs. Only for Vertex AI jobs; leave empty otherwise.",
        "my-tuning-bucket",
        account=True,
    ),
    HeaderSpec(
        "file_purpose",
        "the file purpose",
        "File purpose",
        "Default x-tfy-file-purpose header, for example fine-tune. Usually left empty.",
        "fine-tune",
    ),
    HeaderSpec(
        "metadata",
        "an object of strings (or its JSON text)",
        "Request metadata (JSON)",
        "Default x-tfy-metadata header: a JSON object of string keys to string values, e.g. "
        '{"team": "ml-platform"}. The gateway uses it for routing, rate-limit and budget rules '
        "and metrics filters.",
        '{"team": "ml-platform"}',
        mapping=True,
    ),
)
HEADER_NAMES = {spec.name: spec.header for spec in HEADERS}


def param_lines(suffix: str = "", indent: str = "    ") -> str:
    """The header arguments' ``:param`` lines, appended to the docstrings of what takes them."""
    return "".join(f"\n{indent}:param {s.name}: ``{s.header}``, {s.doc}{suffix}." for s in HEADERS)


class HeaderArgs(TypedDict, total=False):
    """The header arguments every hook method takes (``**headers: Unpack[HeaderArgs]``).

    Each overrides the connection's extra of the same name; unset ones send no header. A typed
    mirror of :data:`~airflow_provider_tfy.header_spec.HEADERS` (a test keeps them equal).
    """

    provider_name: str | None
    provider_model: str | None
    vertex_storage_bucket_name: str | None
    file_purpose: str | None
    metadata: dict[str, str] | str | None


HeaderArgs.__doc__ = (HeaderArgs.__doc__ or "").rstrip() + "\n" + param_lines()


# What a task's and a trigger's ``hook_params`` may set: the hook's HTTP settings.
HOOK_PARAMS = frozenset({"timeout", "max_retries", "retry_delay"})


class CreateArgs(TypedDict, total=False):
    """The create arguments: the gateway's body fields (``job_metadata`` is the job's own
    ``metadata``). The hook's and ``create_body``'s keyword parameters and the create operator's
    templated fields derive from this one declaration."""

    model: Required[str]
    training_file: Required[str]
    validation_file: str | None
    method: dict[str, Any] | None
    hyperparameters: dict[str, Any] | None
    suffix: str | None
    seed: int | None
    integrations: list[dict[str, Any]] | None
    job_metadata: dict[str, str] | None


CREATE_FIELDS: tuple[str, ...] = tuple(CreateArgs.__annotations__)


class CreateJobArgs(CreateArgs, HeaderArgs, total=False):
    """What ``TrueFoundryHook.create_fine_tuning_job`` takes besides its idempotency key."""


def with_keywords(names: Iterable[str], *, before: str | None = None) -> Callable[[F], F]:
    """Give a function that takes ``**kwargs`` these keyword-only parameters in its signature,
    before the parameter ``before`` (None: before ``**kwargs``), so that ``inspect``, ``help()``
    and Airflow (which reads an operator's ``__init__`` for ``default_args``) see them. Those
    that :class:`CreateArgs` requires have no default; the others default to None."""

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        params = list(signature.parameters.values())
        at = next(
            i
            for i, p in enumerate(params)
            if p.name == before or (before is None and p.kind is p.VAR_KEYWORD)
        )
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY)
            if name in CreateArgs.__required_keys__
            else inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
            for name in names
        ]
        func.__signature__ = signature.replace(parameters=[*params[:at], *added, *params[at:]])  # type: ignore[attr-defined]
        return func

    return decorate
