"""The lab's cluster CA and the client certificates it signs, made on the host.

k0slab creates the CA before k0s first starts and places it at /var/lib/k0s/pki/ca.crt + ca.key on the
controller; k0s then uses it instead of making its own (k0s docs/custom-ca.md). Because the host holds
the CA, it can make join tokens (they embed the CA certificate) and user certificates without asking
the cluster. Key type, CA name and lifetime follow what k0s itself generates (pkg/certificate):
RSA 2048, CN=kubernetes-ca, ten years.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k0slab.core.errors import K0slabError

CA_COMMON_NAME = "kubernetes-ca"
CA_DAYS = 3650
RSA_BITS = 2048
# Certificates start a little in the past, like k0s's signer does, so that a VM whose clock lags the
# host by a few minutes does not reject a brand-new certificate as "not yet valid".
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertSummary:
    """The facts a user checks on a certificate, in the words openssl uses."""

    issuer: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    key_type: str
    key_size: int

    def lines(self) -> list[str]:
        return [
            f"issuer:     {self.issuer}",
            f"subject:    {self.subject}",
            f"not before: {self.not_before:%Y-%m-%d %H:%M:%S} UTC",
            f"not after:  {self.not_after:%Y-%m-%d %H:%M:%S} UTC",
            f"key:        {self.key_type} {self.key_size} bit",
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    """(not before, not after): from BACKDATE ago until `days` from now."""
    # X.509 stores whole seconds; dropping the fraction keeps requested and stored times equal.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return now - BACKDATE, now + dt.timedelta(days=days)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    # PKCS#1 ("RSA PRIVATE KEY"), the encoding k0s writes for its own keys.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


# No certificate outlives a lab's CA (CA_DAYS); the cap also keeps date arithmetic in range.
MAX_DAYS = 36500


def validate_days(days: int, what: str = "certificate lifetime in days") -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise K0slabError(f"{what} {days!r} is invalid", f"use a whole number of days from 1 to {MAX_DAYS}")
    return days


def create_ca(common_name: str = CA_COMMON_NAME, days: int = CA_DAYS) -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate PEM, private key PEM)."""
    validate_days(days)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        _builder(name, name, key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _builder(subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey, days: int) -> x509.CertificateBuilder:
    """What every certificate k0slab makes shares: names, key, a fresh serial, the validity window."""
    start, end = _validity(days)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise K0slabError(f"{what} is not a PEM certificate: {error}", "recreate it") from error


def _load_ca(ca_cert_pem: bytes, ca_key_pem: bytes) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert = _load_cert(ca_cert_pem, "the lab CA certificate")
    try:
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise K0slabError(f"the lab CA key is not a readable PEM key: {error}", "recreate the lab") from error
    if not isinstance(key, rsa.RSAPrivateKey) or key.public_key() != cert.public_key():
        raise K0slabError("the lab CA key does not belong to the lab CA certificate", "recreate the lab")
    return cert, key


def _client_subject(common_name: str, organizations: list[str]) -> x509.Name:
    # Kubernetes reads every O value as a group and the CN as the user name. O values come first, as in
    # the certificates k0s signs, so openssl shows "O = development, CN = demo".
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in organizations]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def sign_client_cert(
    ca_cert_pem: bytes, ca_key_pem: bytes, common_name: str, organizations: list[str], days: int
) -> tuple[bytes, bytes]:
    """A new RSA key and a client certificate for it, signed by the CA: (certificate PEM, key PEM)."""
    validate_days(days)
    ca_cert, ca_key = _load_ca(ca_cert_pem, ca_key_pem)
    key = _new_key()
    cert = (
        _builder(_client_subject(common_name, organizations), ca_cert.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _dn(name: x509.Name) -> str:
    # In encoding order (what openssl prints), unlike rfc4514_string() which reverses it.
    return ", ".join(
        f"{attribute.rfc4514_attribute_name}={attribute.value}" for rdn in name.rdns for attribute in rdn
    )


def summarize_cert(cert_pem: bytes) -> CertSummary:
    cert = _load_cert(cert_pem, "the certificate")
    public_key = cert.public_key()
    key_type = "RSA" if isinstance(public_key, rsa.RSAPublicKey) else type(public_key).__name__.removeprefix("_")
    return CertSummary(
        issuer=_dn(cert.issuer),
        subject=_dn(cert.subject),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_type=key_type,
        key_size=getattr(public_key, "key_size", 0),
    )


def verify_client_cert(
    cert_pem: bytes, ca_cert_pem: bytes, common_name: str, organizations: list[str], days: int
) -> CertSummary:
    """Check that the certificate is what sign_client_cert was asked for; K0slabError on any difference."""
    cert = _load_cert(cert_pem, f"the certificate of {common_name!r}")
    ca_cert = _load_cert(ca_cert_pem, "the lab CA certificate")

    def fail(problem: str) -> K0slabError:
        return K0slabError(f"certificate for {common_name!r}: {problem}", "nothing was written; run the command again")

    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as error:
        raise fail(f"not signed by the lab CA {_dn(ca_cert.subject)} ({error or 'bad signature'})") from error
    expected = _client_subject(common_name, organizations)
    if cert.subject != expected:
        raise fail(f"subject is {_dn(cert.subject)!r}, expected {_dn(expected)!r}")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise fail("has no clientAuth extended key usage, so the API server would reject it")
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    if span != dt.timedelta(days=days) + BACKDATE:
        raise fail(f"is valid for {span - BACKDATE}, expected {days} days")
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise fail(f"is not valid now (valid {cert.not_valid_before_utc} to {cert.not_valid_after_utc})")
    summary = summarize_cert(cert_pem)
    if summary.key_type != "RSA" or summary.key_size < RSA_BITS:
        raise fail(f"has a {summary.key_type} {summary.key_size} bit key, expected RSA {RSA_BITS}")
    return summary
