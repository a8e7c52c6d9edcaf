"""The embedded `k0s kubectl`."""
from __future__ import annotations

import json
import os
import sys
import urllib.parse

from .client import ClientError, HttpsClient, api_error_text
from .common import PKI_DIR, CliError, host_path, now_utc, parse_rfc3339, read_text
from .flags import parse_flags
from .rbac import BY_KIND, BY_PLURAL, Resource, resource_for_cli
from .tokens import Kubeconfig
from .yamlsubset import YamlError, yaml_dump, yaml_load_all


class KubectlExit(Exception):
    def __init__(self, code: int, message: str = ""):
        super().__init__(message)
        self.code, self.message = code, message


def human_age(seconds: float) -> str:
    """kubectl's duration.HumanDuration."""
    seconds = int(seconds)
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years, days = hours // (24 * 365), (hours // 24) % 365
    return f"{years}y{days}d" if days and hours < 24 * 365 * 8 else f"{years}y"


def format_table(rows: list[list[str]], padding: int = 3, min_width: int = 6) -> str:
    """Go tabwriter layout as kubectl uses it: every column but the last padded to a common width."""
    widths = [max(max(len(str(row[i])) for row in rows) + padding, min_width) for i in range(len(rows[0]) - 1)]
    lines = ["".join(str(cell).ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + str(row[-1])
             for row in rows]
    return "\n".join(lines) + "\n"


def age_of(obj: dict) -> str:
    created = obj.get("metadata", {}).get("creationTimestamp")
    return human_age((now_utc() - parse_rfc3339(created)).total_seconds()) if created else "<unknown>"


def node_status_text(node: dict) -> str:
    ready = next((c for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"), None)
    text = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    return text + (",SchedulingDisabled" if node.get("spec", {}).get("unschedulable") else "")


def node_roles(node: dict) -> str:
    roles = sorted(key.split("/", 1)[1] for key in node["metadata"].get("labels", {})
                   if key.startswith("node-role.kubernetes.io/"))
    return ",".join(roles) or "<none>"


def pod_status_text(pod: dict) -> str:
    """kubectl's STATUS column: an init container's waiting reason as Init:<reason>, else a container's
    waiting reason, else the phase."""
    status = pod.get("status", {})
    for init in status.get("initContainerStatuses") or []:
        reason = init.get("state", {}).get("waiting", {}).get("reason")
        if reason and reason != "PodInitializing":
            return f"Init:{reason}"
    for container in status.get("containerStatuses") or []:
        reason = container.get("state", {}).get("waiting", {}).get("reason")
        if reason:
            return reason
    return status.get("phase", "Pending")


def table_rows(resource: Resource, items: list[dict], wide: bool) -> list[list[str]]:
    if resource.plural == "nodes":
        header = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
        if wide:
            header += ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
        rows = [header]
        for node in items:
            info_ = node.get("status", {}).get("nodeInfo", {})
            row = [node["metadata"]["name"], node_status_text(node), node_roles(node), age_of(node),
                   info_.get("kubeletVersion", "")]
            if wide:
                addresses = {a["type"]: a["address"] for a in node.get("status", {}).get("addresses", [])}
                row += [addresses.get("InternalIP", "<none>"), addresses.get("ExternalIP", "<none>"),
                        info_.get("osImage", ""), info_.get("kernelVersion", ""),
                        info_.get("containerRuntimeVersion", "")]
            rows.append(row)
        return rows
    if resource.plural == "pods":
        header = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        if wide:
            header += ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
        rows = [header]
        for pod in items:
            statuses = pod.get("status", {}).get("containerStatuses") or []
            ready = sum(1 for s in statuses if s.get("ready"))
            row = [pod["metadata"]["name"], f"{ready}/{len(pod.get('spec', {}).get('containers') or [])}",
                   pod_status_text(pod), str(sum(s.get("restartCount", 0) for s in statuses)), age_of(pod)]
            if wide:
                row += [pod.get("status", {}).get("podIP") or "<none>", pod.get("spec", {}).get("nodeName") or "<none>",
                        "<none>", "<none>"]
            rows.append(row)
        return rows
    columns = {
        "namespaces": (["STATUS", "AGE"], lambda o: ["Active", age_of(o)]),
        "clusterroles": (["CREATED AT"], lambda o: [o["metadata"].get("creationTimestamp", "")]),
        "roles": (["CREATED AT"], lambda o: [o["metadata"].get("creationTimestamp", "")]),
        "clusterrolebindings": (["ROLE", "AGE"], lambda o: [f"{o.get('roleRef', {}).get('kind')}/"
                                                            f"{o.get('roleRef', {}).get('name')}", age_of(o)]),
        "rolebindings": (["ROLE", "AGE"], lambda o: [f"{o.get('roleRef', {}).get('kind')}/"
                                                     f"{o.get('roleRef', {}).get('name')}", age_of(o)]),
        "secrets": (["TYPE", "DATA", "AGE"], lambda o: [o.get("type", ""), str(len(o.get("data") or {})),
                                                        age_of(o)]),
    }
    extra_header, extra = columns.get(resource.plural, (["AGE"], lambda o: [age_of(o)]))
    return [["NAME"] + extra_header] + [[o["metadata"]["name"]] + extra(o) for o in items]


class Kubectl:
    FLAGS = {"kubeconfig": "str", "namespace": "str", "all-namespaces": "bool", "output": "str", "raw": "str",
             "filename": "list", "ignore-not-found": "bool", "for": "str", "timeout": "str", "all": "bool",
             "request-timeout": "str", "context": "str", "v": "str", "wait": "bool", "quiet": "bool",
             "show-labels": "bool", "previous": "bool", "tail": "str", "container": "str",
             "ignore-daemonsets": "bool", "delete-emptydir-data": "bool", "force": "bool", "grace-period": "str"}
    SHORT = {"n": "namespace", "A": "all-namespaces", "o": "output", "f": "filename", "q": "quiet", "p": "previous",
             "c": "container"}

    def __init__(self, args: list[str]):
        try:
            self.opts, self.words = parse_flags(args, self.FLAGS, self.SHORT)
        except CliError as exc:
            raise KubectlExit(1, f"error: {exc}") from exc
        self._client = None

    def kubeconfig_path(self) -> str:
        if self.opts.get("kubeconfig"):
            return self.opts["kubeconfig"]
        if os.environ.get("KUBECONFIG"):
            return os.environ["KUBECONFIG"].split(":")[0]
        admin = PKI_DIR + "/admin.conf"
        if not os.path.exists(host_path(admin)):
            raise CliError(f"cannot stat k0s kubeconfig, is the server running?: stat {admin}: "
                           "no such file or directory")
        return admin

    @property
    def client(self) -> HttpsClient:
        if self._client is None:
            path = self.kubeconfig_path()
            try:
                text = read_text(path)
            except OSError as exc:
                raise KubectlExit(1, f"error: stat {path}: no such file or directory") from exc
            config = Kubeconfig(text, path)
            self._client = HttpsClient(config.server, config.ca_pem, config.cert_pem, config.key_pem, config.token)
        return self._client

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        try:
            return self.client.request(method, path, body)
        except ClientError as exc:
            raise KubectlExit(1, str(exc)) from exc

    def call_ok(self, method: str, path: str, body: dict | None = None, prefix: str = "") -> dict:
        code, payload = self.call(method, path, body)
        if code >= 300:
            raise KubectlExit(1, api_error_text(code, payload).replace("(NotFound): ", f"(NotFound): {prefix}", 1)
                              if prefix else api_error_text(code, payload))
        return json.loads(payload)

    @property
    def namespace(self) -> str:
        return self.opts.get("namespace") or "default"

    def run(self) -> int:
        if not self.words:
            raise KubectlExit(1, "error: you must specify a command "
                                 "(get, apply, create, delete, auth, logs, cordon, drain)")
        command, rest = self.words[0], self.words[1:]
        handler = {"get": self.get, "apply": self.apply, "create": self.create, "delete": self.delete,
                   "auth": self.auth, "logs": self.logs, "cordon": self.cordon, "uncordon": self.uncordon,
                   "drain": self.drain}.get(command)
        if handler is None:
            raise KubectlExit(1, f'error: unknown command "{command}" for "kubectl"')
        return handler(rest)

    def resolve(self, name: str) -> Resource:
        resource = resource_for_cli(name)
        if resource is None:
            raise KubectlExit(1, f'error: the server doesn\'t have a resource type "{name}"')
        return resource

    def get(self, rest: list[str]) -> int:
        if "raw" in self.opts:
            code, payload = self.call("GET", self.opts["raw"])
            if code >= 300:
                raise KubectlExit(1, api_error_text(code, payload))
            sys.stdout.buffer.write(payload)
            sys.stdout.flush()
            return 0
        if not rest:
            raise KubectlExit(1, "error: you must specify the type of resource to get")
        kind, _, slash_name = rest[0].partition("/")
        resource = self.resolve(kind)
        names = ([slash_name] if slash_name else []) + rest[1:]
        all_namespaces = bool(self.opts.get("all-namespaces")) and resource.namespaced
        namespace = "" if all_namespaces else self.namespace
        if names:
            items = [self.call_ok("GET", resource.path(namespace, name)) for name in names]
        else:
            items = self.call_ok("GET", resource.path(namespace))["items"]
        output = self.opts.get("output", "")
        if output == "json" or output == "yaml":
            document = items[0] if len(names) == 1 else {"apiVersion": "v1", "items": items, "kind": "List",
                                                          "metadata": {"resourceVersion": ""}}
            print(json.dumps(document, indent=4) if output == "json" else yaml_dump(document), end="\n"
                  if output == "json" else "")
            return 0
        if not items:
            where = f" in {namespace} namespace." if resource.namespaced and not all_namespaces else ""
            print(f"No resources found{where}", file=sys.stderr)
            return 0
        if output == "name":
            for item in items:
                print(f"{resource.singular_qualified}/{item['metadata']['name']}")
            return 0
        if output not in ("", "wide"):
            raise KubectlExit(1, f"error: unable to match a printer suitable for the output format \"{output}\", "
                                 "allowed formats are: json,name,wide,yaml")
        rows = table_rows(resource, items, output == "wide")
        if self.opts.get("show-labels"):
            rows = [rows[0] + ["LABELS"]] + [row + [",".join(f"{k}={v}" for k, v in sorted(
                item["metadata"].get("labels", {}).items())) or "<none>"] for item, row in zip(items, rows[1:],
                                                                                               strict=True)]
        if all_namespaces:
            rows = [["NAMESPACE"] + rows[0]] + [[item["metadata"].get("namespace", "")] + row
                                                for item, row in zip(items, rows[1:], strict=True)]
        sys.stdout.write(format_table(rows))
        return 0

    def logs(self, rest: list[str]) -> int:
        if len(rest) != 1:
            raise KubectlExit(1, "error: expected 'logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]'.")
        query = {"previous": "true"} if self.opts.get("previous") else {}
        if self.opts.get("container"):
            query["container"] = self.opts["container"]
        if self.opts.get("tail") not in (None, "-1"):
            query["tailLines"] = self.opts["tail"]
        path = BY_PLURAL[("", "pods")].path(self.namespace, rest[0].removeprefix("pod/")) + "/log"
        code, payload = self.call("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""))
        if code >= 300:
            raise KubectlExit(1, api_error_text(code, payload))
        sys.stdout.buffer.write(payload)
        sys.stdout.flush()
        return 0

    def documents(self) -> list[tuple[str, dict]]:
        found = []
        for source in self.opts.get("filename", []):
            try:
                text = sys.stdin.read() if source == "-" else read_text(source)
            except OSError as exc:
                raise KubectlExit(1, f'error: the path "{source}" does not exist') from exc
            try:
                for doc in yaml_load_all(text):
                    # A v1 List (what `kubectl create -f -` is often fed) stands for its items.
                    items = doc.get("items", []) if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
                    found += [(source, item) for item in items if isinstance(item, dict)]
            except YamlError as exc:
                raise KubectlExit(1, f'error: error parsing {source}: error converting YAML to JSON: yaml: {exc}') \
                    from exc
        if not self.opts.get("filename"):
            raise KubectlExit(1, "error: must specify one of -f and -k")
        return found

    def mapped(self, source: str, document: dict) -> tuple[Resource, str, str]:
        resource = BY_KIND.get((document.get("apiVersion"), document.get("kind")))
        name = (document.get("metadata") or {}).get("name", "")
        if resource is None:
            raise KubectlExit(1, f'error: resource mapping not found for name: "{name}" namespace: '
                                 f'"{(document.get("metadata") or {}).get("namespace", "")}" from "{source}": '
                                 f'no matches for kind "{document.get("kind")}" in version '
                                 f'"{document.get("apiVersion")}"\nensure CRDs are installed first')
        namespace = ""
        if resource.namespaced:
            namespace = document.setdefault("metadata", {}).setdefault("namespace", self.namespace)
        return resource, namespace, name

    def set_unschedulable(self, rest: list[str], value: bool) -> str:
        if len(rest) != 1:
            raise KubectlExit(1, "error: USAGE: cordon NODE [flags]" if value else "error: USAGE: uncordon NODE")
        nodes = BY_PLURAL[("", "nodes")]
        node = self.call_ok("GET", nodes.path(name=rest[0]))
        word = "cordoned" if value else "uncordoned"
        if bool(node.get("spec", {}).get("unschedulable")) == value:
            return f"node/{rest[0]} already {word}"
        node.setdefault("spec", {})["unschedulable"] = value
        if not value:
            node["spec"].pop("unschedulable")
        self.call_ok("PUT", nodes.path(name=rest[0]), node)
        return f"node/{rest[0]} {word}"

    def cordon(self, rest: list[str]) -> int:
        print(self.set_unschedulable(rest, True))
        return 0

    def uncordon(self, rest: list[str]) -> int:
        print(self.set_unschedulable(rest, False))
        return 0

    def drain(self, rest: list[str]) -> int:
        """Cordon, then evict every pod of the node but DaemonSet ones (kubectl's drain refusals included)."""
        pods_resource = BY_PLURAL[("", "pods")]
        pods = [pod for pod in self.call_ok("GET", pods_resource.path())["items"]
                if rest and pod.get("spec", {}).get("nodeName") == rest[0]]
        print(self.set_unschedulable(rest, True))
        owners = {f"{p['metadata']['namespace']}/{p['metadata']['name']}":
                  next((o["kind"] for o in p["metadata"].get("ownerReferences", []) if o.get("controller")), None)
                  for p in pods}
        daemons = sorted(name for name, kind in owners.items() if kind == "DaemonSet")
        bare = sorted(name for name, kind in owners.items() if kind is None)
        problems = []
        if daemons and not self.opts.get("ignore-daemonsets"):
            problems.append("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): "
                            + ", ".join(daemons))
        if bare and not self.opts.get("force"):
            problems.append("cannot delete Pods that declare no controller (use --force to override): "
                            + ", ".join(bare))
        if problems:
            raise KubectlExit(1, f"error: unable to drain node \"{rest[0]}\" due to error: " + ", ".join(problems)
                              + ", continuing command...\nThere are pending nodes to be drained:\n " + rest[0])
        if daemons:
            print("Warning: ignoring DaemonSet-managed Pods: " + ", ".join(daemons), file=sys.stderr)
        for name, kind in sorted(owners.items()):
            if kind == "DaemonSet":
                continue
            namespace, pod = name.split("/", 1)
            print(f"evicting pod {name}")
            code, payload = self.call("DELETE", pods_resource.path(namespace, pod))
            if code >= 300 and code != 404:
                raise KubectlExit(1, api_error_text(code, payload))
            print(f"pod/{pod} evicted")
        print(f"node/{rest[0]} drained")
        return 0

    def create(self, rest: list[str]) -> int:
        """`create namespace NAME` or `create -f FILE|-`: like kubectl, an existing object is an error."""
        if rest[:1] in (["namespace"], ["ns"]):
            if len(rest) != 2:
                raise KubectlExit(1, "error: exactly one NAME is required, got " + str(len(rest) - 1))
            documents = [("", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": rest[1]}})]
        elif rest:
            raise KubectlExit(1, f'error: unknown command "{rest[0]}" for "kubectl create"')
        else:
            documents = self.documents()
        failed = False
        for source, document in documents:
            resource, namespace, name = self.mapped(source, document)
            code, payload = self.call("POST", resource.path(namespace), document)
            if code >= 300:
                print(api_error_text(code, payload), file=sys.stderr)
                failed = True
                continue
            print(f"{resource.singular_qualified}/{json.loads(payload)['metadata']['name']} created")
        return 1 if failed else 0

    def apply(self, _rest: list[str]) -> int:
        for source, document in self.documents():
            resource, namespace, name = self.mapped(source, document)
            code, payload = self.call("GET", resource.path(namespace, name))
            if code == 404:
                self.call_ok("POST", resource.path(namespace), document)
                action = "created"
            elif code >= 300:
                raise KubectlExit(1, api_error_text(code, payload))
            else:
                existing = json.loads(payload)
                if _contains(existing, document):
                    action = "unchanged"
                else:
                    merged = {**document, "metadata": {**existing["metadata"], **document["metadata"]}}
                    self.call_ok("PUT", resource.path(namespace, name), merged)
                    action = "configured"
            print(f"{resource.singular_qualified}/{name} {action}")
        return 0

    def delete(self, rest: list[str]) -> int:
        targets = []
        if self.opts.get("filename"):
            targets = [(source,) + self.mapped(source, doc) for source, doc in self.documents()]
        elif rest:
            kind, _, slash_name = rest[0].partition("/")
            resource = self.resolve(kind)
            names = ([slash_name] if slash_name else []) + rest[1:]
            if not names:
                raise KubectlExit(1, 'error: resource(s) were provided, but no name was specified')
            targets = [(None, resource, self.namespace if resource.namespaced else "", name) for name in names]
        else:
            raise KubectlExit(1, "error: You must provide one or more resources by argument or filename.")
        failed = False
        for source, resource, namespace, name in targets:
            code, payload = self.call("DELETE", resource.path(namespace, name))
            if code == 404 and self.opts.get("ignore-not-found"):
                continue
            if code >= 300:
                text = api_error_text(code, payload)
                if source:
                    text = text.replace("): ", f'): error when deleting "{source}": ', 1)
                print(text, file=sys.stderr)
                failed = True
                continue
            print(f'{resource.singular_qualified} "{name}" deleted')
        return 1 if failed else 0

    def auth(self, rest: list[str]) -> int:
        if len(rest) < 3 or rest[0] != "can-i":
            raise KubectlExit(1, "error: you must specify two arguments: verb resource or verb resource/resourceName.")
        verb, target = rest[1], rest[2]
        if target.startswith("/"):
            spec = {"nonResourceAttributes": {"verb": verb, "path": target}}
        else:
            kind, _, name = target.partition("/")
            resource = resource_for_cli(kind)
            if resource is not None:
                plural, group = resource.plural, resource.group
            elif kind == "*":
                plural, group = "*", "*"
            else:
                plural, _, group = kind.partition(".")
                print(f"Warning: the server doesn't have a resource type '{plural}'", file=sys.stderr)
            namespaced = resource.namespaced if resource else True
            namespace = "" if self.opts.get("all-namespaces") or not namespaced else self.namespace
            spec = {"resourceAttributes": {"namespace": namespace, "verb": verb, "group": group,
                                           "resource": plural, "name": name}}
        review = self.call_ok("POST", BY_PLURAL[("authorization.k8s.io", "selfsubjectaccessreviews")].path(),
                              {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                               "spec": spec})
        allowed = bool(review.get("status", {}).get("allowed"))
        if not self.opts.get("quiet"):
            print("yes" if allowed else "no")
        return 0 if allowed else 1


def _contains(existing, wanted) -> bool:
    """True when every field the manifest sets already has that value on the server (nothing to apply)."""
    if isinstance(wanted, dict):
        return isinstance(existing, dict) and all(_contains(existing.get(k), v) for k, v in wanted.items())
    return existing == wanted


def cmd_kubectl(args: list[str]) -> int:
    try:
        return Kubectl(args).run()
    except KubectlExit as exc:
        if exc.message:
            print(exc.message, file=sys.stderr)
        return exc.code


