"""What a client reads before anything else: the CapabilityStatement and the SMART configuration.

``/fhir/metadata`` carries the SMART ``oauth-uris`` extension (the form ``fhirclient`` reads);
``/fhir/.well-known/smart-configuration`` follows SMART App Launch 2.2 §"Conformance" and lists
this same FHIR base in ``associated_endpoints`` with the SMART Imaging Access capabilities.
"""

from __future__ import annotations

from typing import Any

from imagebridge import __version__
from imagebridge.auth import assertions, pkce
from imagebridge.auth.server import GRANT_TYPES, Endpoints

APP_LAUNCH = "http://fhir.org/argonaut/smart-imaging/capabilities/app-launch"
BACKEND_SERVICES = "http://fhir.org/argonaut/smart-imaging/capabilities/backend-services"
IMAGING_CAPABILITIES = ["smart-imaging-access", APP_LAUNCH, BACKEND_SERVICES]
CAPABILITIES = [
    "launch-standalone",
    "launch-ehr",
    "client-public",
    "client-confidential-asymmetric",
    "context-standalone-patient",
    "context-ehr-patient",
    "permission-v1",
    "permission-v2",
    "permission-patient",
    "permission-user",
    "permission-offline",
    "permission-online",
    "sso-openid-connect",
    *IMAGING_CAPABILITIES,
]
SCOPES = [
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "offline_access",
    "online_access",
    "patient/ImagingStudy.rs",
    "patient/Patient.rs",
    "patient/Endpoint.rs",
    "patient/*.rs",
    "patient/ImagingStudy.read",
    "patient/*.read",
    "user/ImagingStudy.rs",
    "user/Patient.rs",
    "user/*.rs",
    "system/ImagingStudy.rs",
    "system/Patient.rs",
    "system/*.rs",
]
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def smart_configuration(where: Endpoints) -> dict[str, Any]:
    oauth = where.issuer
    return {
        "issuer": oauth,
        "jwks_uri": f"{oauth}/jwks",
        "authorization_endpoint": f"{oauth}/authorize",
        "token_endpoint": where.token,
        "introspection_endpoint": where.introspect,
        "revocation_endpoint": where.revoke,
        "registration_endpoint": f"{oauth}/register",
        "grant_types_supported": list(GRANT_TYPES),
        "response_types_supported": ["code"],
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(assertions.ALGORITHMS),
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": list(pkce.METHODS),
        "scopes_supported": SCOPES,
        "capabilities": CAPABILITIES,
        "associated_endpoints": [{"url": where.fhir, "capabilities": IMAGING_CAPABILITIES}],
    }


def capability_statement(where: Endpoints, date: str) -> dict[str, Any]:
    oauth = where.issuer
    security = {
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [
                    {"url": "authorize", "valueUri": f"{oauth}/authorize"},
                    {"url": "token", "valueUri": where.token},
                    {"url": "introspect", "valueUri": where.introspect},
                    {"url": "revoke", "valueUri": where.revoke},
                    {"url": "register", "valueUri": f"{oauth}/register"},
                ],
            }
        ],
        "cors": True,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
    }
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "kind": "instance",
        "software": {"name": "imagebridge", "version": __version__},
        "implementation": {"description": "imagebridge imaging FHIR server", "url": where.fhir},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{"mode": "server", "security": security, "resource": _resources()}],
    }


def _param(name: str, kind: str, definition: str) -> dict[str, str]:
    return {"name": name, "definition": f"http://hl7.org/fhir/SearchParameter/{definition}", "type": kind}


def _resources() -> list[dict[str, Any]]:
    read_search = [{"code": "read"}, {"code": "search-type"}]
    return [
        {
            "type": "ImagingStudy",
            "interaction": read_search,
            "searchInclude": ["ImagingStudy:endpoint"],
            "searchParam": [
                _param("patient", "reference", "clinical-patient"),
                _param("identifier", "token", "clinical-identifier"),
                _param("_lastUpdated", "date", "Resource-lastUpdated"),
                _param("started", "date", "ImagingStudy-started"),
                _param("modality", "token", "ImagingStudy-modality"),
            ],
        },
        {
            "type": "Patient",
            "interaction": read_search,
            "searchParam": [
                _param("_id", "token", "Resource-id"),
                _param("identifier", "token", "Patient-identifier"),
                _param("name", "string", "Patient-name"),
                _param("birthdate", "date", "individual-birthdate"),
            ],
        },
        {"type": "Endpoint", "interaction": [{"code": "read"}]},
        {
            "type": "AuditEvent",
            "interaction": read_search,
            "searchParam": [
                _param("patient", "reference", "AuditEvent-patient"),
                _param("date", "date", "AuditEvent-date"),
                _param("entity", "reference", "AuditEvent-entity"),
            ],
        },
    ]
