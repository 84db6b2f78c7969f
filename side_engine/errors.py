"""Errors a user can act on: each names the file or setting at fault."""

from __future__ import annotations

ERROR_PREFIX = "side-audit: error: "  # how the CLI starts each error line (the app reads a child run's reason by it)


class SideError(Exception):
    """Base of every error the CLI turns into one line and an exit code."""

    exit_code = 1


class ConfigError(SideError):
    """A setting or a command-line usage is invalid (exit 2)."""

    exit_code = 2


class InputError(SideError):
    """A checkpoint or training-set file cannot be used (exit 2)."""

    exit_code = 2


class WorkspaceError(SideError):
    """The workspace is inconsistent with its audit, or cannot be written (exit 3)."""

    exit_code = 3


class Cancelled(SideError):
    """The user asked to stop; everything committed so far is kept (exit 130)."""

    exit_code = 130
