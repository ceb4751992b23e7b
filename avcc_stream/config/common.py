"""Pieces every config area shares: the strict base model, rule errors with a key path,
credentials (inline, from a file, or from a systemd credential) and TLS options.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, model_validator


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a venue's YAML must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class RuleError(ValueError):
    """A cross-field rule failed; `loc` names the key (relative to the model) to blame.

    Pydantic reports a model validator's error at the model's own path; the loader appends
    this `loc` so the message points at the exact key and YAML line (e.g. `levels.warn`).
    """

    def __init__(self, message: str, *loc: str | int) -> None:
        super().__init__(message)
        self.loc: tuple[str | int, ...] = loc


def read_secret_file(path: Path) -> SecretStr:
    """The file's content without its trailing newline (as `echo secret > file` writes it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {str(path)!r}: {exc.strerror}") from None
    return SecretStr(text.rstrip("\r\n"))


class Credentials(StrictModel):
    """Username and password; the password may come inline (use `${ENV_VAR}`), from a file,
    or from a systemd credential (`LoadCredential=NAME:...`, read from $CREDENTIALS_DIRECTORY).
    Whatever the source, the password is a SecretStr: repr and logs show `**********`."""

    username: str | None = Field(default=None, title="User name")
    password: SecretStr | None = Field(default=None, title="Password (e.g. ${MQTT_PASSWORD})")
    password_file: Path | None = Field(default=None, title="File holding the password")
    password_credential: str | None = Field(
        default=None, title="systemd credential name holding the password"
    )

    @model_validator(mode="after")
    def _resolve_password(self) -> Credentials:
        sources = [
            key
            for key in ("password", "password_file", "password_credential")
            if getattr(self, key) is not None
        ]
        if len(sources) > 1:
            raise RuleError(
                f"give the password one way only, not {' and '.join(sources)}", sources[1]
            )
        if self.password_file is not None:
            try:
                self.password = read_secret_file(self.password_file)
            except ValueError as exc:
                raise RuleError(str(exc), "password_file") from None
        elif self.password_credential is not None:
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise RuleError(
                    "password_credential needs $CREDENTIALS_DIRECTORY (set by systemd's "
                    "LoadCredential=); it is not set",
                    "password_credential",
                )
            if "/" in self.password_credential:
                raise RuleError("a credential name has no '/'", "password_credential")
            try:
                self.password = read_secret_file(Path(directory) / self.password_credential)
            except ValueError as exc:
                raise RuleError(str(exc), "password_credential") from None
        return self


class TlsSettings(StrictModel):
    """TLS towards a broker or server. With no `ca_file` the system trust store is used."""

    enabled: bool = Field(default=False, title="Use TLS")
    ca_file: FilePath | None = Field(default=None, title="CA certificate (PEM)")
    cert_file: FilePath | None = Field(default=None, title="Client certificate (PEM)")
    key_file: FilePath | None = Field(default=None, title="Client private key (PEM)")
    insecure: bool = Field(
        default=False, title="Skip server certificate and host name checks (testing only)"
    )

    @model_validator(mode="after")
    def _check_files(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            given, missing = ("cert_file", "key_file") if self.key_file is None else ("key_file", "cert_file")
            raise RuleError(f"a client certificate needs both cert_file and key_file ({missing} is missing)", given)
        if not self.enabled:
            for key in ("ca_file", "cert_file", "key_file"):
                if getattr(self, key) is not None:
                    raise RuleError(f"{key} is set but tls.enabled is false", "enabled")
        return self
