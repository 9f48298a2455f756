"""Per-deployment overrides of the ORCHESTRATOR policy block, from JSON.

``ORCHESTRATOR_POLICY_FILE`` names a JSON file and ``ORCHESTRATOR_POLICY``
holds a JSON object; both are merged over the block when the settings load
(the file first, then the string), so a deployment changes any policy
number without editing code. Dictionaries merge key by key (at any depth);
anything else is replaced. JSON has no tuple keys, so ``("CBC", "AllSky")``
is spelled ``"CBC/AllSky"``; lists become tuples where the default is one.
Top-level keys the block does not have, and values of the wrong type, are
errors: a typo must stop the start, not be ignored. Pure: no Django here.
"""
import json
import numbers

FILE_VARIABLE = "ORCHESTRATOR_POLICY_FILE"
JSON_VARIABLE = "ORCHESTRATOR_POLICY"
TUPLE_KEY_SEPARATOR = "/"


class PolicyError(ValueError):
    """A policy override that cannot be applied; the message says where and why."""


def load_overrides(environ):
    """[(source, overrides)] from the environment, in the order they apply."""
    found = []
    path = environ.get(FILE_VARIABLE, "")
    if path:
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
        except OSError as error:
            raise PolicyError(f"{FILE_VARIABLE}={path}: cannot read it ({error.strerror})") from None
        found.append((f"{FILE_VARIABLE}={path}", parse_json(text, f"{FILE_VARIABLE}={path}")))
    text = environ.get(JSON_VARIABLE, "")
    if text.strip():
        found.append((JSON_VARIABLE, parse_json(text, JSON_VARIABLE)))
    return found


def parse_json(text, source):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise PolicyError(f"{source}: invalid JSON at line {error.lineno} column {error.colno}: "
                          f"{error.msg}") from None
    if not isinstance(value, dict):
        raise PolicyError(f"{source}: expected a JSON object of policy keys, got {type(value).__name__}")
    return value


def apply_overrides(policy, environ):
    """``policy`` with the environment's overrides merged over it (a new dict)."""
    for source, overrides in load_overrides(environ):
        unknown = sorted(set(overrides) - set(policy))
        if unknown:
            raise PolicyError(f"{source}: unknown policy key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(policy))})")
        policy = merge(policy, overrides, source)
    return policy


def merge(default, override, where):
    """``override`` (decoded JSON) merged over ``default``."""
    if isinstance(default, dict):
        if not isinstance(override, dict):
            raise PolicyError(f"{where}: expected a JSON object, got {json.dumps(override)}")
        tuple_keys = any(isinstance(key, tuple) for key in default)
        # A new key is checked against its siblings when they all agree.
        kinds = {type(value) for value in default.values() if value is not None}
        sibling = next(value for value in default.values() if value is not None) if len(kinds) == 1 else None
        merged = dict(default)
        for key, value in override.items():
            real_key = split_key(key, where) if tuple_keys else key
            model = default[real_key] if real_key in default else ({} if isinstance(sibling, dict) else sibling)
            merged[real_key] = merge(model, value, f"{where}: {key}")
        return merged
    if default is None or override is None:
        return override
    if isinstance(default, tuple) and isinstance(override, list):
        if len(override) != len(default):
            raise PolicyError(f"{where}: expected {len(default)} values, got {json.dumps(override)}")
        return tuple(merge(d, o, where) for d, o in zip(default, override))
    if _is_number(default):
        if not _is_number(override):
            raise PolicyError(f"{where}: expected a number, got {json.dumps(override)}")
        return override
    if not isinstance(override, type(default)):
        raise PolicyError(f"{where}: expected {type(default).__name__}, got {json.dumps(override)}")
    return override


def split_key(key, where):
    """``"CBC/AllSky"`` -> ``("CBC", "AllSky")``."""
    parts = tuple(key.split(TUPLE_KEY_SEPARATOR))
    if len(parts) < 2 or not all(parts):
        raise PolicyError(f"{where}: key {key!r} must be spelled GROUP{TUPLE_KEY_SEPARATOR}SEARCH, "
                          f"e.g. 'CBC{TUPLE_KEY_SEPARATOR}AllSky'")
    return parts


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
