"""A small FHIR Bulk Data server for tests, following the Bulk Data Access IG v2.

It serves the NDJSON files of one folder (one `<Type>.*.ndjson` file or more per type):
async kick-off at system, Patient and Group level (GET or POST with Parameters), status
polling with `X-Progress` and `Retry-After`, a manifest (optionally paged through `link`),
file downloads, DELETE to cancel, and a SMART Backend Services token endpoint that checks
the client's signed JWT against the public keys the test registers.

`faults` switches misbehaviour on, each one a counter of how many times to misbehave, so a
test can say "two 429s, then behave". `hold` makes one kind of request wait until the test
releases it, so a test can kill a client at a known point. Everything runs on 127.0.0.1 on a
free port in a background thread; `requests` records what the client sent.
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

from omopflow.sites import Site

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")
# Not in the Patient compartment: left out of Patient- and Group-level exports.
NON_PATIENT_TYPES = {"Organization", "Practitioner", "PractitionerRole", "Location"}
NDJSON_FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}


@dataclass
class Faults:
    status_429_seconds: int = 0  # 429 with `Retry-After: <retry_after_429>`
    status_429_date: int = 0  # 429 with Retry-After as an HTTP-date
    status_503: int = 0  # 503 without Retry-After (client backs off)
    status_transient: int = 0  # 500 + OperationOutcome code `transient`
    status_gone: int = 0  # 410 Gone on a status poll (the export expired)
    kickoff_transient: int = 0  # the same, at kick-off
    job_fails: bool = False  # 500 + OperationOutcome code `processing`: final
    expire_token: int = 0  # 401 for an otherwise valid token, which is revoked
    expire_file: int = 0  # 410 Gone on a download
    truncate: int = 0  # Content-Length larger than the body, then hang up
    error_file: bool = False  # an OperationOutcome NDJSON file in `error`
    deleted: list[str] = field(default_factory=list)  # "Patient/123": a `deleted` Bundle
    gzip: bool = False  # Content-Encoding: gzip when the client accepts it
    retry_after_429: int = 7
    retry_after_date_s: int = 30


@dataclass
class Hold:
    """Where requests wait: `reached` is set when one arrives; all wait for `release`."""

    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class Job:
    id: str
    request: str
    files: dict[str, bytes]  # name -> content
    output: list[dict[str, Any]]
    error: list[dict[str, Any]]
    deleted: list[dict[str, Any]]
    polls_left: int
    polls_total: int
    transaction_time: str


def _outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    issue = {"severity": severity, "code": code, "diagnostics": diagnostics}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


class BulkServer:
    def __init__(
        self,
        data_dir: Path,
        public_keys: dict[str, Any] | None = None,
        client_id: str = "omopflow-test",
        token_lifetime_s: int = 300,
        polls_before_done: int = 2,
        retry_after_s: int = 1,
        page_size: int = 0,
        groups: tuple[str, ...] = ("sample-10",),
        default_last_updated: str = "2024-08-06T18:12:57Z",
    ) -> None:
        self.data_dir = data_dir
        self.public_keys = public_keys or {}  # kid -> public key; none: no auth at all
        self.client_id = client_id
        self.token_lifetime_s = token_lifetime_s
        self.polls_before_done = polls_before_done
        self.retry_after_s = retry_after_s
        self.page_size = page_size  # output files per manifest page; 0: one page
        self.groups = set(groups)
        self.default_last_updated = default_last_updated
        self.transaction_time: str | None = None  # None: the time of the kick-off
        # None: files need a token when the server does; False: open file URLs (signed-URL style)
        self.files_need_token: bool | None = None
        self.faults = Faults()
        self.jobs: dict[str, Job] = {}
        self.tokens: dict[str, float] = {}  # token -> expiry (epoch seconds)
        self.seen_jti: set[str] = set()
        self.tokens_issued = 0
        self.kickoffs = 0
        self.downloads: Counter[str] = Counter()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.holds: dict[str, Hold] = {}  # "status" or a file name -> its hold
        self.lock = threading.Lock()
        self._httpd = _QuietHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        port = self._httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.origin}/fhir"
        self.token_url = f"{self.origin}/auth/token"
        # A short poll interval makes shutdown (once per test) quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def requires_auth(self) -> bool:
        return bool(self.public_keys)

    @property
    def requires_access_token(self) -> bool:
        return self.requires_auth if self.files_need_token is None else self.files_need_token

    def start(self) -> BulkServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        for hold in self.holds.values():
            hold.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def take(self, name: str) -> bool:
        """Use one unit of a counting fault; True when it fires."""
        with self.lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
                return True
            return False

    def hold(self, point: str) -> Hold:
        """Make status polls ("status") or downloads of one file (its name) wait."""
        self.holds[point] = Hold()
        return self.holds[point]

    def pause_at(self, point: str) -> None:
        hold = self.holds.get(point)
        if hold is not None:
            hold.reached.set()
            hold.release.wait(timeout=30)

    # -- tokens ---------------------------------------------------------------------------

    def issue_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("client_assertion_type") != JWT_BEARER:
            return 400, {"error": "invalid_request", "error_description": "assertion type"}
        assertion = form.get("client_assertion", "")
        try:
            kid = str(jwt.get_unverified_header(assertion).get("kid"))
            key = self.public_keys[kid]
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS384", "ES384"],
                audience=self.token_url,
                issuer=self.client_id,
                options={"require": ["exp", "jti", "iss", "sub", "aud"]},
            )
        except (jwt.PyJWTError, KeyError) as exc:
            return 401, {"error": "invalid_client", "error_description": str(exc)}
        with self.lock:
            if claims["sub"] != self.client_id or claims["jti"] in self.seen_jti:
                return 401, {"error": "invalid_client", "error_description": "sub or jti"}
            self.seen_jti.add(claims["jti"])
            token = secrets.token_hex(16)
            self.tokens[token] = time.time() + self.token_lifetime_s
            self.tokens_issued += 1
        body = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.token_lifetime_s,
            "scope": form.get("scope", ""),
        }
        return 200, body

    def token_ok(self, header: str | None) -> bool:
        if not self.requires_auth:
            return True
        if not header or not header.startswith("Bearer "):
            return False
        token = header.removeprefix("Bearer ")
        with self.lock:
            expiry = self.tokens.get(token)
            if expiry is None or expiry < time.time():
                return False
        if self.take("expire_token"):
            with self.lock:
                self.tokens.pop(token, None)
            return False
        return True

    # -- jobs -----------------------------------------------------------------------------

    def start_job(self, url: str, level: str, params: dict[str, list[str]]) -> Job:
        types = [one for value in params.get("_type", []) for one in value.split(",") if one]
        since_values = params.get("_since", [])
        since = _instant(since_values[0]) if since_values else None
        files: dict[str, bytes] = {}
        output = []
        for path in sorted(self.data_dir.glob("*.ndjson")):
            resource_type = path.name.split(".")[0]
            if not RESOURCE_TYPE.match(resource_type):
                continue  # e.g. the exporter's log.ndjson
            if types and resource_type not in types:
                continue
            if level != "system" and resource_type in NON_PATIENT_TYPES:
                continue
            lines = self._lines_since(path, since)
            if lines:
                name = f"{resource_type}.{len(files)}.ndjson"
                files[name] = b"".join(lines)
                output.append({"type": resource_type, "name": name, "count": len(lines)})
        error = self._error_file(files)
        deleted = self._deleted_file(files)
        with self.lock:
            self.kickoffs += 1
            job = Job(
                id=secrets.token_hex(6),
                request=url,
                files=files,
                output=output,
                error=error,
                deleted=deleted,
                polls_left=self.polls_before_done,
                polls_total=self.polls_before_done,
                transaction_time=self.transaction_time or _now_instant(),
            )
            self.jobs[job.id] = job
        return job

    def _lines_since(self, path: Path, since: datetime | None) -> list[bytes]:
        lines = [line for line in path.read_bytes().splitlines(keepends=True) if line.strip()]
        if since is None:
            return lines
        default = _instant(self.default_last_updated)
        kept = []
        for line in lines:
            stamp = json.loads(line).get("meta", {}).get("lastUpdated")
            if (_instant(stamp) if stamp else default) > since:
                kept.append(line)
        return kept

    def _error_file(self, files: dict[str, bytes]) -> list[dict[str, Any]]:
        if not self.faults.error_file:
            return []
        issues = [
            _outcome("not-found", "Patient/gone-1 was referenced but not found", "warning"),
            _outcome("processing", "Encounter/bad-2 could not be serialised"),
        ]
        files["errors.ndjson"] = b"".join(json.dumps(one).encode() + b"\n" for one in issues)
        return [{"type": "OperationOutcome", "name": "errors.ndjson"}]

    def _deleted_file(self, files: dict[str, bytes]) -> list[dict[str, Any]]:
        if not self.faults.deleted:
            return []
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "DELETE", "url": ref}} for ref in self.faults.deleted],
        }
        files["deleted.ndjson"] = json.dumps(bundle).encode() + b"\n"
        return [{"type": "Bundle", "name": "deleted.ndjson"}]

    def manifest(self, job: Job, page: int) -> dict[str, Any]:
        def entry(item: dict[str, Any]) -> dict[str, Any]:
            described = {
                "type": item["type"],
                "url": f"{self.base_url}/_files/{job.id}/{item['name']}",
            }
            if "count" in item:
                described["count"] = item["count"]
            return described

        size = self.page_size or max(len(job.output), 1)
        chunk = job.output[(page - 1) * size : page * size]
        manifest: dict[str, Any] = {
            "transactionTime": job.transaction_time,
            "request": job.request,
            "requiresAccessToken": self.requires_access_token,
            "output": [entry(item) for item in chunk],
            "error": [entry(item) for item in job.error] if page == 1 else [],
        }
        if page == 1 and job.deleted:
            manifest["deleted"] = [entry(item) for item in job.deleted]
        if page * size < len(job.output):
            next_url = f"{self.base_url}/_jobs/{job.id}?page={page + 1}"
            manifest["link"] = [{"relation": "next", "url": next_url}]
        return manifest


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _now_instant() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (what the resume tests do) is not a server error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(server: BulkServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_BulkHandler):
        bulk = server

    return Handler


class _BulkHandler(BaseHTTPRequestHandler):
    bulk: BulkServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean

    # -- plumbing -------------------------------------------------------------------------

    def _record(self) -> None:
        with self.bulk.lock:
            self.bulk.requests.append((self.command, self.path, dict(self.headers.items())))

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: dict[str, Any] | bytes | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        content_type = "application/fhir+json"
        if isinstance(body, dict):
            if body.get("resourceType") is None:
                content_type = "application/json"
            payload = json.dumps(body).encode()
        elif body is None:
            payload = b""
        else:
            payload = body or b""
            content_type = "application/fhir+ndjson"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _outcome(
        self, status: int, code: str, text: str, headers: dict[str, str] | None = None
    ) -> None:
        self._send(status, _outcome(code, text), headers)

    def _authorised(self) -> bool:
        if self.bulk.token_ok(self.headers.get("Authorization")):
            return True
        self._outcome(401, "login", "missing, invalid or expired access token")
        return False

    # -- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._record()
        self._route("GET")

    def do_POST(self) -> None:
        self._record()
        self._route("POST")

    def do_DELETE(self) -> None:
        self._record()
        self._route("DELETE")

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query)
        if path == "/auth/token" and method == "POST":
            return self._token()
        is_file = path.startswith("/fhir/_files/")
        if (self.bulk.requires_access_token or not is_file) and not self._authorised():
            return None
        if path.endswith("/$export") and method in ("GET", "POST"):
            return self._kickoff(method, path, query)
        if match := re.fullmatch(r"/fhir/_jobs/(\w+)", path):
            if method == "DELETE":
                return self._cancel(match.group(1))
            return self._status(match.group(1), int(query.get("page", ["1"])[0]))
        if match := re.fullmatch(r"/fhir/_files/(\w+)/([\w.]+)", path):
            return self._file(match.group(1), match.group(2))
        return self._outcome(404, "not-found", f"no route for {method} {path}")

    def _token(self) -> None:
        form = {key: values[0] for key, values in parse_qs(self._body().decode()).items()}
        status, body = self.bulk.issue_token(form)
        self._send(status, body)

    def _kickoff(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        if self.headers.get("Prefer") != "respond-async":
            return self._outcome(400, "invalid", "the kick-off needs Prefer: respond-async")
        if self.headers.get("Accept") != "application/fhir+json":
            return self._outcome(400, "invalid", "the kick-off needs Accept: application/fhir+json")
        if self.bulk.take("kickoff_transient"):
            return self._outcome(503, "transient", "busy, try again")
        params = query if method == "GET" else _parameters(self._body())
        level = self._level(path)
        if level is None:
            return self._outcome(404, "not-found", f"unknown export endpoint {path}")
        bad_types = [
            one
            for value in params.get("_type", [])
            for one in value.split(",")
            if not RESOURCE_TYPE.match(one)
        ]
        if bad_types:
            return self._outcome(400, "invalid", f"_type: not a resource type: {bad_types[0]}")
        output_format = params.get("_outputFormat", ["application/fhir+ndjson"])[0]
        if output_format not in NDJSON_FORMATS:
            return self._outcome(400, "not-supported", f"_outputFormat {output_format}")
        job = self.bulk.start_job(f"{self.bulk.origin}{self.path}", level, params)
        location = f"{self.bulk.base_url}/_jobs/{job.id}"
        self._send(
            202,
            _outcome("informational", "accepted", "information"),
            {"Content-Location": location},
        )
        return None

    def _level(self, path: str) -> str | None:
        if path == "/fhir/$export":
            return "system"
        if path == "/fhir/Patient/$export":
            return "patient"
        match = re.fullmatch(r"/fhir/Group/([^/]+)/\$export", path)
        if match and match.group(1) in self.bulk.groups:
            return "group"
        return None

    def _status(self, job_id: str, page: int) -> None:
        job = self.bulk.jobs.get(job_id)
        if job is None:
            return self._outcome(404, "not-found", f"no export {job_id} (cancelled or unknown)")
        self.bulk.pause_at("status")
        if self.bulk.take("status_gone"):
            return self._outcome(410, "expired", f"export {job_id} has expired")
        if self.bulk.take("status_429_seconds"):
            retry = str(self.bulk.faults.retry_after_429)
            return self._outcome(429, "throttled", "polling too often", {"Retry-After": retry})
        if self.bulk.take("status_429_date"):
            when = datetime.now(UTC) + timedelta(seconds=self.bulk.faults.retry_after_date_s)
            headers = {"Retry-After": format_datetime(when, usegmt=True)}
            return self._outcome(429, "throttled", "polling too often", headers)
        if self.bulk.take("status_503"):
            return self._send(503, b"Service Unavailable")
        if self.bulk.take("status_transient"):
            return self._outcome(500, "transient", "the export database is restarting")
        if self.bulk.faults.job_fails:
            return self._outcome(500, "processing", "export failed: disk full on the server")
        if job.polls_left > 0:
            job.polls_left -= 1
            done = job.polls_total - job.polls_left
            headers = {
                "X-Progress": f"exporting ({done}/{job.polls_total})",
                "Retry-After": str(self.bulk.retry_after_s),
            }
            return self._send(202, None, headers)
        headers = {"Expires": format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)}
        return self._send(200, self.bulk.manifest(job, page), headers)

    def _cancel(self, job_id: str) -> None:
        with self.bulk.lock:
            job = self.bulk.jobs.pop(job_id, None)
        if job is None:
            return self._outcome(404, "not-found", f"no export {job_id}")
        return self._outcome(202, "informational", "export deleted")

    def _file(self, job_id: str, name: str) -> None:
        job = self.bulk.jobs.get(job_id)
        if job is None or name not in job.files:
            return self._outcome(404, "not-found", f"no file {name}")
        with self.bulk.lock:
            self.bulk.downloads[name] += 1
        self.bulk.pause_at(name)
        if self.bulk.take("expire_file"):
            return self._outcome(410, "expired", "the export's files have expired")
        body = job.files[name]
        headers: dict[str, str] = {}
        if self.bulk.faults.gzip and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        if self.bulk.take("truncate"):
            return self._send_truncated(body, headers)
        return self._send(200, body, headers)

    def _send_truncated(self, body: bytes, headers: dict[str, str]) -> None:
        # Promise more bytes than we send, then hang up: what a dropped connection looks like.
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+ndjson")
        self.send_header("Content-Length", str(len(body) + 100))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


def _parameters(body: bytes) -> dict[str, list[str]]:
    """A POST kick-off's Parameters resource as GET-style query parameters."""
    resource = json.loads(body or b"{}")
    if resource.get("resourceType") != "Parameters":
        return {"_type": ["!not-a-parameters-resource"]}
    params: dict[str, list[str]] = {}
    for parameter in resource.get("parameter", []):
        value = next((v for k, v in parameter.items() if k.startswith("value")), "")
        params.setdefault(parameter["name"], []).append(str(value))
    return params


def sample_site(types: tuple[str, ...], site_id: str = "east") -> Site:
    """A bulk site exporting the served group; the URL comes with each test's client."""
    return Site(
        id=site_id,
        name=site_id.title(),
        kind="bulk",
        base_url="unused: the client carries the URL",
        level="group",
        group_id="sample-10",
        types=types,
    )
