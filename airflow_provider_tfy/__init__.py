"""Apache Airflow provider for the TrueFoundry AI Gateway's fine-tuning API (imports nothing heavy)."""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata for Airflow's ``apache_airflow_provider`` entry point."""
    from airflow_provider_tfy.provider_info import provider_info

    return provider_info()
