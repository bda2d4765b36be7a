"""The operator that uploads a training (or validation) file to the TrueFoundry gateway."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_tfy.operators._base import HEADER_FIELDS, TrueFoundryBaseOperator

if TYPE_CHECKING:
    from os import PathLike

    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath


class TrueFoundryUploadFileOperator(TrueFoundryBaseOperator):
    """Upload a JSONL file for fine-tuning (``POST /files``), streamed; return its file id.

    The whole file object is pushed as XCom ``file``. The gateway needs ``provider_name`` here or
    in the connection's extra. Every run uploads anew (a new file id: a new job downstream).

    :param file: a local path or an ``ObjectStoragePath`` (``s3://``, ``gs://``, ``file://`` ...;
        templated).
    :param purpose: the file's purpose, ``fine-tune`` for training data (templated).
    :param validate: first refuse a file that is empty, over 512 MB or has a line that is no JSON object.
    """

    template_fields: Sequence[str] = ("file", "purpose", *HEADER_FIELDS)
    ui_color = "#e8f1ff"

    def __init__(
        self,
        *,
        file: str | PathLike[str] | ObjectStoragePath,
        purpose: str = "fine-tune",
        validate: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.file = file
        self.purpose = purpose
        self.validate = validate

    def execute(self, context: Context) -> str:
        """Upload the file (the hook logs it); push the file object as ``file``; return its id."""
        uploaded = self.hook.upload_file(
            self.file, purpose=self.purpose, validate=self.validate, **self.header_overrides
        )
        context["ti"].xcom_push(key="file", value=uploaded.to_xcom())
        return uploaded.id
