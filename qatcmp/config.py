"""servers.yaml: which servers to talk to and which model variants to compare.

Validated with pydantic; any problem becomes one ConfigError line naming the field.
API keys never live in the file: it names an environment variable (``api_key_env``).
"""

from __future__ import annotations

import codecs
import math
import os
import re
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qatcmp import redact
from qatcmp.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"

# Bounds on what a config file may expand to. A real servers.yaml is a few kilobytes, a few
# levels deep, with a handful of anchors; these limits are far above that and far below what
# makes the loader (or the manifest that records the config) slow or huge.
MAX_CONFIG_BYTES = 1_000_000
MAX_YAML_ALIASES = 100
MAX_CONFIG_VALUES = 100_000  # every value counted as often as aliases repeat it
MAX_CONFIG_DEPTH = 32
# An HTTP header name is an RFC 9110 token; a value is visible ASCII, spaces and tabs (httpx
# encodes values as ASCII, and CR/LF would split the request).
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")

DEFAULT_THINKING_ON: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": True}}
DEFAULT_THINKING_OFF: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": False}}


class Strict(BaseModel):
    # NaN and infinity are not numbers a server can be sent (JSON has no spelling for them).
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Timeouts(Strict):
    # Connecting to a local server is instant or never: fail fast. Reading may wait minutes
    # while a model thinks (or loads from disk), so the read timeout is long.
    connect: float = Field(10.0, gt=0)
    read: float = Field(900.0, gt=0)
    total: float | None = Field(7200.0, gt=0, description="whole request, all tokens")


class Retries(Strict):
    max_attempts: int = Field(6, ge=1, le=100)
    initial_backoff: float = Field(1.0, ge=0)
    max_backoff: float = Field(60.0, ge=0)


class Outage(Strict):
    """A server that stops answering: after ``after_failures`` connection failures in a row
    (refused, reset, no answer at all) qatcmp stops sending to it and probes it with backoff
    for up to ``wait`` seconds; it resumes when the server is back, or stops the server's work
    cleanly (nothing written for the requests it could not send)."""

    after_failures: int = Field(3, ge=1, le=1000)
    wait: float = Field(600.0, ge=0, le=7 * 86400)


class ThinkingSwitch(Strict):
    """The request fields merged into the body when thinking is on / off. Servers disagree
    on the switch; the default is what oMLX, mlx-lm, vLLM and llama.cpp read."""

    on: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_THINKING_ON))
    off: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_THINKING_OFF))


class Sampling(Strict):
    """Sampling parameters. Every one is sent explicitly (servers' defaults differ and are
    not always the model's recommended ones); ``null`` leaves a parameter out."""

    temperature: float | None = Field(1.0, ge=0)
    top_p: float | None = Field(0.95, gt=0, le=1)
    top_k: int | None = Field(64, ge=0)
    min_p: float | None = Field(0.0, ge=0, le=1)
    max_tokens: int | None = Field(32768, ge=1)
    # Base seed. Each request gets a seed derived from (seed, question, sample), so repeated
    # samples of a question differ and a run is reproducible. Defaults to the run's --seed.
    seed: int | None = None


class ServerConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    base_url: str
    api_key_env: str | None = None
    max_concurrency: int = Field(4, ge=1, le=256)
    # How many models the server holds in memory at once. None: what the server reports (oMLX's
    # loaded models), else 1 (mlx-lm's server holds one). 2 or more lets the next variant start
    # while the previous one's last answers finish.
    max_loaded_models: int | None = Field(None, ge=1, le=64)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: Retries = Field(default_factory=Retries)
    headers: dict[str, str] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    thinking_switch: ThinkingSwitch = Field(default_factory=ThinkingSwitch)
    stream: bool = True
    outage: Outage = Field(default_factory=Outage)
    # The longest answer (content + reasoning) accepted, in MB of text: 32k tokens of
    # thinking are ~0.15 MB; anything near the cap is a runaway or hostile stream.
    max_answer_mb: float = Field(8.0, gt=0, le=1024)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value) or re.search(r"\s", value):
            raise ValueError("must start with http:// or https:// followed by a host")
        try:
            parts = urlsplit(value)
            port = parts.port  # raises ValueError when out of range or not a number
        except ValueError as exc:
            raise ValueError(f"{exc} in {value!r}") from None
        if not parts.hostname:
            raise ValueError("must start with http:// or https:// followed by a host")
        if port == 0:
            raise ValueError(f"port 0 is not a port a server listens on ({value!r})")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if not HEADER_VALUE.match(text):
                # The value itself may be a secret: name the header, not the value.
                raise ValueError(
                    f"the value of header {name!r} has a line break or a character that is not "
                    "printable ASCII, which no HTTP request can carry"
                )
        return value

    def api_key(self) -> str | None:
        """The key's value, read from the environment at the moment it is needed."""
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError(
                f"server '{self.name}': environment variable {self.api_key_env} "
                "(api_key_env) is not set"
            )
        return value


class ModelConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="short name used in reports")
    server: str  # the first (or only) server; ``replicas`` lists every server of the variant
    model: str = Field(min_length=1, description="the model id sent to the server")
    thinking: bool = True
    sampling: Sampling | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)
    thinking_switch: ThinkingSwitch | None = None
    replicas: list[str] = Field(default_factory=list, description="every server of this variant, when several")

    @model_validator(mode="before")
    @classmethod
    def _server_list(cls, data: Any) -> Any:
        # `server: [mac1, mac2]`: the variant's questions are spread over these servers.
        if isinstance(data, dict) and isinstance(data.get("server"), list):
            names = data["server"]
            if not names or not all(isinstance(n, str) for n in names):
                raise ValueError("server: a server name, or a non-empty list of server names")
            if len(set(names)) != len(names):
                raise ValueError("server: a server is listed twice")
            data = {**data, "server": names[0], "replicas": names if len(names) > 1 else []}
        return data

    @property
    def servers(self) -> list[str]:
        """Every server that may answer this variant's questions."""
        return self.replicas or [self.server]


class Defaults(Strict):
    sampling: Sampling = Field(default_factory=Sampling)


class Config(Strict):
    servers: list[ServerConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(min_length=1)
    defaults: Defaults = Field(default_factory=Defaults)

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        _require_unique("servers", [s.name for s in self.servers])
        _require_unique("models", [m.name for m in self.models])
        known = {s.name for s in self.servers}
        for index, model in enumerate(self.models):
            for name in model.servers:
                if name not in known:
                    raise ValueError(
                        f"models[{index}].server: unknown server '{name}' "
                        f"(servers: {', '.join(sorted(known))})"
                    )
            if model.replicas and model.replicas[0] != model.server:
                raise ValueError(f"models[{index}].replicas: must start with its server '{model.server}'")
        return self

    def server(self, name: str) -> ServerConfig:
        return next(s for s in self.servers if s.name == name)

    def sampling_for(self, model: ModelConfig) -> Sampling:
        """The model's sampling: defaults, overridden field by field by the model's own."""
        merged = self.defaults.sampling.model_dump()
        if model.sampling is not None:
            merged.update(model.sampling.model_dump(exclude_unset=True))
        return Sampling.model_validate(merged)

    def select(self, names: list[str] | None) -> list[ModelConfig]:
        if not names:
            return list(self.models)
        by_name = {m.name: m for m in self.models}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(
                f"--models: unknown model {', '.join(unknown)} "
                f"(configured: {', '.join(by_name)})"
            )
        return [by_name[n] for n in names]

    def check_api_keys(self, models: list[ModelConfig]) -> None:
        """Fail early, before any request, when a needed key is missing."""
        for name in dict.fromkeys(s for m in models for s in m.servers):
            self.server(name).api_key()

    def redacted(self) -> dict[str, Any]:
        """The config as recorded in a run's manifest: no secrets. Keys are never in the
        file; header values may be (e.g. Authorization), so they are masked."""
        data = self.model_dump(mode="json")
        for server in data["servers"]:
            server["headers"] = {k: "<redacted>" for k in server["headers"]}
        return data


def _require_unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what}: the name '{name}' is used twice")
        seen.add(name)


def load_config(path: str | os.PathLike[str]) -> Config:
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a config file")
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (copy servers.yaml from the project and edit it)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1000} kB; a servers.yaml is a few kB")
    return parse_config(decode_config(raw, str(path)), str(path))


def decode_config(raw: bytes, origin: str) -> str:
    """The file's text; it must be UTF-8 (a UTF-8 byte-order mark is allowed)."""
    for bom, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                      (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if raw.startswith(bom):
            raise ConfigError(f"{origin}: the file is {name}; save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{origin}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8") from None


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, with a budget of aliases: an alias bomb (aliases of aliases of
    lists) expands exponentially in whatever reads the result."""

    aliases_seen = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"{self.name}:{mark.line + 1}: more than {MAX_YAML_ALIASES} YAML aliases (*name); "
                    "write the values out"
                )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        # PyYAML keeps the last of two equal keys; a second `models:` would silently drop the
        # first list. Keys brought in by a merge (<<: *x) may be overridden: only the
        # mapping's own keys are compared.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.value in seen:
                mark = key_node.start_mark
                raise ConfigError(f"{self.name}:{mark.line + 1}: the key '{key_node.value}' is given twice")
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


# YAML 1.1 reads on/off/yes/no as booleans, so `thinking_switch: {on: ..., off: ...}` would
# have the keys True and False. Only true/false are booleans here (as in YAML 1.2).
_BoundedLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_config(text: str, origin: str = "servers.yaml") -> Config:
    loader = _BoundedLoader(text)
    loader.name = origin
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{origin}{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: nested more than {MAX_CONFIG_DEPTH} levels deep") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping with 'servers' and 'models'")
    check_plain_data(data, origin)
    _refuse_inline_keys(data, origin)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {describe_validation_error(exc)}") from None
    redact.register_config(config)  # keys, header values, URL credentials: masked on output
    return config


def check_plain_data(data: Any, origin: str) -> None:
    """Refuse what no JSON request can carry, and bound the size and depth of the config
    as it expands (aliases count each time they are used). Iterative: a deep structure
    must not exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    values = 0
    while stack:
        value, where, depth = stack.pop()
        values += 1
        if values > MAX_CONFIG_VALUES:
            raise ConfigError(f"{origin}: expands to more than {MAX_CONFIG_VALUES} values (YAML aliases?)")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{origin}: {where}: nested more than {MAX_CONFIG_DEPTH} levels deep")
        label = where or "(top level)"
        if isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str):
                    raise ConfigError(f"{origin}: {label}: the key {key!r} is not a string; quote it")
                stack.append((child, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(value, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{origin}: {label}: {value} is not a finite number")
        elif isinstance(value, (date, bytes, set)):
            raise ConfigError(f"{origin}: {label}: a {type(value).__name__} is not allowed here; quote the value")
        elif value is not None and not isinstance(value, (str, int, float)):
            raise ConfigError(f"{origin}: {label}: a {type(value).__name__} is not allowed here")


def _refuse_inline_keys(data: dict[str, Any], origin: str) -> None:
    servers = data.get("servers")
    if not isinstance(servers, list):
        return  # the model's validation names the problem
    for index, server in enumerate(servers):
        if isinstance(server, dict) and "api_key" in server:
            raise ConfigError(
                f"{origin}: servers[{index}].api_key: keys are not stored in the file; "
                "put the key in an environment variable and name it with api_key_env"
            )


def describe_validation_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = _format_loc(err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{loc}: {msg}{suffix}" if loc else f"{msg}{suffix}"


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
