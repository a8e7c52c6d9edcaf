"""The lab CA and client certificates: checked with cryptography and with the real openssl CLI."""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k0slab.cluster import pki
from k0slab.core.errors import K0slabError


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return pki.create_ca()


@pytest.fixture(scope="module")
def demo(ca) -> tuple[bytes, bytes]:
    return pki.sign_client_cert(*ca, "demo", ["development"], 30)


def test_ca_is_what_k0s_would_make(ca):
    cert = x509.load_pem_x509_certificate(ca[0])
    assert cert.subject.rfc4514_string() == cert.issuer.rfc4514_string() == "CN=kubernetes-ca"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert isinstance(cert.public_key(), rsa.RSAPublicKey) and cert.public_key().key_size == 2048
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=3649) < lifetime <= dt.timedelta(days=3650)
    cert.verify_directly_issued_by(cert)
    assert ca[1].startswith(b"-----BEGIN RSA PRIVATE KEY-----")


def test_client_cert_is_signed_by_the_ca_with_exact_fields(ca, demo):
    cert = x509.load_pem_x509_certificate(demo[0])
    ca_cert = x509.load_pem_x509_certificate(ca[0])
    cert.verify_directly_issued_by(ca_cert)  # raises on a wrong issuer or signature
    assert [(a.oid, a.value) for a in cert.subject] == [
        (NameOID.ORGANIZATION_NAME, "development"), (NameOID.COMMON_NAME, "demo")
    ]
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=30) + pki.BACKDATE
    assert cert.public_key().key_size == 2048


def test_several_groups_become_several_o_values(ca):
    cert_pem, _ = pki.sign_client_cert(*ca, "jane", ["dev", "ops"], 1)
    summary = pki.verify_client_cert(cert_pem, ca[0], "jane", ["dev", "ops"], 1)
    assert summary.subject == "O=dev, O=ops, CN=jane"
    groups = x509.load_pem_x509_certificate(cert_pem).subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [g.value for g in groups] == ["dev", "ops"]


def test_summary_reads_like_openssl(ca, demo):
    summary = pki.verify_client_cert(demo[0], ca[0], "demo", ["development"], 30)
    text = str(summary)
    assert "issuer:     CN=kubernetes-ca" in text
    assert "subject:    O=development, CN=demo" in text
    assert "key:        RSA 2048 bit" in text
    assert summary.not_after - summary.not_before == dt.timedelta(days=30) + pki.BACKDATE


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_openssl_cli_agrees(tmp_path, demo):
    path = tmp_path / "demo.crt"
    path.write_bytes(demo[0])
    out = subprocess.run(["openssl", "x509", "-noout", "-subject", "-issuer", "-in", str(path)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["subject=O = development, CN = demo", "issuer=CN = kubernetes-ca"]


@pytest.mark.parametrize("name,groups,days,problem", [
    ("other", ["development"], 30, "subject is"),
    ("demo", ["ops"], 30, "subject is"),
    ("demo", ["development", "ops"], 30, "subject is"),
    ("demo", ["development"], 31, "expected 31 days"),
])
def test_verify_refuses_any_difference(ca, demo, name, groups, days, problem):
    with pytest.raises(K0slabError, match=problem):
        pki.verify_client_cert(demo[0], ca[0], name, groups, days)


def test_verify_refuses_another_ca(demo):
    other_ca, _ = pki.create_ca()
    with pytest.raises(K0slabError, match="not signed by the lab CA"):
        pki.verify_client_cert(demo[0], other_ca, "demo", ["development"], 30)


def test_verify_refuses_a_certificate_without_client_auth(ca):
    # Signed by the lab CA for the right subject, but a server certificate: the API server would reject it.
    ca_cert = x509.load_pem_x509_certificate(ca[0])
    ca_key = serialization.load_pem_private_key(ca[1], password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - pki.BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "development"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, "demo")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + pki.BACKDATE + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(K0slabError, match="clientAuth"):
        pki.verify_client_cert(cert.public_bytes(serialization.Encoding.PEM), ca[0], "demo", ["development"], 30)


def test_sign_refuses_a_key_from_another_ca(ca):
    _, other_key = pki.create_ca()
    with pytest.raises(K0slabError, match="does not belong"):
        pki.sign_client_cert(ca[0], other_key, "demo", ["development"], 1)


@pytest.mark.parametrize("days", [0, -1, 1.5, True, "3"])
def test_days_must_be_whole_and_positive(ca, days):
    with pytest.raises(K0slabError, match="whole number"):
        pki.sign_client_cert(*ca, "demo", ["development"], days)
