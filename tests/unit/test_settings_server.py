"""server.flavor and the appliance's TLS settings."""

from __future__ import annotations

import pytest

from config import ConfigError, load_settings
from tests.conftest import raw_config
from tests.helpers.tls import make_pair

SECRET = ["obs-farm:tlsPrivateKey"]


def test_appliance_is_the_default_flavor():
    assert load_settings(raw_config()).server.flavor == "appliance"
    assert load_settings(raw_config(server={"flavor": "backend"})).server.flavor == "backend"


def test_frontend_image_says_what_replaced_it():
    with pytest.raises(ConfigError) as err:
        load_settings(raw_config(server={"frontendImage": "registry.example.org/obs:2.10"}))
    (message,) = err.value.problems
    assert message.startswith("obs-farm:server.frontendImage was removed")
    assert "server.flavor: appliance" in message and "server.flavor: backend" in message


def test_supplied_certificate_and_secret_key_are_accepted(tls_pair):
    cert, key = tls_pair
    s = load_settings(raw_config(tlsCertificate=cert, tlsPrivateKey=key), SECRET)
    assert s.tls_certificate == cert and s.tls_private_key == key


def test_rsa_keys_are_accepted():
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n"
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    s = load_settings(raw_config(tlsCertificate=cert, tlsPrivateKey=key), SECRET)
    assert s.tls_private_key == key


def test_key_in_plain_text_is_refused_without_showing_it(tls_pair):
    cert, key = tls_pair
    with pytest.raises(ConfigError) as err:
        load_settings(raw_config(tlsCertificate=cert, tlsPrivateKey=key))
    text = str(err.value)
    assert "obs-farm:tlsPrivateKey must be a Pulumi secret" in text
    assert "pulumi config set --secret obs-farm:tlsPrivateKey" in text
    assert key.splitlines()[1] not in text


@pytest.mark.parametrize(
    "key",
    [
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG\n",
        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg",
    ],
    ids=["openssh", "truncated", "bare-base64"],
)
def test_a_key_apache_cannot_read_is_refused_without_showing_it(tls_pair, key):
    cert, _ = tls_pair
    with pytest.raises(ConfigError) as err:
        load_settings(raw_config(tlsCertificate=cert, tlsPrivateKey=key), SECRET)
    assert str(err.value) == (
        "obs-farm:tlsPrivateKey must be a PEM private key (-----BEGIN PRIVATE KEY-----...)"
    )


def test_certificate_and_key_come_together(tls_pair):
    cert, key = tls_pair
    with pytest.raises(ConfigError, match="tlsCertificate is set but obs-farm:tlsPrivateKey"):
        load_settings(raw_config(tlsCertificate=cert))
    with pytest.raises(ConfigError, match="tlsPrivateKey is set but obs-farm:tlsCertificate"):
        load_settings(raw_config(tlsPrivateKey=key), SECRET)


def test_backend_flavor_serves_no_https(tls_pair):
    cert, key = tls_pair
    raw = raw_config(tlsCertificate=cert, tlsPrivateKey=key, server={"flavor": "backend"})
    with pytest.raises(ConfigError, match=r"server\.flavor is backend, which serves no HTTPS"):
        load_settings(raw, SECRET)


def test_a_second_pair_is_a_different_key():
    # The helper makes fresh keys: the mismatch tests rely on it.
    assert make_pair()[1] != make_pair()[1]
