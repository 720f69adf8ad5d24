"""Client TLS for the built-in dispatchers: the context their ``ssl_*`` options describe, and
what a failed handshake means, in words that name the option to look at."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: the chain is
# trusted, so the CA file is right and only the url's host is not.
NOT_FOR_HOST = frozenset({62, 64})
CHAIN_DEPTH = 8  # drivers wrap an ssl error once or twice; never loop on a cyclic chain


def client_context(ca_file: str | None, cert_file: str | None, key_file: str | None,
                   verify: bool) -> ssl.SSLContext:
    """A client context; ``ValueError`` naming the option when a file cannot be loaded."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ValueError(f"ssl_ca_file {ca_file!r} cannot be loaded: {_reason(exc)}") from None
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ValueError) as exc:
            files = f"ssl_cert_file {cert_file!r}" + (f", ssl_key_file {key_file!r}"
                                                       if key_file else "")
            raise ValueError(f"{files} cannot be loaded: {_reason(exc)}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def handshake_failure(exc: BaseException) -> str | None:
    """Why TLS failed, when ``exc`` is an ssl error or a driver's error wrapping one; else None."""
    for seen in _chain(exc):
        if isinstance(seen, ssl.SSLCertVerificationError) and seen.verify_code in NOT_FOR_HOST:
            return (f"TLS: certificate verify failed ({seen.verify_message}): the server's "
                    "certificate is trusted but not for the url's host; use a host name or "
                    "address the certificate holds (or ssl_verify = false)")
        if isinstance(seen, ssl.SSLCertVerificationError):
            return (f"TLS: certificate verify failed ({seen.verify_message or _reason(seen)}): "
                    "ssl_ca_file must hold the CA that signed the server's certificate, and the "
                    "url's host must be a name in it (or ssl_verify = false)")
        if isinstance(seen, ssl.SSLError):
            if seen.reason == "WRONG_VERSION_NUMBER":  # plain-text bytes where TLS was due
                return "TLS: the server answered in plain text: it does not offer TLS"
            return f"TLS: the handshake failed ({_reason(seen)})"
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    for _ in range(CHAIN_DEPTH):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
