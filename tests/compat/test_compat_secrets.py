"""The exemption for Airflow 3.0.x's own key leak is narrow.

The key-in-no-output check itself runs in every success run of ``test_compat_dags.py``
(:func:`compat_helpers.assert_key_in_no_output`), in each sensor mode, on every Airflow line.
"""

from __future__ import annotations

from compat_helpers import AIRFLOW_30, is_airflows_own_leak


def test_the_exemption_is_narrow() -> None:
    leak = "[debug   ] Sending request   msg=MaskSecret(value='kkkk', name=None, type='MaskSecret')"
    assert is_airflows_own_leak(leak) is AIRFLOW_30
    # Any other line with the key, on 3.0 too, is a leak.
    assert not is_airflows_own_leak("Sending request msg=GetConnection(conn_id='x') password=kkkk")
    assert not is_airflows_own_leak("MaskSecret(value='kkkk')")
    assert not is_airflows_own_leak("Got response msg=ConnectionResult(password='kkkk')")
