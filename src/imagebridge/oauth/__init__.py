"""The authorization server's HTTP surface at /oauth: sign-in and consent pages, token, introspection,
revocation, registration and the JWK Set. The protocol itself lives in ``imagebridge.auth``."""
