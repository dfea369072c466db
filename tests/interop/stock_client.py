"""A partner system written with stock libraries, against pharmagate.

Usage: stock_client.py BASE_URL CLIENT_ID CLIENT_SECRET AUTH_METHOD PATH

Discovers the server (RFC 8414), gets a token by client credentials with
Authlib's OAuth2Session (AUTH_METHOD: client_secret_basic or
client_secret_post), reads PATH with it, verifies the token with PyJWT using
nothing but the server's JWKS, revokes it (RFC 7009) and reads PATH again.
Prints one JSON object with what it saw; the Rust test asserts on it.
"""

import json
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session


def main() -> None:
    base, client_id, client_secret, method, path = sys.argv[1:6]
    meta = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()
    session = OAuth2Session(
        client_id,
        client_secret,
        scope="catalog:read",
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
    )
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    before = session.get(f"{base}{path}", timeout=10)

    access = token["access_token"]
    signing_key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(access)
    claims = jwt.decode(
        access,
        signing_key.key,
        algorithms=["EdDSA"],
        audience="pharmagate-api",
        issuer=meta["issuer"],
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )
    header = jwt.get_unverified_header(access)

    session.revoke_token(meta["revocation_endpoint"], token=access, token_type_hint="access_token")
    after = session.get(f"{base}{path}", timeout=10)

    print(json.dumps({
        "token_type": token["token_type"],
        "scope": token["scope"],
        "expires_in": token["expires_in"],
        "status_before": before.status_code,
        "body_before": before.json(),
        "header": header,
        "claims": {k: claims[k] for k in ("iss", "sub", "aud", "client_id", "scope")},
        "lifetime": claims["exp"] - claims["iat"],
        "status_after": after.status_code,
    }))


if __name__ == "__main__":
    main()
