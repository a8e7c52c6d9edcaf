"""Command-line parsing with pflag conventions."""
from __future__ import annotations

import os

from .common import CliError


def parse_flags(args: list[str], spec: dict[str, str], short: dict[str, str] | None = None,
                unknown_prefix: str = "") -> tuple[dict, list[str]]:
    """spec maps a flag name to "bool", "str" or "list"; returns the given flags and the positionals."""
    short = short or {}
    opts, positionals = {}, []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            positionals.extend(args[index:])
            break
        if arg.startswith("--"):
            name, has_value, value = arg[2:].partition("=")
        elif arg.startswith("-") and len(arg) > 1:
            letter, value = arg[1], arg[2:]
            if letter not in short:
                raise CliError(f"{unknown_prefix}unknown shorthand flag: '{letter}' in {arg}")
            name, has_value = short[letter], bool(value)
            value = value[1:] if value.startswith("=") else value
        else:
            positionals.append(arg)
            continue
        kind = spec.get(name)
        if kind is None:
            raise CliError(f"{unknown_prefix}unknown flag: --{name}")
        if kind == "bool":
            if has_value and value not in ("true", "false", "1", "0"):
                raise CliError(f'invalid argument "{value}" for "--{name}" flag: strconv.ParseBool: parsing '
                               f'"{value}": invalid syntax')
            opts[name] = not has_value or value in ("true", "1")
            continue
        if not has_value:
            if index >= len(args):
                raise CliError(f"{unknown_prefix}flag needs an argument: --{name}")
            value = args[index]
            index += 1
        if kind == "list":
            opts.setdefault(name, []).append(value)
        else:
            opts[name] = value
    return opts, positionals


def require_root() -> None:
    if os.geteuid() != 0 and os.environ.get("K0S_STANDIN_ALLOW_NONROOT") != "1":
        raise CliError("this command must be run as root")


def no_positionals(positionals: list[str], command: str) -> None:
    if positionals:
        raise CliError(f'unknown command "{positionals[0]}" for "{command}"')


