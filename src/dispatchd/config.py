"""The TOML configuration: parsed and validated into frozen models, with no side effects."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .constants import CONFIG_ENV, DEFAULT_CONFIG_PATH
from .errors import ConfigError, Problem
from .models import Level

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# A daemon listening on every address is reached on loopback.
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}

# A host name's characters: it appears in log lines, a Prometheus label and file names unquoted.
_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    # Which replica this is, in status, metrics and logs; the host name is a StatefulSet pod's name.
    instance: str = Field(default_factory=lambda: socket.gethostname(), validate_default=True)
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    max_batch: PositiveInt = 1000
    auth_tokens: tuple[str, ...] = ()
    auth_tokens_file: str | None = None  # one token per line; read at start-up
    metrics_public: bool = True  # false: /metrics needs a bearer token too
    tls_cert: str | None = None
    tls_key: str | None = None
    shutdown_timeout: PositiveFloat = 8.0
    max_connections: PositiveInt = 1024  # beyond it, new connections are closed at once
    idle_timeout: PositiveFloat = 15.0  # a connection with no request in flight is closed
    read_timeout: PositiveFloat = 30.0  # a request body must arrive within this
    # Request bodies held at once (read, decoded, waiting for the commit); beyond it a request
    # waits up to inflight_wait seconds, then gets 503 + Retry-After. Bounds the daemon's memory.
    max_inflight_bytes: PositiveInt = 8 * 1024 * 1024
    inflight_wait: PositiveFloat = 2.0
    # asyncio by measurement (docs/performance.md): as many single-record requests/s as uvloop,
    # and under batch overload its workers keep up where uvloop's fall behind.
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"

    @field_validator("instance")
    @classmethod
    def _instance_name(cls, name: str) -> str:
        if not _INSTANCE.fullmatch(name):
            raise ValueError(
                f"{name!r} is not an instance name: 1-253 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit (the default is the host name)"
            )
        return name

    @field_validator("event_loop")
    @classmethod
    def _loop_installed(cls, loop: str) -> str:
        if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ValueError(
                "uvloop is not installed (pip install 'dispatchd[uvloop]'), or use \"asyncio\""
            )
        return loop

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    def url(self, port: int | None = None) -> str:
        """How a client on this machine reaches the daemon (at ``port``, if not the configured one)."""
        host = _ANY_ADDRESS.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port if port is None else port}"

    def tokens(self) -> tuple[str, ...]:
        """``auth_tokens`` plus the lines of ``auth_tokens_file``."""
        if self.auth_tokens_file is None:
            return self.auth_tokens
        lines = Path(self.auth_tokens_file).read_text(encoding="utf-8").splitlines()
        return self.auth_tokens + tuple(line.strip() for line in lines if line.strip())


class SpoolConfig(_Section):
    path: str = "var/spool.db"
    sync: Literal["off", "normal", "full"] = "normal"
    max_events: PositiveInt = 1_000_000
    # Ingest stops while the spool's filesystem has less free space than this, so that cursor
    # moves, dead letters and compaction always fit; 0 turns the check off.
    reserve_bytes: Annotated[int, Field(ge=0)] = 64 * 1024 * 1024


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    access: bool = False  # one line per HTTP request


class DispatchConfig(_Section):
    enabled: tuple[str, ...] = ("database",)
    level: Level = 20
    exclude_derived_actions: bool = True
    batch_size: PositiveInt = 500
    max_attempts: PositiveInt = 10
    backoff_initial: PositiveFloat = 0.5
    backoff_max: PositiveFloat = 30.0
    timeout: PositiveFloat = 30.0
    drain_timeout: PositiveFloat = 30.0


class Config(_Section):
    """The whole file. ``dispatchers`` tables are validated by each plugin's ``Options``."""

    # Validated from {} at each load, so that a bad host name is reported as server.instance.
    server: ServerConfig = Field(default_factory=dict, validate_default=True)
    spool: SpoolConfig = SpoolConfig()
    dispatch: DispatchConfig = DispatchConfig()
    log: LogConfig = LogConfig()
    dispatchers: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _batch_fits(self) -> Config:
        # Otherwise a full-size batch could never be accepted: 503 with Retry-After forever.
        if self.spool.max_events < self.server.max_batch:
            raise ValueError(
                f"spool.max_events ({self.spool.max_events}) must be at least server.max_batch "
                f"({self.server.max_batch})"
            )
        return self

    def dispatcher_table(self, name: str) -> dict[str, Any]:
        """The ``[dispatchers.<name>]`` table, empty if absent."""
        return dict(self.dispatchers.get(name, {}))


def expand_env(value: Any, where: str = "") -> Any:
    """Replace ``${NAME}`` (or ``${NAME:-default}``) in every string with the environment's value."""
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: _lookup(m, where), value)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else k) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _lookup(match: re.Match[str], where: str) -> str:
    name, default = match.group(1), match.group(2)
    found = os.environ.get(name, default)
    if found is None:
        loc = tuple(where.split(".")) if where else ()
        raise ConfigError(where or "config", [Problem(loc, f"environment variable {name} is not set")])
    return found


def format_errors(error: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[Problem]:
    """One ``Problem`` per pydantic error, its ``loc`` under ``prefix``."""
    return [Problem((*prefix, *item["loc"]), item["msg"]) for item in error.errors()]


def parse(text: str, path: str = "<string>") -> Config:
    """Validate TOML text into a ``Config``; raise ``ConfigError`` naming every bad key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [Problem((), f"invalid TOML: {exc}")]) from None
    try:
        raw = expand_env(raw)
    except ConfigError as exc:
        raise ConfigError(path, exc.problems) from None
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(path, format_errors(exc)) from None


def load(path: str | Path) -> Config:
    """Read and validate the file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [Problem((), f"cannot read: {exc}")]) from None
    return parse(text, str(path))


def default_path() -> str:
    """``$DISPATCHD_CONFIG`` or ``config/dispatchd.toml``."""
    return os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_PATH)
