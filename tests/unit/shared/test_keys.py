"""The encrypted API key file and `cse keys`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared import keys
from tests import ROOT

PLAIN = {"binance": {"apiKey": "AKIAEXAMPLEKEY1", "secret": "very-secret-value-1"},
         "kraken": {"apiKey": "KRAKENKEY22", "secret": "s2-secret-value", "password": "pp-33"}}


def test_round_trip_and_values_are_secret(tmp_path: Path) -> None:
    document = keys.encrypt(PLAIN, "correct horse")
    for raw in ("AKIAEXAMPLEKEY1", "very-secret-value-1", "s2-secret-value"):
        assert raw not in document, "plaintext leaked into the encrypted file"
    path = tmp_path / "api_keys.encrypted"
    path.write_text(document)
    loaded = keys.load_keys(path, "correct horse")
    assert set(loaded) == {"binance", "kraken"}
    assert isinstance(loaded["binance"]["secret"], SecretStr)
    assert loaded["kraken"]["password"].get_secret_value() == "pp-33"
    assert "very-secret-value-1" not in repr(loaded)


def test_wrong_passphrase_and_tampering_are_refused(tmp_path: Path) -> None:
    document = keys.encrypt(PLAIN, "right")
    with pytest.raises(keys.KeyFileError, match="wrong passphrase"):
        keys.decrypt(document, "wrong")
    doc = json.loads(document)
    doc["ciphertext"] = doc["ciphertext"][:-4] + ("AAAA" if doc["ciphertext"][-4:] != "AAAA" else "BBBB")
    with pytest.raises(keys.KeyFileError, match="wrong passphrase or corrupted"):
        keys.decrypt(json.dumps(doc), "right")
    with pytest.raises(keys.KeyFileError, match="not a version 1 cse-api-keys file"):
        keys.decrypt("{}", "right")


@pytest.mark.parametrize(("plain", "message"), [
    ({}, "expected a JSON object"),
    ({"x": "key"}, "expected an object"),
    ({"x": {"apiKey": "k"}}, "apiKey and secret are required"),
    ({"x": {"apiKey": "k", "secret": "s", "pin": "1"}}, "unknown fields"),
    ({"x": {"apiKey": "", "secret": "s"}}, "non-empty"),
])
def test_bad_plaintext_names_the_problem(plain: object, message: str) -> None:
    with pytest.raises(keys.KeyFileError, match=message):
        keys.validate_plaintext(plain)


def test_passphrase_sources(tmp_path: Path) -> None:
    with pytest.raises(keys.KeyFileError, match="CSE_KEYS_PASSPHRASE"):
        keys.passphrase_from_env({})
    secret_file = tmp_path / "keys_passphrase"
    secret_file.write_text("from-docker-secret\n")
    assert keys.passphrase_from_env({"CSE_KEYS_PASSPHRASE_FILE": str(secret_file)}) == "from-docker-secret"
    assert keys.passphrase_from_env({"CSE_KEYS_PASSPHRASE": "env"}) == "env"


def test_cli_encrypt_list_decrypt(tmp_path: Path) -> None:
    plain_path, enc_path, out_path = tmp_path / "plain.json", tmp_path / "k.enc", tmp_path / "out.json"
    plain_path.write_text(json.dumps(PLAIN))
    env = {**os.environ, "CSE_KEYS_PASSPHRASE": "pw-cli"}

    def cse(*args: str, environ: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "workers.cli", "keys", *args], cwd=ROOT,
                              env=environ, text=True, capture_output=True, timeout=60)

    assert cse("encrypt", str(plain_path), "--out", str(enc_path)).returncode == 0
    again = cse("encrypt", str(plain_path), "--out", str(enc_path))
    assert again.returncode == 2 and "--force" in again.stderr
    listing = cse("list", "--file", str(enc_path))
    assert listing.returncode == 0
    assert "binance: apiKey AKIA…" in listing.stdout and "kraken" in listing.stdout
    assert "very-secret" not in listing.stdout + listing.stderr
    assert cse("decrypt", "--file", str(enc_path), "--out", str(out_path)).returncode == 0
    assert json.loads(out_path.read_text()) == PLAIN
    assert oct(out_path.stat().st_mode & 0o777) == "0o600"
    no_pass = cse("list", "--file", str(enc_path),
                  environ={k: v for k, v in env.items() if not k.startswith("CSE_KEYS")})
    assert no_pass.returncode == 2 and "CSE_KEYS_PASSPHRASE" in no_pass.stderr
    assert "Traceback" not in no_pass.stderr
