"""The errors a bulk export can end with; each message says what failed and where."""

from __future__ import annotations


class BulkExportError(RuntimeError):
    """The export cannot go on: a refused kick-off, a failed job, retries used up."""


class BulkAuthError(BulkExportError):
    """The token endpoint refused the client, or the server refused a fresh token."""


class FileExpiredError(BulkExportError):
    """A file of the manifest answered 410 Gone: the export has to start again."""


class ExportGoneError(BulkExportError):
    """The status URL answered 404 or 410: the server has dropped (or never had) the export."""
