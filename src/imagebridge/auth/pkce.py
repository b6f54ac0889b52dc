"""Proof Key for Code Exchange (RFC 7636), S256 only: ``plain`` offers no protection and is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from imagebridge.auth.errors import InvalidGrant, InvalidRequest

METHODS = ("S256",)
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))), without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_challenge(challenge: str | None, method: str | None) -> str:
    """The authorization request's challenge, refused unless it is an S256 challenge (RFC 7636 §4.3)."""
    if not challenge:
        raise InvalidRequest("code_challenge is required (PKCE, RFC 7636) with code_challenge_method=S256")
    if (method or "plain") not in METHODS:
        raise InvalidRequest(f"code_challenge_method '{method or 'plain'}' is not supported; use S256")
    if not _CHALLENGE.match(challenge):
        raise InvalidRequest("code_challenge is not a base64url SHA-256 digest")
    return challenge


def verify(verifier: str | None, challenge: str) -> None:
    """RFC 7636 §4.6: the verifier must hash to the challenge given at authorization."""
    if not verifier or not _VERIFIER.match(verifier):
        raise InvalidGrant("code_verifier is missing or malformed (RFC 7636 §4.1)")
    if not hmac.compare_digest(s256(verifier), challenge):
        raise InvalidGrant("code_verifier does not match the code_challenge")
