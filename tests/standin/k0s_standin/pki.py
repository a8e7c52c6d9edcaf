"""The cluster CA and the certificates it signs."""
from __future__ import annotations

import datetime as dt
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .common import PKI_DIR, host_path, now_utc, write_file
from .config import is_ip


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def x509_name(common_name: str, organizations: list[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations if org]
    return x509.Name(attributes + [x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class ClusterCA:
    def __init__(self, cert: x509.Certificate, key):
        self.cert, self.key = cert, key

    @property
    def cert_pem(self) -> bytes:
        return pem_cert(self.cert)

    @classmethod
    def load(cls) -> ClusterCA:
        with open(host_path(PKI_DIR + "/ca.crt"), "rb") as crt, open(host_path(PKI_DIR + "/ca.key"), "rb") as key:
            return cls(x509.load_pem_x509_certificate(crt.read()), serialization.load_pem_private_key(key.read(), None))

    @classmethod
    def ensure(cls) -> ClusterCA:
        """Use a CA placed in pki/ before the first start (k0s docs/custom-ca.md), else create one."""
        if os.path.exists(host_path(PKI_DIR + "/ca.crt")) and os.path.exists(host_path(PKI_DIR + "/ca.key")):
            return cls.load()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509_name("kubernetes-ca")
        start = now_utc() - dt.timedelta(minutes=1)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=True, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        write_file(PKI_DIR + "/ca.key", pem_key(key), 0o600)
        write_file(PKI_DIR + "/ca.crt", pem_cert(cert), 0o644)
        return cls(cert, key)

    def issue(self, public_key, common_name: str, organizations: list[str] = (), *, client: bool = True,
              server_names: list[str] = (), valid_seconds: float = 365 * 86400) -> x509.Certificate:
        start = now_utc() - dt.timedelta(minutes=1)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (x509.CertificateBuilder().subject_name(x509_name(common_name, organizations))
                   .issuer_name(self.cert.subject).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(start)
                   .not_valid_after(start + dt.timedelta(seconds=valid_seconds + 60))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=True, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=False, crl_sign=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        if server_names:
            alt_names = []
            for entry in dict.fromkeys(server_names):
                if is_ip(entry):
                    alt_names.append(x509.IPAddress(ipaddress.ip_address(entry)))
                else:
                    alt_names.append(x509.DNSName(entry))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_rsa_client(self, common_name: str, organizations: list[str], valid_seconds: float):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self.issue(key.public_key(), common_name, organizations, valid_seconds=valid_seconds), key


