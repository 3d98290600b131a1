"""Fixtures: the test Bulk Data server, signing keys, and a client that never really sleeps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from omopflow.bulk.auth import SmartBackendAuth
from omopflow.bulk.client import BulkClient

from .server import BulkServer

KID = "test-key-1"


class SleepRecorder:
    """Stands in for time.sleep: records each wait so tests can check it, waits 0 s."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
def bulk_data(shared_data: Path) -> Path:
    return shared_data / "fhir" / "synthea-bulk-10"


@pytest.fixture
def server(bulk_data: Path) -> Iterator[BulkServer]:
    """An open server (no auth), polls twice before the manifest is ready."""
    bulk = BulkServer(bulk_data).start()
    yield bulk
    bulk.stop()


@pytest.fixture
def secured_server(bulk_data: Path, rsa_key: rsa.RSAPrivateKey) -> Iterator[BulkServer]:
    """A server that wants SMART Backend Services tokens (RSA key registered as KID)."""
    bulk = BulkServer(bulk_data, public_keys={KID: rsa_key.public_key()}).start()
    yield bulk
    bulk.stop()


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_client(sleeps: SleepRecorder) -> Iterator[Callable[..., BulkClient]]:
    """Build clients with fast, recorded waits; all are closed after the test."""
    clients: list[BulkClient] = []

    def build(bulk: BulkServer, **options: Any) -> BulkClient:
        settings: dict[str, Any] = {
            "poll_cap_s": 60.0,
            "max_retries": 3,
            "backoff_s": 0.5,
            "sleep": sleeps,
        }
        settings.update(options)
        client = BulkClient(bulk.base_url, **settings)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def make_auth(bulk: BulkServer, key: Any, kid: str = KID) -> SmartBackendAuth:
    return SmartBackendAuth(
        token_url=bulk.token_url, client_id=bulk.client_id, private_key_pem=pem(key), kid=kid
    )
