"""Every way a run can be refused or fail, with its exit status (one place, as the CLI needs)."""

from __future__ import annotations


class OmopflowError(Exception):
    """A run refused or stopped with a one-line reason for the user."""

    exit_code = 1


class UsageError(OmopflowError):
    """A missing or unreadable input, vocabulary or output folder; a bad option."""

    exit_code = 2


class InputError(OmopflowError):
    """The input cannot be read at all (as opposed to bad lines, which are quarantined)."""

    exit_code = 3


class RunLocked(OmopflowError):
    """Another run holds the warehouse lock."""

    exit_code = 4


class LedgerMismatch(OmopflowError):
    """The run's counts do not add up: something would be lost, so nothing is published."""

    exit_code = 5


class GateBlocked(OmopflowError):
    """The validation gate found error-level failures; the build is kept, not published."""

    exit_code = 6
