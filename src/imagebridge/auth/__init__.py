"""SMART on FHIR authorization: scopes, tokens, clients, users, and the one policy decision point.

One module per specification, after authlib: ``pkce`` (RFC 7636), ``introspection`` (RFC 7662),
``revocation`` (RFC 7009), ``registration`` (RFC 7591), ``assertions`` (RFC 7523 / SMART
client-confidential-asymmetric), ``scopes`` (SMART App Launch 2 scopes, v1 and v2), ``policy``.
Nothing here imports the web framework; ``imagebridge.oauth`` is the HTTP surface.
"""
