"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives, with optional TLS and AUTH.

``SmtpServer(tmp_path, security="starttls", users={"u": "p"})`` starts a server with a fresh
self-signed certificate (``ca_file`` is what a client must trust); ``messages`` holds every
accepted message (envelope + parsed ``EmailMessage``). ``fail_data_with`` makes the next DATA
answer with an SMTP error, to test retries.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.doubles.waits import PATIENCE


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpServer:
    def __init__(self, folder: Path, *, security: str = "none", users: dict[str, str] | None = None) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages: list[Received] = []
        self.fail_data_with: list[str] = []  # e.g. ["451 4.3.0 try again later"], consumed one per DATA
        self.refuse_rcpt: set[str] = set()
        self._lock = threading.Lock()
        self.port = free_port()
        self.ca_file: Path | None = None
        server = self
        context: ssl.SSLContext | None = None
        if security != "none":
            cert, key = self_signed_cert(folder)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            self.ca_file = cert

        class Handler:
            async def handle_RCPT(self, _srv: Any, _session: Any, envelope: Any, address: str, _opts: Any) -> str:
                if address in server.refuse_rcpt:
                    return "550 5.1.1 no such user"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, _srv: Any, _session: Any, envelope: Any) -> str:
                with server._lock:
                    if server.fail_data_with:
                        return server.fail_data_with.pop(0)
                    server.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
                return "250 2.0.0 queued"

        def authenticate(_srv: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any) -> Any:
            ok = users is not None and users.get(data.login.decode()) == data.password.decode()
            return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535

        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port, "ready_timeout": PATIENCE}
        if users is not None:
            kwargs["authenticator"] = authenticate
            kwargs["auth_require_tls"] = security != "none"
        if security == "starttls":
            kwargs["tls_context"] = context
            kwargs["require_starttls"] = True
        elif security == "tls":
            kwargs["ssl_context"] = context
            kwargs["server_hostname"] = "localhost"
        self._controller = Controller(Handler(), **kwargs)
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.messages)
