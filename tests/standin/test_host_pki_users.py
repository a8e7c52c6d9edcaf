"""The host-made CA, pre-shared join token and users against the k0s stand-in on 127.0.0.1.

Same steps as `lab.up` and `lab.user` take on VMs: CA and token Secret placed before the controller's
first start, a worker joining with the host-made token, then users signed on the host and bound with
RBAC through a Runner.
"""
from __future__ import annotations

import datetime as dt
import shlex
import subprocess

from conftest import STANDIN, STANDIN_PYTHON, Node, start_controller, start_worker, wait_for

from k0slab.cluster import pki
from k0slab.cluster import users
from k0slab.cluster.k0s import token
from k0slab.vms.remote import CommandResult, RemoteCommandError

K0S = "/usr/local/bin/k0s"


class StandinRunner:
    """The Runner protocol over a stand-in node: `k0s` and `rm -f` with contract paths under its root."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.name = node.name

    def run(self, command: str, *, stdin: str | None = None, check: bool = True,
            timeout: float | None = None) -> CommandResult:
        words = shlex.split(command)
        env = self.node.env()
        if words[0].startswith("KUBECONFIG="):
            env["KUBECONFIG"] = words.pop(0).split("=", 1)[1]
        if words[:2] == ["rm", "-f"]:
            self.node.path(words[2]).unlink(missing_ok=True)
            done = subprocess.CompletedProcess(words, 0, "", "")
        else:
            assert words[0] == K0S, command
            done = subprocess.run([STANDIN_PYTHON, str(STANDIN), *words[1:]], input=stdin, capture_output=True,
                                  text=True, env=env, timeout=timeout or 60, check=False)
        result = CommandResult(command, done.returncode, done.stdout, done.stderr)
        if check and not result.ok:
            raise RemoteCommandError(self.name, result)
        return result

    def put_text(self, text: str, path: str, mode: int = 0o644) -> None:
        self.node.write(path, text).chmod(mode)


def test_host_ca_token_and_users_work_against_the_standin(make_node, tmp_path):
    controller, worker = make_node("ctl"), make_node("wrk")
    ca_cert, ca_key = pki.create_ca()
    token_id, secret = token.new_bootstrap_token()
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
    controller.write("/var/lib/k0s/pki/ca.crt", ca_cert.decode())
    controller.write("/var/lib/k0s/pki/ca.key", ca_key.decode())
    controller.write(token.secret_manifest_path(token_id),
                     token.bootstrap_secret_manifest(token_id, secret, "worker", expiry, "k0slab test"))
    start_controller(controller)
    assert controller.path("/var/lib/k0s/pki/ca.crt").read_bytes() == ca_cert

    url = f"https://127.0.0.1:{controller.api_port}"
    start_worker(worker, token.worker_token(ca_cert, url, token_id, secret),
                 "--kubelet-extra-args=--hostname-override=w1")
    wait_for(lambda: controller.ready_condition("w1") == "True", 20, "w1 joined with the host-made token")

    runner = StandinRunner(controller)
    users_dir = tmp_path / "users"

    def create(name: str, **options) -> users.UserRecord:
        return users.create_user(name, ["development"], 7, lab_name="t", server_url=url, ca_cert_pem=ca_cert,
                                 ca_key_pem=ca_key, users_dir=users_dir, controller=runner, **options)

    create("demo")
    check = users.check_user("demo", users_dir=users_dir, controller=runner)
    assert check.ok, str(check)
    assert check.probes[0].evidence == ('Error from server (Forbidden): nodes is forbidden: User "demo" cannot '
                                        'list resource "nodes" in API group "" at the cluster scope')

    create("viewer", clusterrole="view")
    check = users.check_user("viewer", users_dir=users_dir, controller=runner)
    assert [p.outcome for p in check.probes] == ["forbidden", "allowed"] and check.ok, str(check)

    create("boss", clusterrole="cluster-admin")
    check = users.check_user("boss", users_dir=users_dir, controller=runner)
    assert [p.outcome for p in check.probes] == ["allowed", "allowed"] and check.ok, str(check)
    assert "node/w1" in check.probes[0].evidence

    users.revoke_user("boss", users_dir=users_dir, controller=runner)
    denied = controller.k0s("kubectl", "get", "clusterrolebinding", "k0slab-user-boss")
    assert denied.returncode == 1 and "(NotFound)" in denied.stderr
    assert [record.name for record in users.list_users(users_dir)] == ["demo", "viewer"]
