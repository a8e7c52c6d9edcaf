"""k0slab's host-side API client (k0slab.cluster.apiclient) against the stand-in's real TLS API server,
with the admin kubeconfig the controller wrote: what lab.snapshot and lab.revert ask instead of kubectl."""
from __future__ import annotations

import base64

import pytest
import yaml
from conftest import start_controller, wait_for

from k0slab.cluster.apiclient import LabAPI
from k0slab.cluster.k0s.bootstrap import check_nodes_ready
from k0slab.core.errors import K0slabError
from k0slab.core.waits import NotYet

ADMIN_CONF = "/var/lib/k0s/pki/admin.conf"


@pytest.fixture
def controller(make_node):
    return start_controller(make_node("api"), "--enable-worker", "--no-taints",
                            "--kubelet-extra-args=--hostname-override=api")


def test_readyz_and_ready_nodes_through_the_admin_kubeconfig(controller):
    api = LabAPI(controller.path(ADMIN_CONF))
    assert (api.host, api.port) == ("127.0.0.1", controller.api_port)
    api.readyz()
    ready = wait_for(lambda: _ready_or_none(api, ["api"]), 20, "node api Ready through LabAPI")
    assert list(ready) == ["api"] and ready["api"]["metadata"]["name"] == "api"


def test_a_kubeconfig_with_another_ca_is_refused_by_tls(controller, tmp_path):
    config = yaml.safe_load(controller.path(ADMIN_CONF).read_text())
    # The client certificate as a CA: a real PEM certificate, but not the one that signed the API's.
    user = config["users"][0]["user"]
    config["clusters"][0]["cluster"]["certificate-authority-data"] = user["client-certificate-data"]
    forged = tmp_path / "forged.conf"
    forged.write_text(yaml.safe_dump(config))
    with pytest.raises(NotYet, match="CERTIFICATE_VERIFY_FAILED"):
        LabAPI(forged).readyz()


def test_a_stopped_api_is_not_yet_and_a_broken_kubeconfig_is_an_error(controller, tmp_path):
    api = LabAPI(controller.path(ADMIN_CONF), timeout_s=5)
    controller.ok("stop")
    with pytest.raises(NotYet, match=f"GET https://127.0.0.1:{controller.api_port}/readyz"):
        api.readyz()
    broken = tmp_path / "broken.conf"
    config = yaml.safe_load(controller.path(ADMIN_CONF).read_text())
    config["users"][0]["user"]["client-key-data"] = base64.b64encode(b"not a key").decode()
    broken.write_text(yaml.safe_dump(config))
    with pytest.raises(K0slabError, match="has no usable CA or client certificate"):
        LabAPI(broken)
    with pytest.raises(K0slabError, match="cannot read the lab's kubeconfig"):
        LabAPI(tmp_path / "missing.conf")


def _ready_or_none(api: LabAPI, names: list[str]):
    try:
        return check_nodes_ready(api.nodes(), names)
    except NotYet:
        return None
