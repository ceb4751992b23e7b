"""MQTT output: broker, identity, credentials, TLS and delivery guarantees."""

from __future__ import annotations

import re
import socket
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from avcc_stream.config.common import Credentials, RuleError, TlsSettings

TOPIC_PREFIX_PATTERN = re.compile(r"^[^/+#\s]+(/[^/+#\s]+)*$")


def default_client_id() -> str:
    """A stable id per host, so a restarted daemon takes over its own session."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "host"
    return f"avcc-stream-{host}"[:64]


class MqttSettings(Credentials):
    enabled: bool = Field(default=True, title="Publish to MQTT")
    host: str = Field(default="127.0.0.1", min_length=1, title="Broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, title="Broker port (8883 is usual with TLS)")
    protocol: Literal["3.1.1", "5"] = Field(default="3.1.1", title="MQTT protocol version")
    client_id: str = Field(
        default_factory=default_client_id, min_length=1, max_length=128, title="Client id"
    )
    topic_prefix: str = Field(default="crowd", title="Topics are <prefix>/<camera>/<kind>")
    qos: Literal[0, 1, 2] = Field(
        default=1, title="1: publish waits for the broker's PUBACK; 0: fire and forget"
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, title="Keep-alive interval")
    connect_timeout_s: float = Field(
        default=10.0, gt=0, le=300, title="How long start() waits for the first connection"
    )
    publish_timeout_s: float = Field(
        default=5.0, gt=0, le=300,
        title="How long publish() waits for the broker's acknowledgement before giving up",
    )
    reconnect_min_s: float = Field(default=1.0, gt=0, title="First reconnect delay")
    reconnect_max_s: float = Field(default=30.0, gt=0, title="Reconnect delay cap (doubles up to it)")
    tls: TlsSettings = Field(default_factory=TlsSettings, title="TLS")

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as an int and `protocol: 3.1.1` as a string.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _safe_prefix(cls, value: str) -> str:
        if not TOPIC_PREFIX_PATTERN.fullmatch(value):
            raise ValueError(
                f"invalid topic prefix {value!r}: expected topic levels separated by '/', "
                "without '+', '#', spaces, or a leading/trailing/double '/'"
            )
        return value

    @model_validator(mode="after")
    def _check_rules(self) -> MqttSettings:
        if self.password is not None and not self.username:
            source = next(
                key for key in ("password", "password_file", "password_credential")
                if getattr(self, key) is not None
            )
            raise RuleError("a password needs a username (MQTT sends none without one)", source)
        if self.reconnect_max_s < self.reconnect_min_s:
            raise RuleError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be >= reconnect_min_s "
                f"({self.reconnect_min_s})",
                "reconnect_max_s",
            )
        return self
