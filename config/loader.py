"""Turn raw stack config into `FarmSettings`, or one clear error.

`load_settings(raw)` is pure: `raw` maps full keys (`obs-farm:mode`,
`azure-native:location`) to the strings Pulumi hands a program (structured
values arrive JSON-encoded). `load_settings_from_pulumi()` collects that map
from the running program's config.
"""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Collection, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from config.limits import user_data_errors
from config.model import FarmSettings
from config.rules import cross_field_errors, warnings_for

NAMESPACE = "obs-farm"
# Keys from other namespaces that become settings.
FOREIGN_KEYS = {"azure-native:location": "location", "aws:region": "aws_region"}
# Settings that are not stack config of our namespace.
_INTERNAL_FIELDS = {*FOREIGN_KEYS.values(), "warnings"}


class ConfigError(Exception):
    """A user mistake in stack config; the message is for the user as is."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _config_keys() -> dict[str, str]:
    """Config key (camelCase) -> field name, for the `obs-farm` namespace."""
    return {
        (info.alias or name): name
        for name, info in FarmSettings.model_fields.items()
        if name not in _INTERNAL_FIELDS
    }


# Pulumi hands structured values over JSON-encoded; these stay plain strings.
_PLAIN_STRING_FIELDS = {
    "mode",
    "ssh_public_key",
    "admin_username",
    "tls_certificate",
    "tls_private_key",
}
# Settings that must reach the program as Pulumi secrets.
SECRET_SETTINGS = ("tlsPrivateKey",)
# Settings that existed once, with what replaced them.
REMOVED_SETTINGS: dict[tuple[str, ...], str] = {
    ("server", "frontendImage"): (
        "was removed: no production image of the OBS frontend exists. "
        "server.flavor: appliance (the default) deploys upstream's API and web UI "
        "from the OBS:Server:2.10 packages; server.flavor: backend deploys the backend "
        "alone, for a frontend you run elsewhere"
    ),
}


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; known keys: {', '.join(sorted(known))}"


def _collect(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    keys = _config_keys()
    data: dict[str, Any] = {}
    problems: list[str] = []
    for full_key, value in sorted(raw.items()):
        if full_key in FOREIGN_KEYS:
            data[FOREIGN_KEYS[full_key]] = value
            continue
        namespace, _, key = full_key.partition(":")
        if namespace != NAMESPACE:
            continue
        if key not in keys:
            head = key.split(".", 1)[0].split("[", 1)[0]
            if head != key and head in keys:
                problems.append(
                    f"{full_key} is a nested setting: set it with "
                    f"`pulumi config set --path '{full_key}' VALUE`"
                )
            else:
                problems.append(f"{full_key} is not a setting{_suggest(key, list(keys))}")
            continue
        field = keys[key]
        if isinstance(value, str) and field not in _PLAIN_STRING_FIELDS:
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                kind = "list" if field in {"architectures", "admin_cidrs"} else "object"
                problems.append(
                    f"{full_key} must be a YAML {kind} in Pulumi.<stack>.yaml "
                    f"(or `pulumi config set --path`); got {value!r}"
                )
                continue
        data[key] = value
    return data, problems


def _key_path(loc: tuple[int | str, ...]) -> str:
    foreign = {field: key for key, field in FOREIGN_KEYS.items()}
    if loc and loc[0] in foreign:
        return foreign[str(loc[0])]
    text = f"{NAMESPACE}:"
    for i, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if i else "") + part
    return text


def _known_subkeys(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = FarmSettings
    for part in loc[:-1]:
        if isinstance(part, int):
            return []
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        field = fields.get(part)
        if field is None:
            return []
        # Optional sub-objects (graviton) are `Model | None`.
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not models:
            return []
        model = models[0]
    return [(f.alias or n) for n, f in model.model_fields.items()]


def _describe(err: Any) -> str:
    loc = tuple(err["loc"])
    key = _key_path(loc)
    kind = err["type"]
    got = err.get("input")
    if kind == "extra_forbidden":
        removed = REMOVED_SETTINGS.get(tuple(str(p) for p in loc))
        if removed:
            return f"{key} {removed}"
        known = _known_subkeys(loc)
        return f"{key} is not a setting{_suggest(str(loc[-1]), known)}"
    if kind == "missing":
        return f"{key} is required"
    if kind == "literal_error":
        allowed = err["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"{key} must be one of {allowed}; got {got!r}"
    if kind == "value_error":
        return f"{key} {err['ctx']['error']}"
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = "at least" if kind == "greater_than_equal" else "at most"
        limit = err["ctx"]["ge" if kind == "greater_than_equal" else "le"]
        return f"{key} must be {bound} {limit}; got {got!r}"
    if kind == "string_pattern_mismatch":
        return f"{key} must match {err['ctx']['pattern']}; got {got!r}"
    wanted = {
        "int_type": "an integer",
        "bool_type": "true or false",
        "string_type": "a string",
        "tuple_type": "a list",
        "list_type": "a list",
        "model_type": "an object",
        "dict_type": "an object",
        "model_attributes_type": "an object",
    }.get(kind)
    if wanted:
        return f"{key} must be {wanted}; got {got!r}"
    return f"{key}: {err['msg']}; got {got!r}"


def _not_secret(raw: Mapping[str, Any], secret_keys: Collection[str]) -> list[str]:
    problems = []
    for key in SECRET_SETTINGS:
        full = f"{NAMESPACE}:{key}"
        if raw.get(full) and full not in secret_keys:
            problems.append(
                f"{full} must be a Pulumi secret, never plain text in the stack file: "
                f"`pulumi config set --secret {full} < server.key`"
            )
    return problems


def load_settings(
    raw: Mapping[str, Any], secret_keys: Collection[str] | None = None
) -> FarmSettings:
    """Validate raw stack config; raise ConfigError listing every problem.

    `secret_keys`: the full keys Pulumi holds as secrets (default: none).
    """
    data, problems = _collect(raw)
    problems.extend(_not_secret(raw, secret_keys or ()))
    settings: FarmSettings | None = None
    try:
        settings = FarmSettings.model_validate_json(json.dumps(data))
    except ValidationError as err:
        problems.extend(_describe(e) for e in err.errors())
    if settings is not None and not problems:
        problems.extend(cross_field_errors(settings))
    if settings is not None and not problems:
        problems.extend(user_data_errors(settings))
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return settings.model_copy(update={"warnings": tuple(warnings_for(settings))})


def raw_pulumi_config() -> dict[str, Any]:
    """Every config value the running Pulumi program was given."""
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    return raw


def load_settings_from_pulumi() -> FarmSettings:
    from pulumi.runtime import config as runtime_config

    raw = raw_pulumi_config()
    env_secrets = set(runtime_config.get_config_secret_keys_env())
    secret = [k for k in raw if runtime_config.is_config_secret(k) or k in env_secrets]
    return load_settings(raw, secret)
