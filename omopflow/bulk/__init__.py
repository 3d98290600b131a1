"""FHIR Bulk Data Access (IG v2) client: SMART Backend Services auth, `$export`, landing.

`land_export(client, site, landing_root)` is what a DAG calls; the pieces are importable
on their own for tests and for pointing at a new server by hand.
"""

from omopflow.bulk.auth import SmartBackendAuth, auth_for_site
from omopflow.bulk.client import BulkClient, ExportResult, ManifestFile
from omopflow.bulk.errors import (
    BulkAuthError,
    BulkExportError,
    ExportGoneError,
    FileExpiredError,
)
from omopflow.bulk.landing import (
    client_for_site,
    completed_exports,
    export_id,
    land_export,
    remove_stale_partials,
)

__all__ = [
    "BulkAuthError",
    "BulkClient",
    "BulkExportError",
    "ExportGoneError",
    "ExportResult",
    "FileExpiredError",
    "ManifestFile",
    "SmartBackendAuth",
    "auth_for_site",
    "client_for_site",
    "completed_exports",
    "export_id",
    "land_export",
    "remove_stale_partials",
]
