"""The k0s command line: dispatch to the commands."""
from __future__ import annotations

import sys

from .backup import cmd_backup, cmd_restore
from .commands import cmd_airgap, cmd_config, cmd_kubeconfig, cmd_token
from .common import VERSION, CliError
from .controller import Controller
from .flags import no_positionals, parse_flags
from .kubectl import cmd_kubectl
from .node import parse_labels
from .service import CONTROLLER_FLAGS, WORKER_FLAGS, cmd_install, cmd_reset, cmd_start, cmd_status, cmd_stop
from .worker import run_worker


def cmd_controller(args: list[str]) -> None:
    opts, positionals = parse_flags(args, CONTROLLER_FLAGS, {"c": "config"})
    no_positionals(positionals, "k0s controller")
    parse_labels(opts.get("labels", ""))
    Controller(opts).run()


def cmd_worker(args: list[str]) -> None:
    opts, positionals = parse_flags(args, WORKER_FLAGS)
    if positionals:
        raise CliError("the stand-in worker takes its join token from --token-file only")
    run_worker(opts)


def cmd_version(args: list[str]) -> None:
    no_positionals(parse_flags(args, {"all": "bool", "json": "bool", "debug": "bool"}, {"a": "all"})[1],
                   "k0s version")
    print(VERSION)


COMMANDS = {"version": cmd_version, "airgap": cmd_airgap, "config": cmd_config, "install": cmd_install,
            "start": cmd_start, "stop": cmd_stop, "status": cmd_status, "reset": cmd_reset, "token": cmd_token,
            "kubeconfig": cmd_kubeconfig, "controller": cmd_controller, "server": cmd_controller,
            "worker": cmd_worker, "backup": cmd_backup, "restore": cmd_restore}


def main(argv: list[str]) -> int:
    if not argv:
        print("k0s stand-in: usage: k0s <command> [flags]", file=sys.stderr)
        return 1
    command, args = argv[0], argv[1:]
    try:
        if command == "kubectl":
            return cmd_kubectl(args)
        if command not in COMMANDS:
            raise CliError(f'unknown command "{command}" for "k0s"\nRun \'k0s --help\' for usage.')
        COMMANDS[command](args)
        return 0
    except CliError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


def run() -> None:
    """The zipapp's entry point."""
    sys.exit(main(sys.argv[1:]))
