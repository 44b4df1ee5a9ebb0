"""Kafka TLS and SASL from Settings, as each client takes them.

kafka-python (replay, topics, the fine-tune job's reader, tools) and aiokafka (the worker's
changelog recovery) share the keyword names, so `client_kwargs` serves both; Faust takes one
credentials object (`faust_credentials`) and hands it to its own consumer, producer and admin.
"""
from __future__ import annotations

import ssl

from shopguide.errors import UserError


def client_kwargs(settings) -> dict:
    """security_protocol, ssl_context and the SASL fields for a KafkaProducer/KafkaConsumer/
    KafkaAdminClient or an AIOKafkaConsumer/AIOKafkaProducer."""
    kwargs = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_tls:
        kwargs["ssl_context"] = ssl_context(settings)
    if settings.kafka_sasl:
        kwargs.update(sasl_kwargs(settings.kafka_sasl_mechanism, settings.kafka_sasl_username, password(settings)))
    return kwargs


def sasl_kwargs(mechanism: str, username: str, secret: str) -> dict:
    return {"sasl_mechanism": mechanism, "sasl_plain_username": username, "sasl_plain_password": secret}


def faust_credentials(settings):
    """Faust's `broker_credentials`: None for PLAINTEXT."""
    import faust

    context = ssl_context(settings) if settings.kafka_tls else None
    if settings.kafka_sasl:
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=password(settings),
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=context)
    return faust.SSLCredentials(context) if context else None


def ssl_context(settings) -> ssl.SSLContext:
    """Verifies the brokers' certificates and host names against the CA file, else the system's CAs."""
    ca_file = settings.kafka_ca_file
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"SHOPGUIDE_KAFKA_CA_FILE={ca_file}: {_reason(exc)}: expected a PEM CA bundle") from None


def password(settings) -> str:
    path = settings.kafka_sasl_password_file
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"SHOPGUIDE_KAFKA_SASL_PASSWORD_FILE={path}: {_reason(exc)}") from None
    secret = text.rstrip("\r\n")  # `echo secret > file` adds a newline; the password is the line
    if not secret:
        raise UserError(f"SHOPGUIDE_KAFKA_SASL_PASSWORD_FILE={path}: the file is empty")
    return secret


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
