"""API keys and their scopes, as ``SSDSTACK_API_KEYS`` lists them.

An entry is ``<key>[:<scope>]`` or ``sha256:<hex digest of the key>[:<scope>]``; entries
are separated by commas. Scopes nest: ``read`` (list and inspect, detect), ``submit``
(read, and submit or cancel jobs, upload datasets), ``admin`` (submit, and deploy, upload
checkpoints). An entry without a scope is ``admin``.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import re
from dataclasses import dataclass

DIGEST_PREFIX = "sha256:"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
MIN_KEY_LENGTH = 16
# Words that mark a value someone was meant to replace; the committed examples use them.
PLACEHOLDER_WORDS = ("placeholder", "changeme", "change-me", "not-a-secret")


class Scope(enum.IntEnum):
    """What a key may do; each scope includes the ones below it."""

    READ = 1
    SUBMIT = 2
    ADMIN = 3

    @classmethod
    def named(cls, name: str) -> "Scope":
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown scope {name!r}: one of read, submit, admin") from None


@dataclass(frozen=True)
class ApiKey:
    """One accepted key, kept as the SHA-256 digest of its text."""

    digest: bytes
    scope: Scope
    scope_given: bool

    def matches(self, digest: bytes) -> bool:
        return hmac.compare_digest(self.digest, digest)


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_entry(entry: str, allow_short: bool = False) -> ApiKey:
    """One ``SSDSTACK_API_KEYS`` entry; ValueError naming what is wrong (never the key)."""
    if entry.startswith(DIGEST_PREFIX):
        digest, _, scope = entry[len(DIGEST_PREFIX):].partition(":")
        if not _DIGEST.match(digest):
            raise ValueError("a sha256: entry needs the key's SHA-256 as 64 lowercase hex digits")
        return ApiKey(bytes.fromhex(digest), Scope.named(scope) if scope else Scope.ADMIN, bool(scope))
    key, _, scope = entry.partition(":")
    if any(word in key.lower() for word in PLACEHOLDER_WORDS):
        raise ValueError("an API key is an example value (it contains "
                         f"{'/'.join(PLACEHOLDER_WORDS)}): generate one, e.g. `openssl rand -hex 24`")
    if len(key) < MIN_KEY_LENGTH and not allow_short:
        raise ValueError(f"API keys must be at least {MIN_KEY_LENGTH} characters long "
                         "(SSDSTACK_ALLOW_SHORT_API_KEYS=true allows shorter ones, for local use only)")
    return ApiKey(digest_of(key), Scope.named(scope) if scope else Scope.ADMIN, bool(scope))


def find(keys: list[ApiKey], digest: bytes) -> ApiKey | None:
    """The entry whose key has SHA-256 ``digest`` (:func:`digest_of` the key given),
    compared in constant time against every entry."""
    found = None
    for key in keys:
        if key.matches(digest) and (found is None or key.scope > found.scope):
            found = key
    return found
