"""Compose the Hydra config from `conf/` and the command line, turning every config problem into a `ConfigError`.

The Hydra compose API is used rather than `@hydra.main`: launchers must not change the working directory or create
`outputs/<date>` folders, and a wrong override must end in one line that says what to fix, not a stack trace.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from hydra.utils import get_object
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from shardprep.runtime.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def load_config(overrides: Sequence[str], defaults: Sequence[str] = (), strict: bool = True) -> dict[str, Any]:
    """The resolved config for `defaults` (e.g. `stage=depth` from the launcher) followed by the user's overrides.

    `strict=False` leaves mandatory values (`???`) unset instead of refusing: commands that only read a finished run
    (merge) must not ask for the model paths its launch needed.
    """
    overrides = [*defaults, *overrides]
    refuse_unknown_keys(overrides)
    try:
        resolved = OmegaConf.to_container(composed(overrides), resolve=True, throw_on_missing=strict)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        raise ConfigError(one_line(error)) from None
    assert isinstance(resolved, dict)
    return resolved


def composed(overrides: Sequence[str]) -> Any:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def refuse_unknown_keys(overrides: Sequence[str]) -> None:
    """Refuse a key that no config defines, naming the closest known one, before anything else happens.

    Hydra itself would answer `shard=20` with "use +shard=20", and `+shard=20` would then be accepted and ignored.
    A `+key` is accepted only where a config leaves room for it: a config group (`+pipeline=...`), a parameter of the
    `_target_` the key belongs to (`+dataset.annotation=...`), or a mapping a config declares open (`{}`, such as
    `cluster.additional`).
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as error:
        raise ConfigError(one_line(error)) from None
    # Group choices, Hydra's own settings (an extra `hydra.searchpath`) and a changed `_target_` (whose parameters a
    # `+key` may add) decide which keys exist.
    groups = [str(o.input_line) for o in parsed if is_group(o.key_or_group) or o.key_or_group.startswith("hydra.")
              or o.key_or_group.endswith("._target_")]
    try:
        base = OmegaConf.to_container(composed(groups), resolve=False)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        raise ConfigError(one_line(error)) from None
    assert isinstance(base, dict)
    known = sorted(dotted_keys(base))
    for override in parsed:
        key = override.key_or_group
        if is_group(key) or override.is_delete() or override.is_force_add() or key.startswith("hydra."):
            continue  # `++key` is Hydra's explicit "add or override": taken as meant
        if key in known or override.is_add() and room_for(base, key):
            continue
        raise ConfigError(unknown_key(str(override.input_line), key, known))


def unknown_key(line: str, key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(key.split(".")[-1], [k.split(".")[-1] for k in known], n=1, cutoff=0.6)
        close = [next(k for k in known if k.split(".")[-1] == close[0])] if close else []
    hint = f"did you mean {close[0]}?" if close else "see --help for the known keys"
    return f"{line}: no config defines the key {key!r}; {hint} (nothing was written or submitted)"


def is_group(key: str) -> bool:
    return (CONF_DIR / key.replace(".", "/")).is_dir()


def dotted_keys(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for name, value in node.items():
        yield prefix + str(name)
        if isinstance(value, dict):
            yield from dotted_keys(value, f"{prefix}{name}.")


def room_for(base: dict[str, Any], key: str) -> bool:
    """Whether `+key` adds what its parent config accepts (see `refuse_unknown_keys`)."""
    *parents, leaf = key.split(".")
    node: Any = base
    for name in parents:
        if not isinstance(node, dict) or name not in node:
            return False
        node = node[name]
        if node == {}:
            return True  # a mapping declared open: whatever is under it
    if not parents or not isinstance(node, dict) or "_target_" not in node:
        return False
    try:
        target = get_object(str(node["_target_"]))
        parameters = inspect.signature(target).parameters.values()
    except Exception:  # an unimportable target is reported by the launch itself, with its own message
        return True
    return any(p.name == leaf or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def one_line(error: BaseException) -> str:
    if isinstance(error, MissingConfigException) and error.options:
        first = str(error).splitlines()[0]
        return f"{first}; available: {', '.join(sorted(error.options))}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def positive_int(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key}={value!r}: must be a whole number >= 1")
    return value
