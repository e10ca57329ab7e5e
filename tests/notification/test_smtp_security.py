"""E-mail over STARTTLS with credentials, and over implicit TLS, to a real SMTP server that requires them."""

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from services.notification.channels import EmailChannel, Mail, PermanentDeliveryError, TemporaryDeliveryError
from shared.infra import free_port
from shared.settings import Settings

USER, PASSWORD = "selfex", "s3cret-for-tests"


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp.pem", folder / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


class Kept:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


def authenticator(kept: Kept):
    def check(server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode())
        if ok:
            kept.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    return check


def mail() -> Mail:
    return Mail("p@example.se", "Subject", "text\n", "<p>html</p>", "<m-1@selfex.invalid>", "en")


@pytest.fixture
def tls(tmp_path):
    cert_path, key_path = certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, context


async def test_starttls_with_credentials_from_settings(tls):
    cert_path, context = tls
    kept = Kept()
    port = free_port()
    server = Controller(
        kept,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator(kept),
        auth_required=True,
    )
    server.start()
    try:
        settings = Settings(
            smtp_port=port, smtp_security="starttls", smtp_username=USER, smtp_password=SecretStr(PASSWORD), smtp_ca_file=str(cert_path)
        )
        await EmailChannel(settings).send(mail())
        with pytest.raises(PermanentDeliveryError, match="SMTP 535"):
            await EmailChannel(settings.model_copy(update={"smtp_password": SecretStr("wrong")})).send(mail())
        with pytest.raises(PermanentDeliveryError, match="SMTP 530"):  # the server requires STARTTLS first
            await EmailChannel(settings.model_copy(update={"smtp_security": "none", "smtp_username": ""})).send(mail())
    finally:
        server.stop()
    assert len(kept.messages) == 1 and kept.logins == [USER]
    assert b"Message-ID: <m-1@selfex.invalid>" in kept.messages[0]


async def test_implicit_tls_and_a_server_not_trusted(tls, tmp_path):
    cert_path, context = tls
    kept = Kept()
    port = free_port()
    server = Controller(kept, hostname="127.0.0.1", port=port, ssl_context=context)
    server.start()
    try:
        settings = Settings(smtp_port=port, smtp_security="tls", smtp_ca_file=str(cert_path))
        await EmailChannel(settings).send(mail())
        with pytest.raises(TemporaryDeliveryError):  # the system's authorities do not know this certificate
            await EmailChannel(settings.model_copy(update={"smtp_ca_file": ""})).send(mail())
    finally:
        server.stop()
    assert len(kept.messages) == 1


async def test_a_refused_connection_is_temporary():
    with pytest.raises(TemporaryDeliveryError, match="unreachable"):
        await EmailChannel(Settings(smtp_port=free_port())).send(mail())
