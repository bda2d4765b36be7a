"""The metrics: declared once, all under ``truefoundry.``, and every one documented.

That they reach Airflow's StatsD backend is asserted in the Celery stack (tests/system).
"""

from __future__ import annotations

from pathlib import Path

from airflow_provider_tfy.metrics import JobMetric

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operators.md"


def test_every_metric_is_under_the_prefix_and_documented() -> None:
    documented = DOCS.read_text()
    for metric in JobMetric:
        assert metric.stat == f"truefoundry.fine_tuning_job.{metric.value}"
        assert f"`{metric.stat}`" in documented, f"{metric.stat} is missing from docs/operators.md"
