"""The §4 set-up of smart-imaging-access.md: patients A and B, studies SA1, SA2 (A) and SB1 (B), apps and users."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from dicomweb_client import DICOMwebClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from pydicom.uid import generate_uid

from imagebridge.auth.clients import AccessGrant, Client, ClientKind
from imagebridge.auth.server import AuthorizationServer
from imagebridge.auth.users import Role
from imagebridge.fhir.index import fhir_id
from tests.factory import make_instance

PASSWORD = "correct horse battery"
REDIRECT = "http://127.0.0.1:9/callback"


@dataclass(frozen=True)
class World:
    base: str
    a: str
    b: str
    sa1: str
    sa2: str
    sb1: str
    rs_key: RSAKey
    ec_key: ECKey

    @property
    def fhir(self) -> str:
        return f"{self.base}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.base}/oauth/token"


def build_world(base: str, authz: AuthorizationServer) -> World:
    """Store three studies over DICOMweb and register the users and clients the scenarios use."""
    sa1, sa2, sb1 = generate_uid(), generate_uid(), generate_uid()
    datasets = [
        make_instance(
            study=sa1,
            PatientID="MRN-A",
            IssuerOfPatientID="HOSP",
            PatientName="Alpha^Ann",
            PatientBirthDate="19800101",
            PatientSex="F",
            StudyDate="20230101",
            Modality="CT",
        ),
        make_instance(
            study=sa1,
            PatientID="MRN-A",
            IssuerOfPatientID="HOSP",
            PatientName="Alpha^Ann",
            PatientBirthDate="19800101",
            PatientSex="F",
            StudyDate="20230101",
            Modality="CT",
            InstanceNumber=2,
        ),
        make_instance(
            study=sa2,
            PatientID="MRN-A",
            IssuerOfPatientID="HOSP",
            PatientName="Alpha^Ann",
            PatientBirthDate="19800101",
            PatientSex="F",
            StudyDate="20240202",
            Modality="MR",
            StudyTime="101500",
            TimezoneOffsetFromUTC="+0100",
        ),
        make_instance(
            study=sb1,
            PatientID="MRN-B",
            IssuerOfPatientID="HOSP",
            PatientName="Beta^Bob",
            PatientBirthDate="20100505",
            PatientSex="M",
            StudyDate="20230303",
            Modality="CT",
        ),
    ]
    DICOMwebClient(f"{base}/dicomweb").store_instances(datasets)
    a, b = fhir_id("MRN-A", "HOSP"), fhir_id("MRN-B", "HOSP")
    rs_key = RSAKey.generate_key(2048, auto_kid=True)
    ec_key = ECKey.generate_key("P-384", auto_kid=True)
    _register(authz, a, b, sa1, rs_key, ec_key)
    return World(base, a, b, sa1, sa2, sb1, rs_key, ec_key)


def _register(authz: AuthorizationServer, a: str, b: str, sa1: str, rs_key: RSAKey, ec_key: ECKey) -> None:
    authz.users.add("ann", PASSWORD, Role.PATIENT, display_name="Ann Alpha", patients=(a,))
    authz.users.add("parent", PASSWORD, Role.PROXY, display_name="Pat Parent", patients=(a, b))
    authz.users.add("drx", PASSWORD, Role.CLINICIAN, display_name="Dr X")
    authz.clients.add(Client("viewer", "Imaging Viewer", ClientKind.PUBLIC, (REDIRECT,)))
    jwks = {
        "keys": [
            rs_key.as_dict(private=False) | {"kid": rs_key.kid},
            ec_key.as_dict(private=False) | {"kid": ec_key.kid},
        ]
    }
    authz.clients.add(
        Client(
            "backend",
            "AI service",
            ClientKind.CONFIDENTIAL_ASYMMETRIC,
            jwks=jwks,
            scope="system/ImagingStudy.rs system/Patient.rs",
            policy=AccessGrant((a,), (sa1,)),
        )
    )
    authz.clients.add(
        Client(
            "everything",
            "Analytics",
            ClientKind.CONFIDENTIAL_ASYMMETRIC,
            jwks=jwks,
            scope="system/ImagingStudy.rs system/*.rs",
            policy=AccessGrant("*", "*"),
        )
    )


def assertion(
    key: RSAKey | ECKey,
    client_id: str,
    aud: str,
    *,
    alg: str | None = None,
    exp_in: int = 240,
    jti: str | None = None,
) -> str:
    """A SMART backend-services client assertion (RFC 7523), signed RS384 or ES384."""
    alg = alg or ("RS384" if isinstance(key, RSAKey) else "ES384")
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": now + exp_in,
        "iat": now,
        "jti": jti or uuid.uuid4().hex,
    }
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def backend_form(key: RSAKey | ECKey, client_id: str, aud: str, **extra: Any) -> dict[str, str]:
    return {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion(key, client_id, aud),
        **extra,
    }


def backend_token(world: World, scope: str = "system/ImagingStudy.rs", client_id: str = "backend") -> str:
    form = backend_form(
        world.rs_key, client_id, world.token_url, grant_type="client_credentials", scope=scope
    )
    response = httpx.post(world.token_url, data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize(
    world: World,
    scope: str,
    *,
    username: str = "ann",
    client_id: str = "viewer",
    untick: tuple[str, ...] = (),
    patient: str | None = None,
) -> dict[str, Any]:
    """A standalone launch through the sign-in and consent pages with plain form posts; the token response."""
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "s1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "aud": world.fhir,
    }
    code = consent_code(world, params, username=username, untick=untick, patient=patient)
    response = httpx.post(
        world.token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def consent_code(
    world: World,
    params: dict[str, str],
    *,
    username: str = "ann",
    untick: tuple[str, ...] = (),
    patient: str | None = None,
) -> str:
    with httpx.Client(base_url=f"{world.base}/oauth") as browser:
        page = browser.get("/authorize", params=params)
        assert page.status_code == 200, page.text
        signed_in = browser.post("/authorize", data={**params, "username": username, "password": PASSWORD})
        assert signed_in.status_code == 200, signed_in.text
        ticket = hidden(signed_in.text, "ticket")
        scopes = [s for s in params["scope"].split() if s not in untick]
        form: dict[str, Any] = {"ticket": ticket, "decision": "approve", "scope": scopes}
        if patient:
            form["patient"] = patient
        done = browser.post("/consent", data=form)
    assert done.status_code == 303, done.text
    query = parse_qs(urlsplit(done.headers["location"]).query)
    assert query["state"] == ["s1"]
    return query["code"][0]


def hidden(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
