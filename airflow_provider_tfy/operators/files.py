"""The operator that uploads a training (or validation) file to the TrueFoundry gateway."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_tfy.operators._base import HEADER_FIELDS, TrueFoundryBaseOperator

if TYPE_CHECKING:
    from os import PathLike

    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath


class TrueFoundryUploadFileOperator(TrueFoundryBaseOperator):
    """Upload a JSONL file for fine-tuning (``POST /files``); return its file id.

    The return value is the file id, so ``training_file=upload.output`` hands it to
    :class:`~airflow_provider_tfy.operators.fine_tuning.TrueFoundryCreateFineTuningJobOperator`;
    the whole file object (``id``, ``bytes``, ``filename``, ``purpose``, ``status``, ...) is also
    pushed under the XCom key ``file``. The upload is streamed, so memory stays flat whatever the
    size. The gateway needs ``provider_name`` for uploads: give it here or in the connection's
    extra. Every run uploads anew: a duplicate file costs nothing, and a new file id is a changed
    input for the create operator, so it starts a new job.

    :param file: a local path or an ``ObjectStoragePath`` (``s3://``, ``gs://``, ``file://`` ...;
        templated).
    :param purpose: the file's purpose, ``fine-tune`` for training data (templated).
    :param validate: first read the file once and refuse it, naming the first bad line numbers,
        if it is empty, has a line that is not a JSON object, or is over 512 MB; nothing is sent.
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
