"""This server's signing key (RFC 7517): generated into the data directory on first start, never committed.

It signs OpenID Connect ``id_token``s (RS256, OpenID Connect Core §15.1) and the short-lived
sign-in tickets that carry an authorization request from the sign-in page to the consent page.
Only the public half is published at ``/oauth/jwks``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from imagebridge.files import write_once

ALGORITHM = "RS256"
_FILE = "oauth-signing-key.json"


class SigningKey:
    def __init__(self, key: RSAKey) -> None:
        self.key = key

    @property
    def kid(self) -> str:
        return str(self.key.kid)

    def public_jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        return {"keys": [{**public, "use": "sig", "alg": ALGORITHM, "kid": self.kid}]}

    def sign(self, claims: dict[str, Any], typ: str = "JWT") -> str:
        header = {"alg": ALGORITHM, "kid": self.kid, "typ": typ}
        return jwt.encode(header, claims, self.key, algorithms=[ALGORITHM])

    def verify(self, token: str, typ: str = "JWT") -> dict[str, Any] | None:
        """The claims of a JWT this key signed with header ``typ``, or None if it did not sign one."""
        try:
            decoded = jwt.decode(token, self.key, algorithms=[ALGORITHM])
        except (JoseError, ValueError):
            return None
        return dict(decoded.claims) if decoded.header.get("typ") == typ else None


def load_or_create(data_dir: Path) -> SigningKey:
    """Read the key from the data directory, or make one there (RSA 2048, file mode 0600).

    The workers of ``serve --workers N`` start at the same moment on a new data directory, so
    several may make a key at once: each writes its own temporary file and links it into place;
    the first link wins and every other process reads the winner's key, so all sign alike
    (``files.write_once``)."""
    path = data_dir / _FILE
    if path.exists():
        return _read(path)
    key = RSAKey.generate_key(2048, auto_kid=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    ours = json.dumps(key.as_dict(private=True))
    stored = write_once(path, ours)  # mode 0600
    return SigningKey(key) if stored == ours else SigningKey(RSAKey.import_key(json.loads(stored)))


def _read(path: Path) -> SigningKey:
    return SigningKey(RSAKey.import_key(json.loads(path.read_text())))
