"""Errors raised by the device client.

Every foreign error (python-tuf, requests, OSError, TOML) is wrapped once into one of these where
it is understood, so the command line prints one clear line. "No update available" is a return
value, never one of these.
"""

from __future__ import annotations


class UpdateError(Exception):
    """Base class: something the device client refused or could not do."""


class ConfigError(UpdateError):
    """The configuration file is missing, unreadable or has a bad value."""


class StorageError(UpdateError):
    """The data directory, a slot or a state file is unsafe, unreadable or unwritable."""


class InsecureStorageError(StorageError):
    """A file or directory the client trusts is readable or writable by others."""


class TamperedError(StorageError):
    """A file sealed with the device key does not authenticate (changed, or another key)."""


class LockedError(StorageError):
    """Another client process holds the data directory lock."""


class NetworkError(UpdateError):
    """The server could not be reached, answered with an error, or was too slow."""


class MetadataError(UpdateError):
    """TUF metadata failed to load or verify (python-tuf refused it)."""


class TargetNotFoundError(UpdateError):
    """The verified metadata lists no such target."""


class VerificationError(UpdateError):
    """Downloaded or installed bytes do not match the verified target (length or hashes)."""


class TooLongError(VerificationError):
    """The server sent more bytes than the verified target's length."""


class FirmwareFormatError(UpdateError):
    """A firmware target's `custom` field is missing or malformed (fail closed)."""


class PolicyError(UpdateError):
    """A verified firmware target is not acceptable for this device."""


class WrongHardwareError(PolicyError):
    """The firmware is for another hardware model."""


class NotNewerError(PolicyError):
    """The firmware is not strictly newer than the installed version."""


class SecurityCounterError(PolicyError):
    """The firmware's security counter is below the device's."""


class SlotTooSmallError(PolicyError):
    """The firmware's signed length is more than the inactive slot can hold."""


class StateError(UpdateError):
    """The device is in a state where the request makes no sense (e.g. a trial is pending)."""


class TrialPendingError(StateError):
    """An installed update waits for its trial boot; nothing more is installed before it."""


class BootError(UpdateError):
    """No slot can be booted: neither image verifies against its recorded target."""


class LogCorruptError(UpdateError):
    """The event log's hash chain is broken."""


class Interrupted(UpdateError):
    """A stop was requested (SIGTERM) while work was in progress; partial work is resumable."""
