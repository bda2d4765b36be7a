"""Scenario 5: uploading a 512 MB training file, ``upload_file`` against bare ``requests`` uploads.

A JSONL file of chat records (``size_mb`` MB, 10**6 bytes each: 512 MB is inside the gateway's
512 MiB limit) is written on the fly into a temporary directory, removed at the end. Each round
uploads it once per side, in alternating order (reversed in odd rounds), to the simulator's
``POST /files`` in another process, which streams and counts what it receives:

* **ours**: ``TrueFoundryHook.upload_file(path, provider_name=..., validate=False)``. Validation
  is off in the timed comparison on purpose: it is a second, CPU-bound read of the file that
  the bare sides do not do, so with it on the ratio would time ``json.loads`` rather than the
  transfer. ``validate=True`` is measured as a row of its own (informational), in the first
  ``validate_rounds`` rounds.
* **bare, MultipartEncoder**: one ``requests.Session().post`` streaming the same multipart body
  (the ``purpose`` field, then the ``file`` part with the same file name and content type)
  through requests-toolbelt's ``MultipartEncoder`` given the open file: the usual way to stream
  a multipart upload with requests.
* **bare, generator**: the same multipart bytes from a generator of 1 MiB chunks (chunked
  transfer encoding): the fastest plain-``requests`` upload, so the stricter of the two targets.

Throughput is the file's size over the wall time of one upload; each ratio is the median of the
per-round ratios ours/bare. Memory is this process's peak RSS growth during one upload (the
kernel's high-water mark, reset before each upload; the file's page cache is not RSS), the
largest over the rounds. Every upload is checked to have arrived whole (its size as the simulator
counted it, and its SHA-256 where the simulator reports one), so a fast side cannot be a broken
one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Metric,
    SimHost,
    median,
    peak_rss_bytes,
    release_memory,
    reset_peak_rss,
    rss_bytes,
)

SCENARIO = "5. upload"
PROVIDER = "openai-main"
PURPOSE = "fine-tune"
CONTENT_TYPE = "application/octet-stream"  # what the hook sends for the file part
MB = 10**6
MiB = 2**20
GENERATOR_CHUNK = MiB

Side = Callable[[Path], None]


def run(sim: SimHost, params: dict[str, Any]) -> dict[str, Any]:
    """Time the sides; ``params``: size_mb, rounds, validate_rounds, ratio_target, memory_target_mb."""
    size = int(float(params["size_mb"]) * MB)
    folder = Path(tempfile.mkdtemp(prefix="tfy-bench-upload-"))
    try:
        path = folder / "train.jsonl"
        t0 = time.perf_counter()
        digest = write_jsonl(path, size)
        made_s = time.perf_counter() - t0
        warm_up = folder / "warm-up.jsonl"
        write_jsonl(warm_up, MB)
        return _measure(sim, params, path, digest, warm_up, made_s)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_jsonl(path: Path, size: int) -> str:
    """Write a JSONL file of chat fine-tuning records, exactly ``size`` bytes; return its SHA-256.

    Records differ (a counter in each), so nothing downstream can shortcut repeated lines; the
    last line is a padding object of the length that makes the size exact.
    """
    digest = hashlib.sha256()
    filler = "Explain the retry policy of the gateway in one paragraph, then summarise it. " * 6
    record = {
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": f"#%(i)09d: {filler}"},
            {"role": "assistant", "content": "Answer %(i)09d: retries back off exponentially."},
        ]
    }
    template = (json.dumps(record) + "\n").encode()  # a 9-digit counter makes each line differ
    body_size = max(0, size - 256)  # the records; the padding line takes the rest
    written = 0
    index = 0
    with path.open("wb") as out:

        def emit(data: bytes) -> None:
            nonlocal written
            out.write(data)
            digest.update(data)
            written += len(data)

        block: list[bytes] = []
        block_size = 0
        while True:
            line = template % {b"i": index}
            if written + block_size + len(line) > body_size:
                break
            block.append(line)
            block_size += len(line)
            index += 1
            if block_size >= 4 * MiB:
                emit(b"".join(block))
                block, block_size = [], 0
        emit(b"".join(block))
        pad = size - written - len(b'{"pad": ""}\n')
        emit(b'{"pad": "' + b"x" * pad + b'"}\n')
    if written != size or path.stat().st_size != size:
        raise RuntimeError(f"wrote {written} bytes, wanted {size}")
    return digest.hexdigest()


def _measure(
    sim: SimHost, params: dict[str, Any], path: Path, digest: str, warm_up: Path, made_s: float
) -> dict[str, Any]:
    import requests
    from requests_toolbelt import MultipartEncoder

    from airflow_provider_tfy.hooks.truefoundry import TrueFoundryHook

    url = f"{sim.url}/files"
    auth = {"Authorization": f"Bearer {sim.api_key}", "x-tfy-provider-name": PROVIDER}
    hook = TrueFoundryHook(timeout=300)
    session = requests.Session()

    def check(answer: dict[str, Any], file: Path) -> None:
        if answer.get("bytes") != file.stat().st_size:
            raise RuntimeError(f"the simulator counted {answer.get('bytes')} bytes of {file}")

    def ours(validate: bool) -> Side:
        def upload(file: Path) -> None:
            uploaded = hook.upload_file(file, purpose=PURPOSE, validate=validate, provider_name=PROVIDER)
            check(uploaded.raw, file)

        return upload

    def bare(file: Path) -> None:
        with file.open("rb") as stream:
            body = MultipartEncoder(
                fields=[("purpose", PURPOSE), ("file", (file.name, stream, CONTENT_TYPE))]
            )
            response = session.post(url, data=body, headers={**auth, "Content-Type": body.content_type})
        response.raise_for_status()
        check(response.json(), file)

    def bare_generator(file: Path) -> None:
        boundary = uuid.uuid4().hex
        response = session.post(
            url,
            data=_multipart_chunks(file, boundary),
            headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        response.raise_for_status()
        check(response.json(), file)

    sides: dict[str, Side] = {
        "ours": ours(False),
        "bare": bare,
        "bare_generator": bare_generator,
        "ours_validate": ours(True),
    }
    rounds, validate_rounds = int(params["rounds"]), int(params.get("validate_rounds", params["rounds"]))

    def once(side: Side) -> tuple[float, int]:
        release_memory()
        before = rss_bytes()
        if not reset_peak_rss():
            raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): no memory figure")
        t0 = time.perf_counter()
        side(path)
        wall = time.perf_counter() - t0
        return wall, peak_rss_bytes() - before

    for side in sides.values():  # warm up: imports, connections, first-use set-up
        side(warm_up)

    walls: dict[str, list[float]] = {name: [] for name in sides}
    growth: dict[str, list[int]] = {name: [] for name in sides}
    uploads = 0
    for index in range(rounds):
        names = [name for name in sides if name != "ours_validate" or index < validate_rounds]
        for name in names if index % 2 == 0 else reversed(names):
            wall, grown = once(sides[name])
            walls[name].append(wall)
            growth[name].append(grown)
            uploads += 1

    received = _received(sim, uploads)
    session.close()
    hook.session.close()
    return _report(params, path.stat().st_size, digest, made_s, walls, growth, received)


def _multipart_chunks(path: Path, boundary: str) -> Iterator[bytes]:
    """The same multipart body the encoder makes, as a generator of 1 MiB chunks."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{PURPOSE}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        f"Content-Type: {CONTENT_TYPE}\r\n\r\n"
    ).encode()
    with path.open("rb") as stream:
        while chunk := stream.read(GENERATOR_CHUNK):
            yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def _received(sim: SimHost, count: int) -> list[dict[str, Any]]:
    """The last ``count`` files the simulator recorded (its admin surface)."""
    import requests

    answer = requests.get(
        f"{sim.url}/__simulator__/files", headers={"Authorization": f"Bearer {sim.api_key}"}, timeout=30
    )
    answer.raise_for_status()
    files: list[dict[str, Any]] = answer.json()["data"]
    return files[-count:]


def _report(
    params: dict[str, Any],
    size: int,
    digest: str,
    made_s: float,
    walls: dict[str, list[float]],
    growth: dict[str, list[int]],
    received: list[dict[str, Any]],
) -> dict[str, Any]:
    # The size always; the content too where the simulator hashes what it receives.
    damaged = [f for f in received if f["bytes"] != size or f.get("sha256", digest) != digest]
    if damaged or len(received) != sum(map(len, walls.values())):
        raise RuntimeError(f"{len(damaged)} of {len(received)} uploads arrived damaged: {damaged[:3]}")
    ratio_target = float(params.get("ratio_target", 0.9))
    memory_target = float(params.get("memory_target_mb", 32.0))

    def throughput(name: str) -> float | None:
        wall = median(walls[name])
        return size / wall / MB if wall else None

    def ratio(ours: str, baseline: str) -> float | None:
        """Median over the rounds of throughput ours / baseline (= baseline's time / ours)."""
        return median([b / o for o, b in zip(walls[ours], walls[baseline], strict=False)])

    def peak(name: str) -> float:
        return max(growth[name]) / MB

    shown = f"{size / MB:g} MB"
    vs_encoder, vs_generator, validating = (
        ratio("ours", "bare"),
        ratio("ours", "bare_generator"),
        ratio("ours_validate", "bare"),
    )
    metrics = [
        Metric(
            SCENARIO,
            f"throughput, {shown}, validate=False (median of per-round ratios)",
            throughput("ours"),
            throughput("bare"),
            vs_encoder,
            f"ratio >= {ratio_target:g}",
            vs_encoder is not None and vs_encoder >= ratio_target,
            "MB/s",
            "requests + MultipartEncoder",
        ),
        Metric(
            SCENARIO,
            f"throughput, {shown}, validate=False, against a generator body (1 MiB chunks)",
            throughput("ours"),
            throughput("bare_generator"),
            vs_generator,
            f"ratio >= {ratio_target:g}",
            vs_generator is not None and vs_generator >= ratio_target,
            "MB/s",
            "requests + generator",
        ),
        Metric(
            SCENARIO,
            "peak RSS growth of this process during one upload (largest of the rounds)",
            peak("ours"),
            peak("bare"),
            None,
            f"< {memory_target:g} MB",
            peak("ours") < memory_target,
            "MB",
            "requests + MultipartEncoder",
        ),
        Metric(
            SCENARIO,
            f"throughput, {shown}, validate=True (read and parsed first, then sent)",
            throughput("ours_validate"),
            throughput("bare"),
            validating,
            "",
            None,
            "MB/s",
            "requests + MultipartEncoder",
            f"info: peak RSS growth {peak('ours_validate'):.1f} MB",
        ),
    ]
    raw = {
        "size_bytes": size,
        "file_made_s": made_s,
        "wall_s": walls,
        "peak_rss_growth_bytes": growth,
        "uploads_checked": len(received),
        "content_checked": all("sha256" in f for f in received),
    }
    return {"metrics": [m.to_dict() for m in metrics], "raw": raw}
