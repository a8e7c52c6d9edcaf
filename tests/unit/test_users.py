"""Users: certificates signed on the host, kubeconfigs, RBAC bindings and checks through a fake controller.

The fake answers kubectl the way the real API server does (same NotFound/Forbidden wording) and decides
access from the bindings k0slab applied and the groups in the certificate that was pushed to it.
"""
from __future__ import annotations

import base64
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from k0slab.cluster import pki
from k0slab.cluster import users
from k0slab.core.errors import K0slabError
from k0slab.vms.remote import CommandResult, RemoteCommandError

SERVER = "https://192.168.50.11:6443"
BUILTIN = {"cluster-admin", "admin", "edit", "view"}
NODES_FORBIDDEN = ('Error from server (Forbidden): nodes is forbidden: User "demo" cannot list resource "nodes" '
                   'in API group "" at the cluster scope')


class FakeController:
    """A controller whose `k0s kubectl` keeps RBAC objects in memory."""

    name = "node1"

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.stdins: list[str | None] = []
        self.files: dict[str, tuple[str, int]] = {}
        self.uploads: list[tuple[str, int]] = []
        self.clusterroles = set(BUILTIN)
        self.roles = {("default", "pod-reader")}
        self.namespaces = {"default", "kube-system", "dev"}
        self.bindings: dict[tuple[str, str, str], dict] = {}
        self.down = False

    def put_text(self, text: str, path: str, mode: int = 0o644) -> None:
        self.files[path] = (text, mode)
        self.uploads.append((path, mode))

    def run(self, command: str, *, stdin: str | None = None, check: bool = True,
            timeout: float | None = None) -> CommandResult:
        self.commands.append(command)
        self.stdins.append(stdin)
        code, out, err = self._answer(shlex.split(command), stdin)
        result = CommandResult(command, code, out, err)
        if check and not result.ok:
            raise RemoteCommandError(self.name, result)
        return result

    # --- kubectl -------------------------------------------------------------------------------
    def _answer(self, words: list[str], stdin: str | None) -> tuple[int, str, str]:
        if words[:2] == ["rm", "-f"]:
            self.files.pop(words[2], None)
            return 0, "", ""
        if words[0].startswith("KUBECONFIG="):
            assert words[0] == "KUBECONFIG=/var/lib/k0s/pki/admin.conf"
            words = words[1:]
        assert words[:2] == ["/usr/local/bin/k0s", "kubectl"], words
        if self.down:
            return 1, "", "The connection to the server localhost:8080 was refused - did you specify the right host?"
        args = words[2:]
        namespace = args[args.index("-n") + 1] if "-n" in args else "default"
        if "--kubeconfig" in args:
            return self._as_user(args, namespace)
        verb, kind = args[0], args[1]
        if verb == "get":
            return self._get(kind, args[2], namespace)
        if verb == "apply":
            assert args[1:] == ["-f", "-"] and stdin
            doc = yaml.safe_load(stdin)
            ns = doc["metadata"].get("namespace", "")
            if ns and ns not in self.namespaces:
                return 1, "", f'Error from server (NotFound): error when creating "STDIN": namespaces "{ns}" not found'
            self.bindings[(doc["kind"], ns, doc["metadata"]["name"])] = doc
            return 0, f"{doc['kind'].lower()}.rbac.authorization.k8s.io/{doc['metadata']['name']} created\n", ""
        if verb == "delete":
            assert "--ignore-not-found" in args
            kinds = {"clusterrolebinding": ("ClusterRoleBinding", ""), "rolebinding": ("RoleBinding", namespace)}
            object_kind, ns = kinds[kind]
            if self.bindings.pop((object_kind, ns, args[2]), None) is None:
                return 0, "", ""
            return 0, f'{kind}.rbac.authorization.k8s.io "{args[2]}" deleted\n', ""
        raise AssertionError(f"unexpected kubectl call {args}")

    def _get(self, kind: str, name: str, namespace: str) -> tuple[int, str, str]:
        found = {"clusterrole": name in self.clusterroles, "role": (namespace, name) in self.roles,
                 "namespace": name in self.namespaces}[kind]
        qualified = {"clusterrole": "clusterroles.rbac.authorization.k8s.io",
                     "role": "roles.rbac.authorization.k8s.io", "namespace": "namespaces"}[kind]
        if not found:
            return 1, "", f'Error from server (NotFound): {qualified} "{name}" not found'
        group = "" if kind == "namespace" else ".rbac.authorization.k8s.io"
        return 0, f"{kind}{group}/{name}\n", ""

    def _as_user(self, args: list[str], namespace: str) -> tuple[int, str, str]:
        path = args[args.index("--kubeconfig") + 1]
        text, mode = self.files[path]
        assert mode == 0o600
        cert = x509.load_pem_x509_certificate(
            base64.b64decode(yaml.safe_load(text)["users"][0]["user"]["client-certificate-data"])
        )
        user = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        groups = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}
        resource = args[args.index("get") + 1]
        if self._allowed(user, groups, resource, namespace):
            if resource == "nodes":
                return 0, "node/node1\nnode/node2\n", ""
            return 0, "", f"No resources found in {namespace} namespace."
        scope = "at the cluster scope" if resource == "nodes" else f'in the namespace "{namespace}"'
        return 1, "", (f'Error from server (Forbidden): {resource} is forbidden: User "{user}" cannot list '
                       f'resource "{resource}" in API group "" {scope}')

    def _allowed(self, user: str, groups: set[str], resource: str, namespace: str) -> bool:
        if "system:masters" in groups:
            return True
        for (kind, ns, _), doc in self.bindings.items():
            if doc["subjects"] != [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]:
                continue
            ref = doc["roleRef"]
            if kind == "ClusterRoleBinding" and ref["name"] == "cluster-admin":
                return True
            namespaced_grant = kind == "ClusterRoleBinding" or ns == namespace
            if resource == "pods" and namespaced_grant and (ref["name"] in BUILTIN or ref["name"] == "pod-reader"):
                return True
        return False


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return pki.create_ca()


@pytest.fixture
def users_dir(tmp_path) -> Path:
    return tmp_path / "lab" / "users"


def create(ca, users_dir, name="demo", groups=("development",), days=30, **options):
    return users.create_user(name, list(groups), days, lab_name="default", server_url=SERVER,
                             ca_cert_pem=ca[0], ca_key_pem=ca[1], users_dir=users_dir, **options)


def cert_of(kubeconfig: Path) -> bytes:
    config = yaml.safe_load(kubeconfig.read_text())
    return base64.b64decode(config["users"][0]["user"]["client-certificate-data"])


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- create -----------------------------------------------------------------------------------------


def test_create_without_binding_writes_a_verified_private_kubeconfig(ca, users_dir):
    record = create(ca, users_dir)
    assert record.kubeconfig == users_dir / "demo.kubeconfig"
    assert mode_of(record.kubeconfig) == 0o600
    assert mode_of(users_dir / "demo.json") == 0o600
    config = yaml.safe_load(record.kubeconfig.read_text())
    assert config["current-context"] == "default-demo"
    assert config["contexts"] == [{"name": "default-demo", "context": {"cluster": "default", "user": "default-demo"}}]
    assert config["clusters"][0]["name"] == "default"
    assert config["clusters"][0]["cluster"]["server"] == SERVER
    assert base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]) == ca[0]
    assert config["users"][0]["name"] == "default-demo"
    cert = x509.load_pem_x509_certificate(cert_of(record.kubeconfig))
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca[0]))
    pki.verify_client_cert(cert_of(record.kubeconfig), ca[0], "demo", ["development"], 30)
    assert record.bindings == [] and record.groups == ["development"]
    assert (record.expires - record.created).days == 30
    summary = record.summary()
    assert "subject:    O=development, CN=demo" in summary and "issuer:     CN=kubernetes-ca" in summary
    assert "binding:    none" in summary


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_openssl_reads_the_written_certificate(ca, users_dir, tmp_path):
    record = create(ca, users_dir)
    path = tmp_path / "demo.crt"
    path.write_bytes(cert_of(record.kubeconfig))
    out = subprocess.run(["openssl", "x509", "-noout", "-subject", "-issuer", "-in", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert "subject=O = development, CN = demo" in out
    assert "issuer=CN = kubernetes-ca" in out


def test_explicit_output_path_and_several_groups(ca, users_dir, tmp_path):
    output = tmp_path / "out" / "jane.yaml"
    record = create(ca, users_dir, name="jane", groups=["dev", "ops", "dev"], output=output)
    assert record.kubeconfig == output.resolve() and mode_of(output) == 0o600
    assert not (users_dir / "jane.kubeconfig").exists()
    assert record.groups == ["dev", "ops"]
    assert record.certificate.subject == "O=dev, O=ops, CN=jane"


def test_kubeconfigs_of_several_users_and_labs_merge_without_clashes(ca, tmp_path):
    names = set()
    for lab in ("default", "ci"):
        for user in ("demo", "jane"):
            record = users.create_user(user, ["g"], 1, lab_name=lab, server_url=SERVER, ca_cert_pem=ca[0],
                                       ca_key_pem=ca[1], users_dir=tmp_path / lab)
            config = yaml.safe_load(record.kubeconfig.read_text())
            names.add((config["contexts"][0]["name"], config["users"][0]["name"]))
            assert config["clusters"][0]["name"] == lab
    assert len(names) == 4 and all(context == user for context, user in names)


@pytest.mark.parametrize("name", sorted(users.RESERVED_NAMES))
def test_reserved_names_are_refused_before_anything_happens(ca, users_dir, name):
    controller = FakeController()
    with pytest.raises(K0slabError, match="reserved by k0s"):
        create(ca, users_dir, name=name, controller=controller, clusterrole="view")
    assert not users_dir.exists() and controller.commands == []


@pytest.mark.parametrize("name", ["Demo", "a/b", "", "-x", "x-", "system:admin", "a b", "x" * 64])
def test_invalid_names_are_refused(ca, users_dir, name):
    with pytest.raises(K0slabError, match="user name"):
        create(ca, users_dir, name=name)
    assert not users_dir.exists()


@pytest.mark.parametrize("groups,days,message", [
    ([], 30, "no group"), ([""], 30, "group ''"), (["a,b"], 30, "group 'a,b'"),
    (["development"], 0, "--days 0"), (["development"], -3, "--days -3"), (["development"], 1.5, "--days 1.5"),
    (["development"], 3651, "outlives the lab CA"),
])
def test_bad_groups_and_days_are_refused(ca, users_dir, groups, days, message):
    with pytest.raises(K0slabError, match=message):
        create(ca, users_dir, groups=groups, days=days)
    assert not users_dir.exists()


@pytest.mark.parametrize("options,message", [
    ({"clusterrole": "view", "role": "pod-reader"}, "both --clusterrole and --role"),
    ({"namespace": "dev"}, "--namespace given without"),
    ({"role": "pod-reader", "namespace": "Dev"}, "not a valid namespace"),
    ({"clusterrole": "a/b"}, "not a valid role name"),
])
def test_inconsistent_binding_options_are_refused(ca, users_dir, options, message):
    controller = FakeController()
    with pytest.raises(K0slabError, match=message):
        create(ca, users_dir, controller=controller, **options)
    assert controller.commands == []


def test_existing_user_is_not_overwritten(ca, users_dir):
    create(ca, users_dir)
    before = (users_dir / "demo.kubeconfig").read_bytes()
    with pytest.raises(K0slabError, match="already exists"):
        create(ca, users_dir)
    assert (users_dir / "demo.kubeconfig").read_bytes() == before


def test_a_binding_needs_the_controller(ca, users_dir):
    with pytest.raises(K0slabError, match="needs the controller"):
        create(ca, users_dir, clusterrole="view")


def test_clusterrole_binding_is_checked_then_applied(ca, users_dir):
    controller = FakeController()
    record = create(ca, users_dir, controller=controller, clusterrole="view")
    admin = "KUBECONFIG=/var/lib/k0s/pki/admin.conf /usr/local/bin/k0s kubectl"
    assert controller.commands == [f"{admin} get clusterrole view -o name", f"{admin} apply -f -"]
    doc = yaml.safe_load(controller.stdins[1])
    assert doc["kind"] == "ClusterRoleBinding" and doc["metadata"]["name"] == "k0slab-user-demo"
    assert doc["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}
    assert doc["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "demo"}]
    assert record.bindings[0].describe() == "ClusterRoleBinding k0slab-user-demo: ClusterRole view (cluster-wide)"
    assert users.load_user(users_dir, "demo") == record


def test_role_binding_defaults_to_the_default_namespace(ca, users_dir):
    controller = FakeController()
    record = create(ca, users_dir, controller=controller, role="pod-reader")
    assert "get role pod-reader -n default -o name" in controller.commands[1]
    doc = yaml.safe_load(controller.stdins[-1])
    assert doc["kind"] == "RoleBinding" and doc["metadata"]["namespace"] == "default"
    assert doc["roleRef"]["kind"] == "Role"
    assert record.bindings[0].namespace == "default"


def test_clusterrole_in_one_namespace_is_a_role_binding(ca, users_dir):
    controller = FakeController()
    create(ca, users_dir, controller=controller, clusterrole="edit", namespace="dev")
    doc = yaml.safe_load(controller.stdins[-1])
    assert (doc["kind"], doc["metadata"]["namespace"], doc["roleRef"]["kind"]) == ("RoleBinding", "dev", "ClusterRole")


@pytest.mark.parametrize("options,message", [
    ({"clusterrole": "nope"}, "clusterrole 'nope' does not exist"),
    ({"role": "nope", "namespace": "dev"}, "role 'nope' does not exist in namespace 'dev'"),
    ({"role": "pod-reader", "namespace": "missing"}, "namespace 'missing' does not exist"),
])
def test_missing_roles_fail_in_one_line_and_leave_nothing(ca, users_dir, options, message):
    controller = FakeController()
    with pytest.raises(K0slabError, match=message) as error:
        create(ca, users_dir, controller=controller, **options)
    assert "\n" not in str(error.value)
    assert not any(" apply " in command for command in controller.commands)
    assert not users_dir.exists()


def test_an_unreachable_api_is_a_remote_error_not_a_missing_role(ca, users_dir):
    controller = FakeController()
    controller.down = True
    with pytest.raises(RemoteCommandError, match="connection to the server"):
        create(ca, users_dir, controller=controller, clusterrole="view")


# --- check ------------------------------------------------------------------------------------------


def test_check_without_binding_reports_forbidden_as_expected(ca, users_dir):
    create(ca, users_dir)
    controller = FakeController()
    check = users.check_user("demo", users_dir=users_dir, controller=controller)
    nodes, pods = check.probes
    assert (nodes.request, nodes.outcome, nodes.expected) == ("get nodes", "forbidden", False)
    assert nodes.evidence == NODES_FORBIDDEN
    assert (pods.outcome, pods.expected) == ("forbidden", False)
    assert check.ok and "as expected" in str(check)
    # The kubeconfig went up as 0600 under a temporary name and was removed afterwards.
    ((path, mode),) = controller.uploads
    assert mode == 0o600 and path.startswith("/tmp/k0slab-check-demo-")
    assert controller.files == {} and controller.commands[-1] == f"rm -f {path}"


def test_check_with_view_allows_pods_but_not_nodes(ca, users_dir):
    controller = FakeController()
    create(ca, users_dir, controller=controller, clusterrole="view")
    check = users.check_user("demo", users_dir=users_dir, controller=controller)
    nodes, pods = check.probes
    assert (nodes.outcome, nodes.expected) == ("forbidden", False)
    assert (pods.request, pods.outcome, pods.expected) == ("get pods -n default", "allowed", True)
    assert pods.evidence == "No resources found in default namespace."
    assert check.ok


def test_check_with_cluster_admin_allows_nodes(ca, users_dir):
    controller = FakeController()
    create(ca, users_dir, controller=controller, clusterrole="cluster-admin")
    check = users.check_user("demo", users_dir=users_dir, controller=controller)
    assert [(p.outcome, p.expected) for p in check.probes] == [("allowed", True), ("allowed", True)]
    assert check.probes[0].evidence == "node/node1 | node/node2"


def test_check_superuser_group(ca, users_dir):
    record = create(ca, users_dir, name="root-ish", groups=["system:masters"], superuser=True)
    check = users.check_user("root-ish", users_dir=users_dir, controller=FakeController())
    assert check.ok and all(p.outcome == "allowed" for p in check.probes)
    # Summary and check both say plainly that this certificate is a superuser.
    assert "SUPERUSER" in record.summary() and "SUPERUSER" in str(check)


@pytest.mark.parametrize("group", ["system:masters", "system:nodes", "dev\nsystem:masters", "x" * 65, "a\tb"])
def test_system_control_and_long_groups_are_refused(ca, users_dir, group):
    with pytest.raises(K0slabError) as refused:
        create(ca, users_dir, groups=[group])
    assert "--superuser" in refused.value.hint or "group" in refused.value.message
    assert not users_dir.exists() or not any(users_dir.iterdir())


def test_output_is_never_a_folder_or_someone_elses_file(ca, users_dir, tmp_path):
    with pytest.raises(K0slabError, match="is a folder"):
        create(ca, users_dir, output=tmp_path)
    theirs = tmp_path / "config"
    theirs.write_text("the user's own kubeconfig\n")
    with pytest.raises(K0slabError, match="already exists"):
        create(ca, users_dir, output=theirs)
    assert theirs.read_text() == "the user's own kubeconfig\n"
    record = create(ca, users_dir, output=theirs, force=True)
    assert record.kubeconfig == theirs.resolve()


def test_revoke_keeps_a_kubeconfig_changed_since_k0slab_wrote_it(ca, users_dir, tmp_path):
    record = create(ca, users_dir, output=tmp_path / "demo.kubeconfig")
    record.kubeconfig.write_text(record.kubeconfig.read_text() + "# the user's own edit\n")
    _, deleted = users.revoke_user("demo", users_dir=users_dir, controller=None)
    assert not deleted and record.kubeconfig.exists() and users.list_users(users_dir) == []


def test_check_role_in_namespace_probes_that_namespace(ca, users_dir):
    controller = FakeController()
    create(ca, users_dir, controller=controller, clusterrole="edit", namespace="dev")
    check = users.check_user("demo", users_dir=users_dir, controller=controller)
    assert check.probes[1].request == "get pods -n dev" and check.probes[1].outcome == "allowed"
    assert check.ok


def test_check_custom_role_has_no_expectation_for_pods(ca, users_dir):
    controller = FakeController()
    create(ca, users_dir, controller=controller, role="pod-reader")
    check = users.check_user("demo", users_dir=users_dir, controller=controller)
    assert [(p.outcome, p.expected) for p in check.probes] == [("forbidden", False), ("allowed", None)]
    assert check.ok


def test_check_reports_a_mismatch_with_evidence(ca, users_dir):
    controller = FakeController()
    create(ca, users_dir, controller=controller, clusterrole="cluster-admin")
    controller.bindings.clear()  # someone deleted the binding behind k0slab's back
    check = users.check_user("demo", users_dir=users_dir, controller=controller)
    assert not check.ok
    assert "MISMATCH get nodes: forbidden (expected allowed)" in str(check)
    assert NODES_FORBIDDEN in str(check)


def test_check_with_the_api_down_is_an_error_and_still_cleans_up(ca, users_dir):
    create(ca, users_dir)
    controller = FakeController()
    controller.down = True
    check = users.check_user("demo", users_dir=users_dir, controller=controller)
    assert not check.ok and {p.outcome for p in check.probes} == {"error"}
    assert controller.files == {}


# --- list and revoke --------------------------------------------------------------------------------


def test_list_users_is_sorted_and_empty_without_folder(ca, users_dir):
    assert users.list_users(users_dir) == []
    create(ca, users_dir, name="zed")
    create(ca, users_dir, name="amy")
    assert [record.name for record in users.list_users(users_dir)] == ["amy", "zed"]


def test_revoke_deletes_bindings_and_files(ca, users_dir):
    controller = FakeController()
    record = create(ca, users_dir, controller=controller, clusterrole="edit", namespace="dev")
    assert controller.bindings
    revoked, deleted = users.revoke_user("demo", users_dir=users_dir, controller=controller)
    assert revoked == record and deleted
    assert controller.commands[-1] == ("KUBECONFIG=/var/lib/k0s/pki/admin.conf /usr/local/bin/k0s kubectl delete "
                                       "rolebinding k0slab-user-demo -n dev --ignore-not-found")
    assert controller.bindings == {}
    assert not record.kubeconfig.exists() and users.list_users(users_dir) == []
    # The name is free again.
    create(ca, users_dir, controller=controller, clusterrole="view")


def test_revoke_needs_the_controller_only_for_bindings(ca, users_dir):
    create(ca, users_dir, name="plain")
    users.revoke_user("plain", users_dir=users_dir, controller=None)
    create(ca, users_dir, controller=FakeController(), clusterrole="view")
    with pytest.raises(K0slabError, match="bindings to delete"):
        users.revoke_user("demo", users_dir=users_dir, controller=None)
    assert (users_dir / "demo.json").exists()


def test_unknown_user(users_dir):
    with pytest.raises(K0slabError, match="no user 'ghost'"):
        users.revoke_user("ghost", users_dir=users_dir, controller=None)
    with pytest.raises(K0slabError, match="no user 'ghost'"):
        users.check_user("ghost", users_dir=users_dir, controller=FakeController())
