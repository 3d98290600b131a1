"""SMART Backend Services authorisation (client_credentials with a signed JWT assertion).

The client proves who it is with a short-lived JWT signed by its private key (RS384 or
ES384, `kid` naming the public key the server holds), and receives a bearer token. The token
is cached until shortly before it expires, and dropped early when a server answers 401:
servers may revoke tokens before `expires_in` says.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from omopflow.bulk.errors import BulkAuthError
from omopflow.sites import DEFAULT_SCOPE, Site

log = logging.getLogger(__name__)

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The spec caps the assertion's lifetime at five minutes.
ASSERTION_LIFETIME_S = 300
# Renew this long before the server's expiry, so a token does not die mid-request.
EXPIRY_MARGIN_S = 30.0
TOKEN_TIMEOUT_S = 30.0

ConnectionGetter = Callable[[str], Any]


class SmartBackendAuth:
    """Fetches and caches bearer tokens from a SMART Backend Services token endpoint."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        private_key_pem: bytes | str,
        kid: str,
        scope: str = DEFAULT_SCOPE,
        algorithm: str | None = None,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.kid = kid
        self.scope = scope
        self._key = _load_private_key(private_key_pem)
        self.algorithm = algorithm or _algorithm_for(self._key)
        self._http = http or httpx.Client(timeout=TOKEN_TIMEOUT_S)
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0

    def authorization_header(self) -> dict[str, str]:
        """`Authorization: Bearer ...`, fetching a new token when none is valid."""
        if self._token is None or self._clock() >= self._expires_at:
            self._token, self._expires_at = self._fetch_token()
        return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        """Forget the cached token (the server answered 401)."""
        self._token = None

    def client_assertion(self) -> str:
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            # No `iat`: SMART does not ask for it, and a server whose clock runs behind
            # would reject it as "not yet valid".
            "exp": now + ASSERTION_LIFETIME_S,
            "jti": uuid.uuid4().hex,  # unique per assertion: servers reject replays
        }
        headers = {"kid": self.kid, "typ": "JWT"}
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)

    def _fetch_token(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
        }
        try:
            response = self._http.post(
                self.token_url, data=form, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise BulkAuthError(f"token endpoint {self.token_url} unreachable: {exc}") from exc
        if response.status_code != 200:
            raise BulkAuthError(
                f"token endpoint {self.token_url} refused client '{self.client_id}': "
                f"HTTP {response.status_code} {_oauth_error(response)}"
            )
        body = response.json()
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise BulkAuthError(f"token endpoint {self.token_url} returned no access_token")
        lifetime = float(body.get("expires_in") or ASSERTION_LIFETIME_S)
        margin = min(EXPIRY_MARGIN_S, lifetime / 2)
        log.info("got an access token from %s (expires in %.0f s)", self.token_url, lifetime)
        return token, self._clock() + lifetime - margin


def auth_for_site(
    site: Site, connection_getter: ConnectionGetter | None = None
) -> SmartBackendAuth | None:
    """Build the site's authoriser from inline fields or its Airflow connection.

    An Airflow connection holds: login = client_id, password = private key PEM (or
    extra.private_key_path), extra = {token_url, kid, scope?, algorithm?}.
    """
    auth = site.auth
    if auth is None:
        return None
    if auth.connection_id is not None:
        getter = connection_getter or _airflow_connection
        return _auth_from_connection(site, getter(auth.connection_id))
    assert auth.private_key_path is not None and auth.token_url is not None
    assert auth.client_id is not None and auth.kid is not None
    return SmartBackendAuth(
        token_url=auth.token_url,
        client_id=auth.client_id,
        private_key_pem=_read_key(site, auth.private_key_path),
        kid=auth.kid,
        scope=auth.scope,
        algorithm=auth.algorithm,
    )


def _auth_from_connection(site: Site, connection: Any) -> SmartBackendAuth:
    extra: dict[str, Any] = dict(getattr(connection, "extra_dejson", None) or {})
    conn_id = site.auth.connection_id if site.auth else None
    where = f"site '{site.id}': Airflow connection '{conn_id}'"
    missing = [name for name in ("token_url", "kid") if not extra.get(name)]
    if not getattr(connection, "login", None):
        missing.insert(0, "login (client_id)")
    if missing:
        raise BulkAuthError(f"{where}: missing {', '.join(missing)}")
    if getattr(connection, "password", None):
        key: bytes | str = connection.password
    elif extra.get("private_key_path"):
        key = _read_key(site, Path(extra["private_key_path"]))
    else:
        raise BulkAuthError(f"{where}: give the private key as password or extra.private_key_path")
    return SmartBackendAuth(
        token_url=extra["token_url"],
        client_id=connection.login,
        private_key_pem=key,
        kid=extra["kid"],
        scope=extra.get("scope") or DEFAULT_SCOPE,
        algorithm=extra.get("algorithm"),
    )


def _airflow_connection(conn_id: str) -> Any:
    # Imported here: only Airflow workers have (and need) Airflow.
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)


def _read_key(site: Site, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BulkAuthError(
            f"site '{site.id}': field 'auth.private_key_path': cannot read {path}: {exc}"
        ) from exc


def _load_private_key(pem: bytes | str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BulkAuthError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise BulkAuthError("the private key must be RSA (RS384) or EC P-384 (ES384)")
    return key


def _algorithm_for(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS384"
    if not isinstance(key.curve, ec.SECP384R1):
        raise BulkAuthError(f"ES384 needs a P-384 key, not {key.curve.name}")
    return "ES384"


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return f"{body.get('error', '')} {body.get('error_description', '')}".strip()
    return str(body)[:200]
