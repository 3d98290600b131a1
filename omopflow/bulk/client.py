"""FHIR Bulk Data `$export` client (Bulk Data Access IG v2), synchronous, on httpx.

The flow: kick-off (`202` + `Content-Location`), poll the status URL (`202` while running,
honouring `Retry-After`, logging `X-Progress`), read the manifest (`200`, maybe paged through
`link` rel=next), download each file streamed to disk. Every loop is bounded: retries,
polls, manifest pages, and each wait is capped.

What is retried, and what is not:
- 429, and 5xx without an OperationOutcome (gateways, overloaded servers): wait and retry;
- any status with an OperationOutcome whose error issues are all `transient` (or one of
  its child codes): wait and retry;
- an OperationOutcome with any other error code: the server has decided, so
  `BulkExportError` at once, with the server's diagnostics in the message;
- 401 with an authoriser: one fresh token, then the request again.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from omopflow.bulk.errors import BulkExportError, ExportGoneError, FileExpiredError
from omopflow.sites import LEVEL_GROUP, LEVEL_PATIENT, LEVEL_SYSTEM, LEVELS

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
FHIR_NDJSON = "application/fhir+ndjson"

# IssueType `transient` and its children: the server says "try again later".
TRANSIENT_ISSUE_CODES = frozenset(
    {"transient", "lock-error", "no-store", "exception", "timeout", "incomplete", "throttled"}
)
ERROR_SEVERITIES = frozenset({"fatal", "error"})

HTTP_OK = 200
HTTP_ACCEPTED = 202
HTTP_UNAUTHORIZED = 401
HTTP_NOT_FOUND = 404
HTTP_GONE = 410
HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVER_ERROR = 500

DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=15.0)
DOWNLOAD_CHUNK = 1024 * 1024


class Authoriser(Protocol):
    def authorization_header(self) -> dict[str, str]: ...

    def invalidate(self) -> None: ...


@dataclass(frozen=True)
class ManifestFile:
    type: str
    url: str
    count: int | None = None


@dataclass(frozen=True)
class ExportResult:
    """A completed export's manifest, with all pages merged."""

    status_url: str
    transaction_time: str
    request: str
    requires_access_token: bool
    output: tuple[ManifestFile, ...]
    error: tuple[ManifestFile, ...]
    deleted: tuple[ManifestFile, ...]
    manifests: tuple[dict[str, Any], ...] = field(repr=False)


@dataclass(frozen=True)
class DownloadedFile:
    path: Path
    bytes: int
    sha256: str
    lines: int
    gzipped: bool


class BulkClient:
    """Talks to one FHIR server's Bulk Data endpoints.

    `sleep` and `clock` are injectable so tests can record waits instead of waiting.
    """

    def __init__(
        self,
        base_url: str,
        auth: Authoriser | None = None,
        http: httpx.Client | None = None,
        poll_cap_s: float = 300.0,
        max_retries: int = 5,
        backoff_s: float = 2.0,
        max_polls: int = 2000,
        max_manifest_pages: int = 1000,
        export_timeout_s: float = 24 * 3600.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self._http = http or httpx.Client(timeout=DEFAULT_TIMEOUT)
        self._owns_http = http is None
        self.poll_cap_s = poll_cap_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_polls = max_polls
        self.max_manifest_pages = max_manifest_pages
        self.export_timeout_s = export_timeout_s
        self._sleep = sleep
        self._clock = clock

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> BulkClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- export -------------------------------------------------------------------------

    def export(
        self,
        level: str = LEVEL_SYSTEM,
        group_id: str | None = None,
        types: list[str] | tuple[str, ...] | None = None,
        since: str | None = None,
        method: str = "GET",
    ) -> ExportResult:
        """Kick off an export, wait for it, and return the merged manifest."""
        return self.wait(self.kick_off(level, group_id, types, since, method))

    def wait(self, status_url: str) -> ExportResult:
        """Poll an export (new, or one kicked off by an earlier run) until its manifest.

        A failure cancels the export to free the server's resources, unless the server
        says it no longer knows it (`ExportGoneError`). An interrupt (KeyboardInterrupt,
        SystemExit) leaves it running, so that the next `land_export` can resume it.
        """
        try:
            manifests = self._collect_manifests(status_url)
        except ExportGoneError:
            raise
        except Exception:
            self._cancel_quietly(status_url)
            raise
        return _merge_manifests(status_url, manifests)

    def kick_off(
        self,
        level: str = LEVEL_SYSTEM,
        group_id: str | None = None,
        types: list[str] | tuple[str, ...] | None = None,
        since: str | None = None,
        method: str = "GET",
    ) -> str:
        """Start an export; return the status URL from `Content-Location`."""
        url = self.export_url(level, group_id)
        params = _kickoff_params(types, since)
        headers = {"Accept": FHIR_JSON, "Prefer": "respond-async"}
        if method == "GET":
            response = self._request("GET", url, headers=headers, params=params)
        elif method == "POST":
            headers["Content-Type"] = FHIR_JSON
            body = _parameters_resource(params)
            response = self._request("POST", url, headers=headers, json=body)
        else:
            raise ValueError(f"kick-off method must be GET or POST, not {method!r}")
        if response.status_code != HTTP_ACCEPTED:
            raise _error_from(response, f"kick-off {method} {url}")
        location = response.headers.get("Content-Location")
        if not location:
            raise BulkExportError(f"kick-off {url}: 202 without a Content-Location header")
        status_url = urljoin(url, location)
        log.info("export started: %s", status_url)
        return status_url

    def export_url(self, level: str, group_id: str | None = None) -> str:
        if level == LEVEL_SYSTEM:
            return f"{self.base_url}/$export"
        if level == LEVEL_PATIENT:
            return f"{self.base_url}/Patient/$export"
        if level == LEVEL_GROUP:
            if not group_id:
                raise ValueError("a group-level export needs a group_id")
            return f"{self.base_url}/Group/{group_id}/$export"
        raise ValueError(f"export level must be one of {', '.join(LEVELS)}, not {level!r}")

    def cancel(self, status_url: str) -> None:
        """Cancel a running export, or tell the server we are done with its files."""
        response = self._request("DELETE", status_url, headers={"Accept": FHIR_JSON})
        if response.status_code not in (HTTP_OK, HTTP_ACCEPTED):
            raise _error_from(response, f"cancel {status_url}")
        log.info("export cancelled: %s", status_url)

    def _cancel_quietly(self, status_url: str) -> None:
        try:
            self.cancel(status_url)
        except (BulkExportError, httpx.HTTPError) as exc:
            log.warning("could not cancel %s: %s", status_url, exc)

    # -- status and manifests -----------------------------------------------------------

    def _collect_manifests(self, status_url: str) -> list[dict[str, Any]]:
        manifests = [self._wait_for_manifest(status_url)]
        while (next_url := _next_link(manifests[-1])) is not None:
            if len(manifests) >= self.max_manifest_pages:
                raise BulkExportError(f"{status_url}: more than {self.max_manifest_pages} pages")
            manifests.append(self._wait_for_manifest(urljoin(status_url, next_url)))
        return manifests

    def _wait_for_manifest(self, url: str) -> dict[str, Any]:
        deadline = self._clock() + self.export_timeout_s
        for poll in range(self.max_polls):
            response = self._request("GET", url, headers={"Accept": "application/json"})
            if response.status_code == HTTP_OK:
                return _manifest_json(response, url)
            if response.status_code in (HTTP_NOT_FOUND, HTTP_GONE):
                raise ExportGoneError(
                    f"status {url}: the server no longer knows this export: "
                    f"HTTP {response.status_code} {_diagnostics(response)}".strip()
                )
            if response.status_code != HTTP_ACCEPTED:
                raise _error_from(response, f"status {url}")
            progress = response.headers.get("X-Progress")
            delay = self._delay(response, poll)
            log.info(
                "export in progress (%s); next poll in %.1f s", progress or "no X-Progress", delay
            )
            if self._clock() + delay > deadline:
                raise BulkExportError(f"status {url}: not done after {self.export_timeout_s} s")
            self._sleep(delay)
        raise BulkExportError(f"status {url}: not done after {self.max_polls} polls")

    # -- downloads ----------------------------------------------------------------------

    def download(self, url: str, dest: Path, requires_access_token: bool) -> DownloadedFile:
        """Stream one manifest file to `dest` (plus `.gz` when the server gzips it).

        A body shorter than Content-Length, a broken gzip stream or a dropped connection is
        retried; 410 Gone raises FileExpiredError (the caller restarts the export).
        """
        headers = {"Accept": FHIR_NDJSON, "Accept-Encoding": "gzip"}
        if requires_access_token:
            self._check_same_origin(url)
        problem = "no attempt made"
        refreshed = False
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._sleep(self._backoff(attempt - 1))
            try:
                with self._stream(url, headers, requires_access_token) as response:
                    if response.status_code == HTTP_UNAUTHORIZED and self._refresh(refreshed):
                        refreshed = True
                        problem = "401 Unauthorized"
                        continue
                    if response.status_code == HTTP_GONE:
                        raise FileExpiredError(f"{url}: 410 Gone (the export's files expired)")
                    if response.status_code != HTTP_OK:
                        response.read()
                        if not _is_retryable(response):
                            raise _error_from(response, f"download {url}")
                        problem = f"HTTP {response.status_code}"
                        continue
                    result, problem = _save_body(response, dest)
                    if result is not None:
                        return result
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            log.warning("download %s failed (%s), attempt %d", url, problem, attempt + 1)
        raise BulkExportError(
            f"download {url}: gave up after {self.max_retries + 1} tries: {problem}"
        )

    def _stream(
        self, url: str, headers: dict[str, str], with_token: bool
    ) -> Any:  # a context manager yielding httpx.Response
        if with_token and self.auth is not None:
            headers = {**headers, **self.auth.authorization_header()}
        return self._http.stream("GET", url, headers=headers)

    def _check_same_origin(self, url: str) -> None:
        # Our bearer token is for this server only; a manifest must not send it elsewhere.
        if _origin(url) != _origin(self.base_url):
            raise BulkExportError(
                f"manifest file {url} needs the access token but is not on {self.base_url}"
            )

    # -- requests with retries ----------------------------------------------------------

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request, retried on what the server calls temporary."""
        headers: dict[str, str] = kwargs.pop("headers", {})
        problem = "no attempt made"
        refreshed = False
        for attempt in range(self.max_retries + 1):
            try:
                response = self._http.request(
                    method, url, headers={**headers, **self._auth_header()}, **kwargs
                )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                delay = self._backoff(attempt)
            else:
                if response.status_code == HTTP_UNAUTHORIZED and self._refresh(refreshed):
                    refreshed = True
                    continue
                if not _is_retryable(response):
                    return response
                problem = f"HTTP {response.status_code} {_diagnostics(response)}".strip()
                delay = self._delay(response, attempt)
            if attempt < self.max_retries:
                log.warning("%s %s: %s; retry in %.1f s", method, url, problem, delay)
                self._sleep(delay)
        raise BulkExportError(
            f"{method} {url}: gave up after {self.max_retries + 1} tries: {problem}"
        )

    def _auth_header(self) -> dict[str, str]:
        return self.auth.authorization_header() if self.auth is not None else {}

    def _refresh(self, already_refreshed: bool) -> bool:
        """After a 401: drop the token once and say whether to try again."""
        if self.auth is None or already_refreshed:
            return False
        log.info("server answered 401: fetching a new access token")
        self.auth.invalidate()
        return True

    def _delay(self, response: httpx.Response, attempt: int) -> float:
        """The server's Retry-After if it gave one, else exponential backoff; capped."""
        server_says = retry_after_seconds(response.headers.get("Retry-After"))
        if server_says is not None:
            return min(server_says, self.poll_cap_s)
        return self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff_s * 2**attempt, self.poll_cap_s))


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        log.warning("ignoring an unreadable Retry-After header: %r", value)
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _kickoff_params(types: list[str] | tuple[str, ...] | None, since: str | None) -> dict[str, str]:
    params = {"_outputFormat": FHIR_NDJSON}
    if types:
        params["_type"] = ",".join(types)
    if since:
        params["_since"] = since
    return params


def _parameters_resource(params: dict[str, str]) -> dict[str, Any]:
    """The POST kick-off body: a FHIR Parameters resource, one `_type` entry per type."""
    parameters: list[dict[str, str]] = []
    for name, value in params.items():
        if name == "_type":
            parameters += [{"name": "_type", "valueString": one} for one in value.split(",")]
        elif name == "_since":
            parameters.append({"name": name, "valueInstant": value})
        else:
            parameters.append({"name": name, "valueString": value})
    return {"resourceType": "Parameters", "parameter": parameters}


def _is_retryable(response: httpx.Response) -> bool:
    if response.status_code == HTTP_TOO_MANY_REQUESTS:
        return True
    issues = _error_issue_codes(response)
    if issues:
        return issues <= TRANSIENT_ISSUE_CODES
    return response.status_code >= HTTP_SERVER_ERROR


def _operation_outcome(response: httpx.Response) -> dict[str, Any] | None:
    if response.status_code < 400 or not response.content:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return body
    return None


def _error_issue_codes(response: httpx.Response) -> set[str]:
    outcome = _operation_outcome(response)
    if outcome is None:
        return set()
    return {
        str(issue.get("code"))
        for issue in outcome.get("issue", [])
        if issue.get("severity") in ERROR_SEVERITIES
    }


def _diagnostics(response: httpx.Response) -> str:
    outcome = _operation_outcome(response)
    if outcome is None:
        return response.text[:200] if response.status_code >= 400 else ""
    parts = [
        f"[{issue.get('code')}] {issue.get('diagnostics') or _issue_text(issue)}"
        for issue in outcome.get("issue", [])
    ]
    return "; ".join(parts)


def _issue_text(issue: dict[str, Any]) -> str:
    details = issue.get("details") or {}
    return str(details.get("text", "")) if isinstance(details, dict) else ""


def _error_from(response: httpx.Response, what: str) -> BulkExportError:
    return BulkExportError(f"{what}: HTTP {response.status_code} {_diagnostics(response)}".strip())


def _manifest_json(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        manifest = response.json()
    except ValueError as exc:
        raise BulkExportError(f"status {url}: the manifest is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not manifest.get("transactionTime"):
        raise BulkExportError(f"status {url}: the manifest has no transactionTime")
    for key in ("output", "error", "deleted"):
        if not isinstance(manifest.get(key, []), list):
            raise BulkExportError(f"status {url}: manifest '{key}' is not a list")
    return manifest


def _next_link(manifest: dict[str, Any]) -> str | None:
    for link in manifest.get("link") or []:
        if isinstance(link, dict) and (link.get("relation") or link.get("rel")) == "next":
            url = link.get("url")
            return str(url) if url else None
    return None


def _manifest_files(manifests: list[dict[str, Any]], key: str) -> Iterator[ManifestFile]:
    for manifest in manifests:
        for entry in manifest.get(key) or []:
            if not isinstance(entry, dict) or not entry.get("url"):
                raise BulkExportError(f"manifest '{key}' entry without a url: {entry!r}")
            count = entry.get("count")
            yield ManifestFile(
                type=str(entry.get("type") or "Unknown"),
                url=str(entry["url"]),
                count=count if isinstance(count, int) else None,
            )


def _merge_manifests(status_url: str, manifests: list[dict[str, Any]]) -> ExportResult:
    first = manifests[0]
    return ExportResult(
        status_url=status_url,
        transaction_time=str(first["transactionTime"]),
        request=str(first.get("request", "")),
        requires_access_token=bool(first.get("requiresAccessToken", False)),
        output=tuple(_manifest_files(manifests, "output")),
        error=tuple(_manifest_files(manifests, "error")),
        deleted=tuple(_manifest_files(manifests, "deleted")),
        manifests=tuple(manifests),
    )


def _save_body(response: httpx.Response, dest: Path) -> tuple[DownloadedFile | None, str]:
    """Write the raw body; return the file, or None and why it must be fetched again."""
    encoding = response.headers.get("Content-Encoding", "identity").lower()
    if encoding not in ("identity", "gzip"):
        raise BulkExportError(f"{response.url}: unsupported Content-Encoding {encoding!r}")
    gzipped = encoding == "gzip"
    path = dest.with_name(dest.name + ".gz") if gzipped else dest
    counter = _LineCounter(gzipped)
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as out:
        for chunk in response.iter_raw(DOWNLOAD_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            counter.feed(chunk)
            size += len(chunk)
    expected = response.headers.get("Content-Length")
    if expected is not None and expected.isdigit() and int(expected) != size:
        return None, f"got {size} bytes of {expected} (Content-Length)"
    if not counter.complete():
        return None, "the gzip stream ends early"
    return DownloadedFile(path, size, digest.hexdigest(), counter.lines(), gzipped), ""


class _LineCounter:
    """Counts NDJSON lines while the bytes stream past, unzipping if needed."""

    def __init__(self, gzipped: bool) -> None:
        # wbits 16 + 15: expect a gzip header and trailer.
        self._unzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        self._newlines = 0
        self._last_byte = b"\n"
        self._broken = False

    def feed(self, chunk: bytes) -> None:
        if self._unzip is not None:
            try:
                chunk = self._unzip.decompress(chunk)
            except zlib.error:
                self._broken = True
                return
        if chunk:
            self._newlines += chunk.count(b"\n")
            self._last_byte = chunk[-1:]

    def complete(self) -> bool:
        return not self._broken and (self._unzip is None or self._unzip.eof)

    def lines(self) -> int:
        return self._newlines + (0 if self._last_byte == b"\n" else 1)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()
