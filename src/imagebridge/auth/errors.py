"""OAuth 2.0 protocol errors, each a class carrying its wire code (RFC 6749 §5.2, RFC 6750 §3.1).

OAuthError
├── InvalidRequest          invalid_request        400
├── InvalidClient           invalid_client         401
├── InvalidGrant            invalid_grant          400
├── UnauthorizedClient      unauthorized_client    400
├── UnsupportedGrantType    unsupported_grant_type 400
├── InvalidScope            invalid_scope          400
├── AccessDenied            access_denied          403
├── InvalidToken            invalid_token          401 (resource servers)
└── InsufficientScope       insufficient_scope     403 (resource servers)
"""

from __future__ import annotations


class OAuthError(Exception):
    error = "invalid_request"
    status = 400

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(OAuthError):
    pass


class InvalidClient(OAuthError):
    error = "invalid_client"
    status = 401


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class AccessDenied(OAuthError):
    error = "access_denied"
    status = 403


class InvalidToken(OAuthError):
    error = "invalid_token"
    status = 401


class InsufficientScope(OAuthError):
    error = "insufficient_scope"
    status = 403
