"""The config, token and kubeconfig commands."""
from __future__ import annotations

import json
import os
import sys
import time

from .client import ClientError, HttpsClient, api_error_text
from .common import BOOTSTRAP_SECRET_TYPE, PKI_DIR, CliError, parse_duration, read_text, write_file
from .config import api_url, default_config, load_config
from .images import list_images
from .flags import no_positionals, parse_flags
from .kubectl import format_table
from .pki import ClusterCA, pem_cert, pem_key
from .rbac import BY_PLURAL
from .status import read_status
from .store import secret_values
from .tokens import (
    Kubeconfig,
    b64,
    bootstrap_secret,
    cert_credentials,
    join_token,
    make_kubeconfig,
    random_bootstrap_token,
)
from .yamlsubset import yaml_dump


def cmd_config(args: list[str]) -> None:
    sub = args[0] if args else ""
    if sub == "create":
        opts, positionals = parse_flags(args[1:], {"include-images": "bool", "debug": "bool"})
        no_positionals(positionals, "k0s config create")
        sys.stdout.write(yaml_dump(default_config()))
    elif sub == "validate":
        opts, positionals = parse_flags(args[1:], {"config": "str", "debug": "bool"}, {"c": "config"})
        no_positionals(positionals, "k0s config validate")
        if "config" not in opts:
            raise CliError('required flag(s) "config" not set')
        if not opts["config"]:
            raise CliError("--config can't be empty")
        load_config(opts["config"])
    else:
        raise CliError(f'unknown command "{sub}" for "k0s config"')


def cmd_airgap(args: list[str]) -> None:
    """`k0s airgap list-images [--all] [-c CONFIG]` (k0s cmd/airgap/listimages.go): one reference a line."""
    if (args[:1] or [""])[0] != "list-images":
        raise CliError(f'unknown command "{(args[:1] or [""])[0]}" for "k0s airgap"')
    opts, positionals = parse_flags(args[1:], {"all": "bool", "config": "str", "debug": "bool"}, {"c": "config"})
    no_positionals(positionals, "k0s airgap list-images")
    for reference in list_images(load_config(opts.get("config")), bool(opts.get("all"))):
        print(reference)


def node_config(opts: dict) -> dict:
    """Like k0s: -c FILE, else the config of the running k0s process, else /etc/k0s/k0s.yaml or defaults."""
    if opts.get("config"):
        return load_config(opts["config"])
    status = read_status()
    if status and status.get("ClusterConfig"):
        return status["ClusterConfig"]
    return load_config(None)


def admin_client() -> HttpsClient:
    try:
        config = Kubeconfig(read_text(PKI_DIR + "/admin.conf"), PKI_DIR + "/admin.conf")
    except OSError as exc:
        raise CliError(f"stat {PKI_DIR}/admin.conf: no such file or directory") from exc
    return HttpsClient(config.server, config.ca_pem, config.cert_pem, config.key_pem)


def admin_request(method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    try:
        return admin_client().request(method, path, body)
    except ClientError as exc:
        raise CliError(str(exc)) from exc


def check_role(role: str) -> None:
    if role not in ("worker", "controller"):
        raise CliError(f'unsupported role "{role}"; supported roles are "controller" and "worker"')


def cmd_token(args: list[str]) -> None:
    sub = args[0] if args else ""
    secrets_path = BY_PLURAL[("", "secrets")].path("kube-system")
    if sub == "create":
        opts, positionals = parse_flags(args[1:], {"role": "str", "expiry": "str", "wait": "bool",
                                                   "config": "str", "debug": "bool"}, {"c": "config"})
        no_positionals(positionals, "k0s token create")
        role = opts.get("role", "worker")
        check_role(role)
        expiry = parse_duration(opts.get("expiry", "0s"))
        attempts = 120 if opts.get("wait") else 1
        for attempt in range(attempts):
            try:
                print(create_token(role, expiry, opts))
                return
            except CliError as exc:
                if attempt + 1 == attempts or str(exc).startswith("refusing"):
                    raise
                time.sleep(1)
    elif sub == "list":
        opts, positionals = parse_flags(args[1:], {"role": "str", "debug": "bool"})
        no_positionals(positionals, "k0s token list")
        if opts.get("role"):
            check_role(opts["role"])
        code, body = admin_request("GET", secrets_path)
        if code != 200:
            raise CliError(api_error_text(code, body))
        rows = []
        for secret in json.loads(body)["items"]:
            values = secret_values(secret)
            if secret.get("type") != BOOTSTRAP_SECRET_TYPE or "token-id" not in values:
                continue
            role = "controller" if values.get("usage-controller-join") == "true" else \
                "worker" if values.get("usage-bootstrap-authentication") == "true" else ""
            if not opts.get("role") or opts["role"] == role:
                rows.append([values["token-id"], role, values.get("expiration", "")])
        if not rows:
            print("No k0s join tokens found")
            return
        sys.stdout.write(format_table([["ID", "ROLE", "EXPIRES AT"]] + rows, padding=2, min_width=0))
    elif sub == "invalidate":
        opts, positionals = parse_flags(args[1:], {"debug": "bool"})
        if not positionals:
            raise CliError("requires at least 1 arg(s), only received 0")
        for token_id in positionals:
            code, body = admin_request("DELETE", f"{secrets_path}/bootstrap-token-{token_id}")
            if code not in (200, 404):
                raise CliError(api_error_text(code, body))
            print(f"token {token_id} deleted successfully")
    elif sub == "pre-shared":
        cmd_token_preshared(args[1:])
    else:
        raise CliError(f'unknown command "{sub}" for "k0s token"')


def create_token(role: str, expiry: float, opts: dict) -> str:
    status = read_status()
    if status is None:
        raise CliError("k0s is not running")
    if status.get("SingleNode"):
        raise CliError("refusing to create token: cannot join into a single node cluster")
    if not status["Role"].startswith("controller"):
        raise CliError("refusing to create token: this node is not a controller")
    config = node_config(opts)
    try:
        ca_pem = read_text(PKI_DIR + "/ca.crt").encode()
    except OSError as exc:
        raise CliError(f'failed to read cluster CA from "{PKI_DIR}/ca.crt": {exc.strerror}; check if the '
                       "control plane is initialized on this node") from exc
    token_id, token_secret = random_bootstrap_token()
    code, body = admin_request("POST", BY_PLURAL[("", "secrets")].path("kube-system"),
                               bootstrap_secret(role, token_id, token_secret, expiry))
    if code != 201:
        raise CliError(api_error_text(code, body).removeprefix("error: "))
    server = api_url(config, "port" if role == "worker" else "k0sApiPort")
    return join_token(role, server, ca_pem, token_id, token_secret)


def cmd_token_preshared(args: list[str]) -> None:
    """A token and its Secret without a running cluster (contract §2, §4)."""
    opts, positionals = parse_flags(args, {"cert": "str", "url": "str", "role": "str", "out": "str",
                                           "valid": "str", "debug": "bool"})
    no_positionals(positionals, "k0s token pre-shared")
    missing = [f'"{name}"' for name in ("cert", "url") if name not in opts]
    if missing:
        raise CliError(f"required flag(s) {', '.join(missing)} not set")
    role = opts.get("role", "worker")
    check_role(role)
    valid = parse_duration(opts.get("valid", "0s"))
    out_dir = opts.get("out", ".")
    token_id, token_secret = random_bootstrap_token()
    secret = bootstrap_secret(role, token_id, token_secret, valid)
    secret["metadata"]["creationTimestamp"] = None
    try:
        ca_pem = read_text(opts["cert"]).encode()
    except OSError as exc:
        raise CliError(f"error reading certificate: open {opts['cert']}: {exc.strerror.lower()}") from exc
    write_file(os.path.join(out_dir, f"bootstrap-token-{token_id}.yaml"), yaml_dump(secret), 0o640)
    write_file(os.path.join(out_dir, f"token_{token_id}"), join_token(role, opts["url"], ca_pem, token_id,
                                                                       token_secret), 0o640)


def cmd_kubeconfig(args: list[str]) -> None:
    sub = args[0] if args else ""
    if sub == "admin":
        opts, positionals = parse_flags(args[1:], {"config": "str", "debug": "bool"}, {"c": "config"})
        no_positionals(positionals, "k0s kubeconfig admin")
        files = {}
        for name in ("ca.crt", "admin.crt", "admin.key"):
            try:
                files[name] = read_text(f"{PKI_DIR}/{name}").encode()
            except OSError as exc:
                raise CliError(f'admin PKI file "{PKI_DIR}/{name}" not found, check if the control plane is '
                               "initialized on this node") from exc
        sys.stdout.write(make_kubeconfig(api_url(node_config(opts)), files["ca.crt"], "user",
                                         {"client-certificate-data": b64(files["admin.crt"]),
                                          "client-key-data": b64(files["admin.key"])},
                                         cluster="local", context="Default"))
    elif sub == "create":
        opts, positionals = parse_flags(args[1:], {"groups": "str", "certificate-expires-after": "str",
                                                   "context-name": "str", "config": "str", "debug": "bool"},
                                        {"c": "config"})
        if len(positionals) != 1:
            raise CliError(f"accepts 1 arg(s), received {len(positionals)}")
        user = positionals[0]
        if not user:
            raise CliError("username cannot be empty")
        # No reserved names (k0s cmd/kubeconfig/create.go): pkg/certificate/manager.go EnsureCertificate
        # rewrites pki/<name>.crt/.key whenever the existing pair was issued by kubernetes-ca, so "admin"
        # overwrites k0s's own admin certificate. Only a name that is no file name fails, on the write.
        if "/" in user or user in (".", ".."):
            raise CliError(f"failed generate user certificate: open {PKI_DIR}/{user}.key: no such file or directory")
        context = opts.get("context-name", "k0s")
        if not context:
            raise CliError("context-name cannot be empty")
        validity = parse_duration(opts.get("certificate-expires-after", "8760h"))
        config = node_config(opts)
        try:
            ca = ClusterCA.load()
        except OSError as exc:
            raise CliError(f"failed generate user certificate: open {PKI_DIR}/{exc.filename.rsplit('/', 1)[-1]}: "
                           "no such file or directory, check if the control plane is initialized on this node") \
                from exc
        groups = [opts["groups"]] if opts.get("groups") else []
        cert, key = ca.issue_rsa_client(user, groups, validity)
        write_file(f"{PKI_DIR}/{user}.crt", pem_cert(cert), 0o644)
        write_file(f"{PKI_DIR}/{user}.key", pem_key(key), 0o600)
        sys.stdout.write(make_kubeconfig(api_url(config), ca.cert_pem, user, cert_credentials(cert, key),
                                         cluster=context, context=context))
    else:
        raise CliError(f'unknown command "{sub}" for "k0s kubeconfig"')


