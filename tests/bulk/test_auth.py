"""SMART Backend Services: the signed assertion, the token cache, refresh, site wiring."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from omopflow.bulk.auth import SmartBackendAuth, auth_for_site
from omopflow.bulk.errors import BulkAuthError, BulkExportError
from omopflow.sites import Site, SiteAuth

from .conftest import KID, make_auth, pem
from .server import BulkServer


def test_assertion_is_rs384_signed_with_kid_and_spec_claims(secured_server, rsa_key):
    auth = make_auth(secured_server, rsa_key)

    assertion = auth.client_assertion()

    header = jwt.get_unverified_header(assertion)
    assert (header["alg"], header["kid"], header["typ"]) == ("RS384", KID, "JWT")
    claims = jwt.decode(
        assertion, rsa_key.public_key(), algorithms=["RS384"], audience=secured_server.token_url
    )
    assert claims["iss"] == claims["sub"] == secured_server.client_id
    assert 0 < claims["exp"] - time.time() <= 300  # the spec's five-minute cap
    assert (
        claims["jti"]
        != jwt.decode(auth.client_assertion(), options={"verify_signature": False})["jti"]
    )


def test_ec_p384_key_signs_es384_and_the_server_accepts_it(bulk_data, ec_key, make_client):
    bulk = BulkServer(bulk_data, public_keys={KID: ec_key.public_key()}).start()
    try:
        auth = make_auth(bulk, ec_key)
        result = make_client(bulk, auth=auth).export(types=["Patient"])
    finally:
        bulk.stop()
    assert auth.algorithm == "ES384"
    assert result.requires_access_token


def test_ec_key_on_another_curve_is_refused():
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(BulkAuthError, match="P-384"):
        SmartBackendAuth("https://x/token", "c", pem(other), "k")


def test_key_that_is_not_pem_is_refused():
    with pytest.raises(BulkAuthError, match="PEM private key"):
        SmartBackendAuth("https://x/token", "c", b"not a key", "k")


def test_token_is_fetched_once_and_reused(secured_server, rsa_key, make_client):
    client = make_client(secured_server, auth=make_auth(secured_server, rsa_key))

    client.export(types=["Patient"])
    client.export(types=["Patient"])

    assert secured_server.tokens_issued == 1
    assert all(
        "Authorization" in headers
        for _, path, headers in secured_server.requests
        if path.startswith("/fhir")
    )


def test_unknown_key_is_refused_with_a_clear_error(secured_server, ec_key, make_client):
    client = make_client(secured_server, auth=make_auth(secured_server, ec_key, kid="other-kid"))

    with pytest.raises(
        BulkAuthError, match="refused client 'omopflow-test': HTTP 401 invalid_client"
    ):
        client.export(types=["Patient"])


def test_without_a_token_the_server_says_401(secured_server, make_client):
    with pytest.raises(BulkExportError, match=r"401 \[login\]"):
        make_client(secured_server).export(types=["Patient"])


def test_revoked_token_gets_refreshed_once(secured_server, rsa_key, make_client):
    client = make_client(secured_server, auth=make_auth(secured_server, rsa_key))
    secured_server.faults.expire_token = 1

    result = client.export(types=["Patient"])

    assert secured_server.tokens_issued == 2
    assert [entry.type for entry in result.output] == ["Patient"]


def test_token_is_renewed_before_it_expires(secured_server, rsa_key):
    now = [time.time()]  # the assertion's exp is checked against the server's real clock
    auth = SmartBackendAuth(
        secured_server.token_url,
        secured_server.client_id,
        pem(rsa_key),
        KID,
        clock=lambda: now[0],
    )
    first = auth.authorization_header()
    now[0] += 200  # server lifetime 300 s; renewal 30 s early
    assert auth.authorization_header() == first
    now[0] += 80
    assert auth.authorization_header() != first
    assert secured_server.tokens_issued == 2


def test_downloads_carry_the_token_when_the_manifest_requires_it(
    secured_server, rsa_key, make_client, tmp_path: Path
):
    client = make_client(secured_server, auth=make_auth(secured_server, rsa_key))
    result = client.export(types=["Patient"])

    client.download(result.output[0].url, tmp_path / "p.ndjson", result.requires_access_token)

    _, _, headers = secured_server.requests[-1]
    assert headers["Authorization"].startswith("Bearer ")


def test_downloads_carry_no_token_when_the_manifest_says_so(
    secured_server, rsa_key, make_client, tmp_path: Path
):
    secured_server.files_need_token = False
    client = make_client(secured_server, auth=make_auth(secured_server, rsa_key))
    result = client.export(types=["Patient"])

    client.download(result.output[0].url, tmp_path / "p.ndjson", result.requires_access_token)

    _, _, headers = secured_server.requests[-1]
    assert not result.requires_access_token
    assert "Authorization" not in headers


def bulk_site(auth: SiteAuth | None) -> Site:
    return Site(
        id="east", name="East", kind="bulk", base_url="https://x", level="system", auth=auth
    )


def test_site_with_inline_auth_reads_its_key_file(tmp_path: Path, rsa_key):
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem(rsa_key))
    auth = SiteAuth(token_url="https://x/token", client_id="c", private_key_path=key_file, kid="k")

    built = auth_for_site(bulk_site(auth))

    assert built is not None and built.algorithm == "RS384" and built.kid == "k"


def test_site_with_a_missing_key_file_names_the_site_and_field(tmp_path: Path):
    auth = SiteAuth(
        token_url="https://x/token", client_id="c", private_key_path=tmp_path / "nope.pem", kid="k"
    )
    with pytest.raises(BulkAuthError, match=r"site 'east': field 'auth\.private_key_path'"):
        auth_for_site(bulk_site(auth))


def test_site_with_an_airflow_connection(rsa_key):
    connection = SimpleNamespace(
        login="client-9",
        password=pem(rsa_key).decode(),
        extra_dejson={"token_url": "https://x/token", "kid": "k9", "scope": "system/*.rs"},
    )
    asked: list[str] = []

    def getter(conn_id: str) -> SimpleNamespace:
        asked.append(conn_id)
        return connection

    built = auth_for_site(bulk_site(SiteAuth(connection_id="fhir_east")), getter)

    assert asked == ["fhir_east"]
    assert built is not None
    assert (built.client_id, built.kid, built.scope) == ("client-9", "k9", "system/*.rs")


def test_airflow_connection_without_kid_is_a_clear_error(rsa_key):
    connection = SimpleNamespace(
        login="c", password=pem(rsa_key).decode(), extra_dejson={"token_url": "https://x"}
    )
    with pytest.raises(BulkAuthError, match="connection 'fhir_east': missing kid"):
        auth_for_site(bulk_site(SiteAuth(connection_id="fhir_east")), lambda _: connection)


def test_site_without_auth_has_no_authoriser():
    assert auth_for_site(bulk_site(None)) is None
