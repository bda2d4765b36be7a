"""``start_from_trigger=True`` is decided at parse time, per Airflow line.

2.10-3.0: the scheduler starts the task in the triggerer, which renders nothing, so only literal
values are taken. 3.1-3.2: the scheduler's start-from-trigger path is commented out: refused.
3.3+: started there, templated fields rendered in the triggerer. Whatever is accepted must reach
the scheduler: the serialized task keeps the flag and the trigger's arguments.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from compat_helpers import AIRFLOW_VERSION
from packaging.version import Version

from airflow_provider_tfy.sensors.fine_tuning import TrueFoundryFineTuningJobSensor

REFUSED = Version("3.1") <= AIRFLOW_VERSION < Version("3.3")
RENDERED = Version("3.3") <= AIRFLOW_VERSION
TEMPLATED = "{{ ti.xcom_pull(task_ids='create') }}"


def _sensor(job_id: str, **kwargs: object) -> TrueFoundryFineTuningJobSensor:
    return TrueFoundryFineTuningJobSensor(
        task_id="wait", job_id=job_id, deferrable=True, start_from_trigger=True, **kwargs
    )


def test_without_deferrable_it_is_refused() -> None:
    with pytest.raises(ValueError, match="needs deferrable=True"):
        TrueFoundryFineTuningJobSensor(task_id="wait", job_id="ftjob-1", start_from_trigger=True)


@pytest.mark.parametrize("job_id", ["ftjob-1", TEMPLATED], ids=["literal", "templated"])
def test_parse_time_decision(job_id: str) -> None:
    if REFUSED:
        with pytest.raises(ValueError, match=r"not supported on Airflow 3\.1-3\.2"):
            _sensor(job_id)
    elif job_id == TEMPLATED and not RENDERED:
        with pytest.raises(ValueError, match="takes no templated job_id"):
            _sensor(job_id)
    else:
        sensor = _sensor(job_id, timeout=timedelta(minutes=5))
        assert sensor.start_from_trigger is True
        assert sensor.start_trigger_args.trigger_kwargs["job_id"] == job_id
        assert sensor.start_trigger_args.next_method == "execute_complete"


@pytest.mark.skipif(REFUSED, reason="refused at parse time on 3.1-3.2")
def test_the_serialized_task_keeps_it() -> None:
    from airflow import DAG
    from airflow.serialization import serialized_objects

    # What the scheduler reads: DagSerialization on 3.3+, SerializedDAG before.
    serializer = getattr(serialized_objects, "DagSerialization", None) or serialized_objects.SerializedDAG
    with DAG(dag_id="sft_compat", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        _sensor("ftjob-1", timeout=300)
    task = serializer.from_dict(serializer.to_dict(dag)).get_task("wait")

    kwargs = task.start_trigger_args.trigger_kwargs
    kwargs = kwargs.get("__var", kwargs)  # 3.x keeps them encoded until the trigger row is made
    assert task.start_from_trigger is True
    assert (kwargs["job_id"], kwargs["timeout"]) == ("ftjob-1", 300)
