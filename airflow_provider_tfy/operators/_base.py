"""What every TrueFoundry task takes: the connection, the header arguments and ``hook_params``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_tfy.header_spec import HEADER_NAMES, HOOK_PARAMS, param_lines, with_keywords

if TYPE_CHECKING:
    from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook
    from airflow_provider_tfy.protocol import HeaderArgs

HEADER_FIELDS: tuple[str, ...] = tuple(HEADER_NAMES)
SHARED_PARAMS = (
    "\n    :param truefoundry_conn_id: the TrueFoundry connection; its extra holds the header defaults."
    + param_lines(suffix=" (templated)")
    + "\n    :param hook_params: HTTP settings for the hook: ``timeout``, ``max_retries``, ``retry_delay``."
)


class TrueFoundryBaseOperator(BaseOperator):
    """Base of the TrueFoundry sensor and operators: connection, header arguments, HTTP settings."""

    template_fields: Sequence[str] = HEADER_FIELDS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__ and ":param truefoundry_conn_id:" not in cls.__doc__:
            cls.__doc__ = cls.__doc__.rstrip() + SHARED_PARAMS + "\n"

    @with_keywords(HEADER_FIELDS)  # Airflow reads the signature for default_args and expand()
    def __init__(
        self,
        *,
        truefoundry_conn_id: str = "truefoundry_default",
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        headers = {name: kwargs.pop(name, None) for name in HEADER_FIELDS}
        super().__init__(**kwargs)
        if unknown := set(hook_params or {}) - HOOK_PARAMS:
            raise ValueError(
                f"hook_params has unknown keys {sorted(unknown)}; it takes {sorted(HOOK_PARAMS)} "
                "(Airflow's retries and timeouts are the task's own arguments, not the hook's)."
            )
        self.truefoundry_conn_id = truefoundry_conn_id
        self.hook_params = dict(hook_params or {})
        for name, value in headers.items():
            setattr(self, name, value)

    @cached_property
    def hook(self) -> TrueFoundryHook:
        """The hook, made once per task run (one HTTP session, one connection read)."""
        from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook

        return TrueFoundryHook(self.truefoundry_conn_id, **self.hook_params)

    @property
    def header_overrides(self) -> HeaderArgs:
        """The rendered header arguments, as passed to the hook and the trigger."""
        return cast("HeaderArgs", {name: getattr(self, name) for name in HEADER_FIELDS})
