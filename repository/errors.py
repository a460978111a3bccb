"""Errors raised by the repository package.

Every foreign error (securesystemslib, tuf, OSError) is wrapped once into one of these at the
point where it is understood, so the command line can print one clear line.
"""

from __future__ import annotations


class RepositoryError(Exception):
    """Base class: something the repository manager refused or could not do."""


class BadInputError(RepositoryError):
    """A request, path, file or argument is malformed or refers to nothing."""


class KeyError_(RepositoryError):
    """A key or passphrase could not be loaded, or a key does not belong where it is used."""


class ThresholdError(RepositoryError):
    """Not enough valid signatures to publish a role."""


class LockError(RepositoryError):
    """Another writer holds the repository lock."""


class CorruptRepositoryError(RepositoryError):
    """Published metadata on disk is missing, unreadable or does not verify."""


class VerificationError(RepositoryError):
    """`ota-repo verify` found the published repository unusable for a client."""
