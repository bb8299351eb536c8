"""Exchange API keys, encrypted at rest in ``config/api_keys.encrypted``.

The file is JSON holding AES-256-GCM ciphertext; the key is derived with scrypt from a
passphrase that never lives in the repository: ``CSE_KEYS_PASSPHRASE``, or the file named
by ``CSE_KEYS_PASSPHRASE_FILE`` (a Docker secret such as ``/run/secrets/keys_passphrase``).
The plaintext is ``{"<venue>": {"apiKey": ..., "secret": ..., "password": ...}}`` — the
field names ccxt uses for credentials.

``cse keys encrypt|decrypt|list`` manages the file. Decrypted values are returned as
``SecretStr`` and registered with the log redactor, so they never reach a log line.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import SecretStr

from shared.errors import FatalError
from shared.logs import register_secret

DEFAULT_PATH = Path("config/api_keys.encrypted")
FORMAT = "cse-api-keys"
VERSION = 1
CREDENTIAL_FIELDS = ("apiKey", "secret", "password", "uid", "privateKey", "walletAddress")
_AAD = f"{FORMAT}-v{VERSION}".encode()
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}


class KeyFileError(FatalError):
    """The key file or its passphrase is missing, wrong or malformed."""


VenueKeys = dict[str, SecretStr]


def passphrase_from_env(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    if env.get("CSE_KEYS_PASSPHRASE"):
        return env["CSE_KEYS_PASSPHRASE"]
    path = env.get("CSE_KEYS_PASSPHRASE_FILE")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise KeyFileError(f"CSE_KEYS_PASSPHRASE_FILE={path!r} cannot be read: {exc.strerror}"
                               ) from None
        if value:
            return value
    raise KeyFileError("no passphrase for the API key file: set CSE_KEYS_PASSPHRASE or "
                       "CSE_KEYS_PASSPHRASE_FILE (a Docker secret)")


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def validate_plaintext(data: Any) -> dict[str, dict[str, str]]:
    """Check the plaintext structure; errors name the venue and field."""
    if not isinstance(data, dict) or not data:
        raise KeyFileError('expected a JSON object {"<venue>": {"apiKey": ..., "secret": ...}}')
    for venue, creds in data.items():
        if not isinstance(creds, dict):
            raise KeyFileError(f"venue {venue!r}: expected an object of credentials")
        unknown = sorted(set(creds) - set(CREDENTIAL_FIELDS))
        if unknown:
            raise KeyFileError(f"venue {venue!r}: unknown fields {unknown}; allowed: "
                               f"{', '.join(CREDENTIAL_FIELDS)}")
        for field, value in creds.items():
            if not isinstance(value, str) or not value:
                raise KeyFileError(f"venue {venue!r}: {field} must be a non-empty string")
        if "apiKey" not in creds or "secret" not in creds:
            raise KeyFileError(f"venue {venue!r}: apiKey and secret are required")
    return data


def encrypt(plaintext: dict[str, dict[str, str]], passphrase: str) -> str:
    validate_plaintext(plaintext)
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    key = _derive(passphrase, salt, **_SCRYPT)
    ciphertext = AESGCM(key).encrypt(nonce, json.dumps(plaintext).encode(), _AAD)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return json.dumps({"format": FORMAT, "version": VERSION, "kdf": "scrypt", **_SCRYPT,
                       "salt": b64(salt), "nonce": b64(nonce), "ciphertext": b64(ciphertext)},
                      indent=2) + "\n"


def decrypt(document: str, passphrase: str, source: str = "key file") -> dict[str, dict[str, str]]:
    try:
        doc = json.loads(document)
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise KeyFileError(f"{source}: not a version {VERSION} {FORMAT} file")
        key = _derive(passphrase, base64.b64decode(doc["salt"]), doc["n"], doc["r"], doc["p"])
        plain = AESGCM(key).decrypt(base64.b64decode(doc["nonce"]),
                                    base64.b64decode(doc["ciphertext"]), _AAD)
    except InvalidTag:
        raise KeyFileError(f"cannot decrypt {source}: wrong passphrase or corrupted file") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{source} is malformed: {exc.__class__.__name__}") from None
    return validate_plaintext(json.loads(plain))


def load_keys(path: Path = DEFAULT_PATH, passphrase: str | None = None) -> dict[str, VenueKeys]:
    """Decrypt the key file; every value comes back as a registered ``SecretStr``."""
    try:
        document = path.read_text()
    except OSError as exc:
        raise KeyFileError(f"API key file {path} cannot be read: {exc.strerror}") from None
    plain = decrypt(document, passphrase or passphrase_from_env(), str(path))
    out: dict[str, VenueKeys] = {}
    for venue, creds in plain.items():
        out[venue] = {}
        for field, value in creds.items():
            register_secret(value)
            out[venue][field] = SecretStr(value)
    return out


def mask(value: str) -> str:
    return value[:4] + "…" if len(value) > 8 else "…"
