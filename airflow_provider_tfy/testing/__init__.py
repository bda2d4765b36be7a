"""An aiohttp-based simulator of the TrueFoundry AI Gateway fine-tuning API, for tests.

Example::

    from airflow_provider_tfy.testing import Fault, GatewaySimulator

    with GatewaySimulator() as sim:
        job = sim.add_job(statuses=("queued", "running", "succeeded"), faults=[Fault.rate_limit(1)])
        ...  # point a hook at sim.url with sim.api_key

Attributes are imported lazily: a pytest plugin imports this package at every pytest start,
and the server (asyncio, sockets) should only load when a test actually uses it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .faults import Fault
    from .jobs import ScriptedJob
    from .simulator import GatewaySimulator, RequestRecord
    from .uploads import UploadedFile

__all__ = ["Fault", "GatewaySimulator", "RequestRecord", "ScriptedJob", "UploadedFile"]

_LAZY = {
    "Fault": ".faults",
    "ScriptedJob": ".jobs",
    "GatewaySimulator": ".simulator",
    "RequestRecord": ".simulator",
    "UploadedFile": ".uploads",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
