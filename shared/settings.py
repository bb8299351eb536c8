"""Settings shared by every worker.

Each part reads its own environment prefix (``CSE_KAFKA_``, ``CSE_REDIS_``, ...), so a
worker's settings class is a composition of the parts it uses. The rebalance variables
are exactly those of the deployment guide (``CSE_REBALANCE_*``) with its defaults.

Secrets are ``SecretStr``; in Swarm they may also be read from ``/run/secrets`` (the
directory is configurable with ``CSE_SECRETS_DIR``).

A bad value never produces a traceback wall: :func:`load` turns pydantic's
``ValidationError`` into :class:`SettingsError`, whose message is one line per bad
variable naming the variable, the value and what is allowed.
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import annotated_types as at
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import FatalError
from shared.messages import split_symbol
from shared.rediskeys import DEFAULT_PREFIX

Port = Annotated[int, Field(ge=0, le=65535)]


def _secrets_dir() -> str | None:
    path = os.environ.get("CSE_SECRETS_DIR", "/run/secrets")
    return path if Path(path).is_dir() else None


class SettingsPart(BaseSettings):
    """Base of every settings part: env only, unknown variables ignored, values validated.

    A part reads one prefix (``model_config = SettingsConfigDict(env_prefix=...)``); a
    service's settings (``workers/<service>/settings.py``) compose the parts it uses."""

    model_config = SettingsConfigDict(
        extra="ignore",
        validate_default=True,
        case_sensitive=False,
        secrets_dir=_secrets_dir(),
    )


class KafkaSettings(SettingsPart):
    """Kafka connection and consumer tuning."""

    model_config = SettingsConfigDict(env_prefix="CSE_KAFKA_")

    bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1)
    client_id: str = "cryptospreadedge"
    # Tansu answers a waiting fetch only when the wait expires: keep it short.
    fetch_max_wait_ms: int = Field(10, ge=0, le=5000)
    session_timeout_ms: int = Field(10_000, ge=1000, le=300_000)
    heartbeat_interval_ms: int = Field(3_000, ge=100, le=60_000)
    max_poll_records: int = Field(1000, ge=1, le=100_000)
    linger_ms: int = Field(1, ge=0, le=1000)
    partitions: int = Field(6, ge=1, le=1024)
    # How long a consumer may be unable to fetch or commit before it is rebuilt.
    stall_timeout_s: float = Field(15.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> KafkaSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(
                "CSE_KAFKA_HEARTBEAT_INTERVAL_MS must be at most a third of "
                f"CSE_KAFKA_SESSION_TIMEOUT_MS ({self.heartbeat_interval_ms} > "
                f"{self.session_timeout_ms}/3)"
            )
        return self


class RedisSettings(SettingsPart):
    """Redis used for leader election, idempotency claims and the kill switch."""

    model_config = SettingsConfigDict(env_prefix="CSE_REDIS_")

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    key_prefix: str = DEFAULT_PREFIX
    socket_timeout_s: float = Field(5.0, gt=0, le=120)
    max_connections: int = Field(64, ge=1, le=10_000,
                                 description="connections per process; more concurrent commands wait "
                                             "for one (up to socket_timeout_s)")


class StoreSettings(SettingsPart):
    """Time-series store reached through the InfluxDB v2 write API."""

    model_config = SettingsConfigDict(env_prefix="CSE_INFLUX_")

    url: str = Field("http://127.0.0.1:8086", pattern=r"^https?://")
    token: SecretStr = SecretStr("")
    org: str = "cryptospreadedge"
    bucket: str = "portfolio"
    batch_size: int = Field(5000, ge=1, le=100_000)
    flush_interval_s: float = Field(1.0, gt=0, le=300)
    max_buffer: int = Field(200_000, ge=1)
    timeout_s: float = Field(10.0, gt=0, le=300)


class ObservabilitySettings(SettingsPart):
    """Logging and the metrics/health HTTP endpoint."""

    model_config = SettingsConfigDict(env_prefix="CSE_")

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    metrics_host: str = "0.0.0.0"
    # None: the worker's own default (9001 main/rebalancer via CSE_REBALANCE_PROM_PORT,
    # 9002 monitor, 9003 arbitrage).
    metrics_port: Port | None = None
    drain_timeout_s: float = Field(20.0, gt=0, le=600)
    # A worker is unhealthy when its loop has not beaten for this long.
    heartbeat_timeout_s: float = Field(30.0, gt=0, le=3600)


def split_list(text: str) -> list[str]:
    """The items of a comma-separated setting, stripped; empty items dropped."""
    return [p.strip() for p in text.split(",") if p.strip()]


def split_pairs(text: str, form: str) -> list[tuple[str, str]]:
    """``"a=1, b=2"`` -> ``[("a", "1"), ("b", "2")]``; ValueError naming the item that is not
    ``name=value`` (``form`` says what was expected)."""
    pairs = []
    for item in split_list(text):
        name, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not name or not value:
            raise ValueError(f"{item!r} is not {form}")
        pairs.append((name, value))
    return pairs


DEV_SIM_API_KEY = "venue-sim-dev-key"
DEV_SIM_API_SECRET = "venue-sim-dev-secret"


@dataclass(frozen=True)
class VenueSpec:
    name: str
    kind: str  # "sim" | "ccxt"
    target: str  # base URL for sim, ccxt id otherwise


def parse_venues(text: str) -> list[VenueSpec]:
    """``"a=http://127.0.0.1:9101,binance=binance"`` -> venue specs (validated)."""
    import ccxt  # here, not at the top: most importers of the settings never parse venues

    specs: list[VenueSpec] = []
    for name, target in split_pairs(text, "name=URL or name=ccxt-id"):
        if any(s.name == name for s in specs):
            raise ValueError(f"venue {name!r} is listed twice")
        if target.startswith(("http://", "https://")):
            specs.append(VenueSpec(name, "sim", target.rstrip("/")))
        elif target in ccxt.exchanges:
            specs.append(VenueSpec(name, "ccxt", target))
        else:
            raise ValueError(f"venue {name!r}: {target!r} is neither an http(s) URL nor a ccxt id")
    return specs


class VenueSettings(SettingsPart):
    """Which venues and symbols, and how to reach them."""

    model_config = SettingsConfigDict(env_prefix="CSE_")

    venues: str = Field("", description="name=URL or name=ccxt-id, comma-separated")
    symbols: str = Field("BTC/USDT,ETH/USDT,SOL/USDT,BNB/USDT,XRP/USDT",
                         description="ccxt symbols, comma-separated")
    keys_file: Path = Path("config/api_keys.encrypted")
    sim_api_key: SecretStr = SecretStr(DEV_SIM_API_KEY)
    sim_api_secret: SecretStr = SecretStr(DEV_SIM_API_SECRET)
    exchange_timeout_ms: int = Field(10_000, ge=100, le=120_000)
    exchange_retries: int = Field(3, ge=0, le=20)

    @field_validator("venues")
    @classmethod
    def _venues_parse(cls, value: str) -> str:
        parse_venues(value)
        return value

    @field_validator("symbols")
    @classmethod
    def _symbols_parse(cls, value: str) -> str:
        for symbol in split_list(value):
            base, quote = split_symbol(symbol)
            if not base or not quote:
                raise ValueError(f"{symbol!r} is not BASE/QUOTE")
        return value

    @property
    def venue_specs(self) -> list[VenueSpec]:
        return parse_venues(self.venues)

    @property
    def symbol_list(self) -> list[str]:
        return split_list(self.symbols)


M = TypeVar("M", bound=BaseModel)


class SettingsError(FatalError):
    """Invalid configuration; ``str()`` is one line per bad variable."""


def load(cls: type[M], **overrides: Any) -> M:
    """Build ``cls`` from the environment, turning validation errors into one-liners.

    ``cls`` is a settings part or a model composed of parts; every part is built on its
    own so that all bad variables are reported at once, not just the first part's.
    """
    errors: list[str] = []
    if not issubclass(cls, BaseSettings):
        for name, field in cls.model_fields.items():
            ann = field.annotation
            if name in overrides or not (isinstance(ann, type) and issubclass(ann, BaseSettings)):
                continue
            try:
                overrides[name] = ann()
            except ValidationError as exc:
                errors.append(format_validation_error(ann, exc))
        if errors:
            raise SettingsError("\n".join(errors))
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(format_validation_error(cls, exc)) from None


def load_or_report(cls: type[M], prog: str, **overrides: Any) -> M | None:
    """:func:`load` for an entry point: on bad settings print ``prog: <line>`` per bad variable
    to stderr and return None (the caller exits 2)."""
    import sys

    try:
        return load(cls, **overrides)
    except SettingsError as exc:
        for line in str(exc).splitlines():
            print(f"{prog}: {line}", file=sys.stderr)
        return None


def format_validation_error(cls: type[BaseModel], exc: ValidationError) -> str:
    """One line per error: ``invalid setting VAR='value': allowed: ...``."""
    # A part built by a default_factory raises its own error: resolve from that part.
    cls = _find_part(cls, exc.title) or cls
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        if not loc:  # model-level validator: its message already names the variables
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            lines.append(f"invalid settings: {msg}")
            continue
        owner, field_name = _resolve(cls, loc)
        var = _env_name(owner, field_name)
        field = owner.model_fields.get(field_name) if owner else None
        value = err.get("input")
        shown = _show_value(field, value)
        if err.get("type") == "value_error":  # a field validator's own words
            reason = str(err.get("msg", "")).removeprefix("Value error, ")
            lines.append(f"invalid setting {var}={shown}: {reason}")
            continue
        allowed = describe_allowed(field) if field is not None else err.get("msg", "")
        lines.append(f"invalid setting {var}={shown}: allowed: {allowed}")
    return "\n".join(lines)


def _find_part(cls: type[BaseModel], title: str) -> type[BaseModel] | None:
    if cls.__name__ == title:
        return cls
    for field in cls.model_fields.values():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            found = _find_part(ann, title)
            if found is not None:
                return found
    return None


def _resolve(cls: type[BaseModel], loc: list[str]) -> tuple[type[BaseModel] | None, str]:
    owner: type[BaseModel] | None = cls
    for name in loc[:-1]:
        field = owner.model_fields.get(name) if owner else None
        ann = field.annotation if field else None
        owner = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return owner, loc[-1]


def _env_name(owner: type[BaseModel] | None, field_name: str) -> str:
    prefix = str(owner.model_config.get("env_prefix", "")) if owner else ""
    return f"{prefix}{field_name}".upper()


def _show_value(field: FieldInfo | None, value: Any) -> str:
    if field is not None and field.annotation is SecretStr:
        return "'***'"
    if isinstance(value, dict):  # whole-model input: the variable was not given
        return "(unset)"
    return repr(value)


def describe_allowed(field: FieldInfo) -> str:
    """Human description of what a field accepts, from its type and constraints."""
    ann = field.annotation
    origin = typing.get_origin(ann)
    if origin is Literal:
        return ", ".join(str(v) for v in typing.get_args(ann))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        ann = args[0] if len(args) == 1 else ann
    if ann is bool:
        return "1 or 0 (also true/false, yes/no, on/off)"
    bounds = []
    for meta in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(meta, attr, None)
            if bound is not None and isinstance(meta, at.BaseMetadata):
                bounds.append(f"{sym} {bound:g}" if isinstance(bound, float) else f"{sym} {bound}")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            bounds.append(f"matching {pattern}")
        min_length = getattr(meta, "min_length", None)
        if min_length:
            bounds.append("non-empty")
    kinds: dict[object, str] = {int: "an integer", float: "a number", str: "a string", SecretStr: "a string"}
    kind = kinds.get(ann, getattr(ann, "__name__", str(ann)))
    unit = f" ({field.description})" if field.description else ""
    return f"{kind}{unit}" + (" " + " and ".join(bounds) if bounds else "")


class CommonSettings(BaseModel):
    """The parts every worker uses; workers subclass it and add their own parts."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    obs: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    default_metrics_port: ClassVar[int] = 9001

    @property
    def metrics_enabled(self) -> bool:
        """Whether ``/metrics`` is served (health routes always are)."""
        return True

    @property
    def metrics_port(self) -> int:
        """``CSE_METRICS_PORT`` if set, else the worker's default."""
        port = self.obs.metrics_port
        return port if port is not None else self.default_metrics_port

    @classmethod
    def probe_port(cls) -> int:
        """:attr:`metrics_port` from the environment, reading only the settings that decide it:
        the healthcheck runs every few seconds on busy nodes and must not validate the rest
        (venues import ccxt). Raises pydantic's ValidationError on a bad port."""
        port = ObservabilitySettings().metrics_port
        return port if port is not None else cls.default_metrics_port
