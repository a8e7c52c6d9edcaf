"""The benchmark's pure parts: overhead arithmetic, target verdicts, the report's shape, QEMU RSS
from a fake /proc, overlay disk use, the cloud-init seed, and lab clean-up on every way out."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from bench import bench_up as bench
from k0slab.vms import image as imagemod
from k0slab.core.errors import K0slabError

PHASES = {"resolve k0s binary": 0.4, "create network and VMs": 2.0, "wait for SSH": 30.0,
          bench.READY_PHASE: 20.0, "fetch the admin kubeconfig": 0.3}


def test_overhead_takes_away_the_slowest_boot_and_the_ready_wait():
    assert bench.overhead_s(60.0, {"node1": 25.0, "node2": 31.5, "node3": 28.0}, PHASES) == pytest.approx(8.5)


@pytest.mark.parametrize("ssh_ready, phases", [({}, PHASES), ({"node1": 1.0}, {"wait for SSH": 1.0})])
def test_overhead_refuses_incomplete_timings(ssh_ready, phases):
    with pytest.raises(K0slabError, match="up-timings.json"):
        bench.overhead_s(60.0, ssh_ready, phases)


def test_verdicts_met_at_the_limit_missed_above_and_unmeasured_when_missing():
    rows = {row["key"]: row for row in bench.verdicts({"ratio_up3_up1": 1.8, "overhead_s": 10.01, "rerun_s": None})}
    assert rows["ratio_up3_up1"]["verdict"] == "met"
    assert rows["overhead_s"]["verdict"] == "missed"
    assert rows["rerun_s"]["verdict"] == "not measured"
    assert rows["down3_s"]["verdict"] == "not measured"
    assert [row["key"] for row in bench.verdicts({})] == [t.key for t in bench.TARGETS]


ISSUE_KEYS = {
    "up1_s", "up3_s", "ratio_up3_up1", "overhead_s", "rerun_s", "down3_s", "disk_per_node_mb",
    "qemu_rss_mb_per_node", "image_build_cached_s", "boot_to_ssh_s", "boot_to_ssh_cloudinit_s", "phases", "machine",
}


def test_report_has_every_issue_key_derived_values_and_verdicts():
    report = bench.finish({
        "up1_s": 40.0, "up3_s": 60.0, "overhead_s": 10.123, "rerun_s": 2.0, "down3_s": 3.0,
        "image_build_cached_s": 0.05, "boot_to_ssh_s": 10.0, "boot_to_ssh_cloudinit_s": 25.0, "phases": PHASES,
        "disk_mb_by_node": {"node1": 90.0, "node2": 40.0, "node3": 50.0},
        "qemu_rss_mb_by_node": {"node1": 600.0, "node2": 400.0}, "machine": {"cores": 2, "accel": "tcg"},
    })
    assert ISSUE_KEYS <= set(report)
    assert report["ratio_up3_up1"] == 1.5 and report["ratio_boot_k0slab_cloudinit"] == 0.4
    assert report["disk_per_node_mb"] == 60.0 and report["qemu_rss_mb_per_node"] == 500.0
    assert report["overhead_s"] == 10.12
    verdicts = {row["key"]: row["verdict"] for row in report["targets"]}
    assert verdicts == {"ratio_up3_up1": "met", "overhead_s": "missed", "rerun_s": "met", "down3_s": "met",
                        "disk_per_node_mb": "met", "image_build_cached_s": "met",
                        "ratio_boot_k0slab_cloudinit": "met", "ratio_revert3_up3": "not measured"}
    assert json.loads(json.dumps(report)) == report


def test_a_failed_step_leaves_its_keys_none_and_the_tables_still_render():
    report = bench.finish({"up1_s": 40.0, "errors": ["3-node lab.up: boom"], "machine": {}})
    assert ISSUE_KEYS <= set(report)
    assert report["up3_s"] is None and report["ratio_up3_up1"] is None and report["disk_per_node_mb"] is None
    console = Console(record=True, width=120)
    for table in bench.tables(report):
        console.print(table)
    text = console.export_text()
    assert "lab.up, 1 node" in text and "40.00 s" in text and "not measured" in text


def _process(proc: Path, pid: str, argv: list[str], rss_kib: int | None) -> None:
    folder = proc / pid
    folder.mkdir()
    (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + (b"\0" if argv else b""))
    status = "Name:\tqemu\n" + (f"VmRSS:\t  {rss_kib} kB\n" if rss_kib is not None else "")
    (folder / "status").write_text(status)


def test_qemu_rss_is_read_for_the_labs_domains_only(tmp_path):
    qemu = "/usr/bin/qemu-system-x86_64"
    _process(tmp_path, "101", [qemu, "-name", "guest=k0slab-b1-up3-node1,debug-threads=on", "-m", "1024"], 512000)
    _process(tmp_path, "102", [qemu, "-name", "guest=k0slab-b1-up3-node2,debug-threads=on"], 307200)
    _process(tmp_path, "103", [qemu, "-name", "guest=k0slab-other-node1,debug-threads=on"], 999999)
    _process(tmp_path, "104", [], None)  # a kernel thread: empty command line, no VmRSS
    (tmp_path / "self").mkdir()
    domains = {"k0slab-b1-up3-node1": "node1", "k0slab-b1-up3-node2": "node2", "k0slab-b1-up3-node3": "node3"}
    assert bench.qemu_rss_mb(domains, tmp_path) == {"node1": 500.0, "node2": 300.0}


def test_overlay_disk_counts_allocated_blocks_of_qcow2_files_only(tmp_path):
    (tmp_path / "node1.qcow2").write_bytes(b"x" * (2 << 20))
    with open(tmp_path / "node2.qcow2", "wb") as sparse:
        sparse.truncate(500 << 20)
    (tmp_path / "k0s-amd64.img").write_bytes(b"k" * (1 << 20))
    used = bench.overlay_disk_mb(tmp_path)
    assert set(used) == {"node1", "node2"}
    assert 2.0 <= used["node1"] < 2.2
    assert used["node2"] < 0.1


def test_seed_gives_root_the_lab_key_and_the_vm_its_name():
    user_data, meta_data = bench.seed_documents("node1", "b1-c1-node1", "ssh-ed25519 AAAAkey k0slab\n")
    assert user_data.startswith("#cloud-config\n")
    assert yaml.safe_load(user_data) == {"disable_root": False, "ssh_authorized_keys": ["ssh-ed25519 AAAAkey k0slab"]}
    assert yaml.safe_load(meta_data) == {"instance-id": "b1-c1-node1", "local-hostname": "node1"}


def test_seed_is_an_iso9660_volume_labelled_cidata(tmp_path):
    if shutil.which("cloud-localds") is None:
        pytest.skip("cloud-localds is not installed (scripts/setup.sh installs cloud-image-utils)")
    seed = bench.write_seed(tmp_path / "seed.iso", "node1", "i-1", "ssh-ed25519 AAAAkey")
    descriptor = seed.read_bytes()[16 * 2048:17 * 2048]  # the primary volume descriptor
    assert descriptor[1:6] == b"CD001"
    assert descriptor[40:72].decode().strip().lower() == "cidata"
    assert seed.stat().st_mode & 0o777 == 0o644


def test_cloud_init_recipe_is_the_node_recipe_plus_cloud_init():
    base = imagemod.load_recipe(bench.IMAGE).model_dump()
    variant = imagemod.load_recipe(bench.CLOUDINIT_IMAGE).model_dump()
    assert variant.pop("name") == bench.CLOUDINIT_IMAGE and base.pop("name") == bench.IMAGE
    assert variant.pop("packages") == [*base.pop("packages"), "cloud-init"]
    assert variant == base


def test_every_lab_named_is_removed_even_when_the_run_fails_or_one_removal_fails():
    removed: list[str] = []
    messages: list[str] = []

    def remove(name: str) -> None:
        removed.append(name)
        if name.endswith("-k1"):
            raise RuntimeError("libvirt went away")

    with pytest.raises(KeyboardInterrupt):
        with bench.fresh_labs(remove, messages.append) as new:
            first, second = new("k1"), new("up3")
            raise KeyboardInterrupt
    assert removed == [first, second]
    assert first.split("-")[0] == second.split("-")[0] and first != second
    assert any("could not remove lab" in m for m in messages)


def test_a_clean_run_that_could_not_remove_a_lab_fails():
    def remove(name: str) -> None:
        raise RuntimeError("stuck")

    with pytest.raises(K0slabError, match="were not removed"):
        with bench.fresh_labs(remove, lambda _line: None) as new:
            new("up1")


def test_lab_names_fit_k0slab_rules():
    from k0slab.core.state import validate_lab_name

    with bench.fresh_labs(lambda _name: None, lambda _line: None) as new:
        for suffix in ("up1", "up3", "k12", "c12"):
            validate_lab_name(new(suffix))


def test_a_whole_run_with_fakes_goes_on_after_a_failed_step_and_removes_its_labs(tmp_path, monkeypatch):
    from k0slab.core.state import LabDir, LabState, SnapshotRecord

    monkeypatch.setenv("K0SLAB_HOME", str(tmp_path))
    downed: list[str] = []
    commands: list[tuple[str, ...]] = []

    class FakeLab:
        def __init__(self, name: str) -> None:
            self.name = name

        def down(self, progress) -> None:
            downed.append(self.name)

    def fake_invoke(*args: str, quiet: bool = False) -> float:
        commands.append(args)
        if args[:3] == ("lab.up", "--nodes", "3"):
            timings = LabDir(args[4]).logs_dir / "up-timings.json"
            if timings.exists():
                return 2.5  # the re-run on the ready lab
            timings.parent.mkdir(parents=True)
            timings.write_text(json.dumps({"phases": PHASES, "ssh_ready_s": {"node1": 29.0}}))
            (timings.parent / "up-timeline.svg").write_text("<svg/>\n")
            return 60.0
        if args[0] == "lab.snapshot":
            LabDir(args[3]).save(LabState(name=args[3], subnet_index=5, network="n", bridge="b", snapshots={
                "bench": SnapshotRecord(name="bench", created="now", profile="default", k0s_version="v1",
                                        nodes={}, added_bytes={"node1": 200 << 20, "node2": 100 << 20})}))
        return {"lab.up": 40.0, "lab.down": 4.0, "lab.revert": 9.0}.get(args[0], 1.0)

    def no_footprint(name: str) -> dict:
        raise K0slabError("no /proc")

    monkeypatch.setattr(bench, "_preflight", lambda options: imagemod.Image(
        name="debian-12", arch="amd64", source="t", key="k", path=tmp_path, built_at="now", build_seconds=1))
    monkeypatch.setattr(bench, "machine_info", lambda kernel, arch: {"cores": 2})
    monkeypatch.setattr(bench, "_invoke", fake_invoke)
    monkeypatch.setattr(bench, "TIMELINE_COPY", tmp_path / "out" / "timeline.svg")
    monkeypatch.setattr(bench, "boot_to_ssh", lambda _lab, image, _arch, _out: 10.0 if image == bench.IMAGE else 30.0)
    monkeypatch.setattr(bench, "Lab", FakeLab)
    monkeypatch.setattr(bench, "_footprint", no_footprint)
    monkeypatch.setattr(bench.imagemod, "build", lambda *a, **k: None)

    report = bench.run_benchmark(bench.BenchOptions(arch="amd64", k0s_binary=Path("/k0s"), runs=2), lambda _: None)
    assert report["errors"] == ["disk and memory of the 3 nodes: no /proc"]
    assert (report["up1_s"], report["up3_s"], report["rerun_s"], report["down3_s"]) == (40.0, 60.0, 2.5, 4.0)
    assert report["overhead_s"] == 11.0 and report["ratio_boot_k0slab_cloudinit"] == 0.33
    assert report["boot_samples_s"] == {"debian-12": [10.0, 10.0], "debian-12-cloudinit": [30.0, 30.0]}
    assert report["disk_per_node_mb"] is None
    assert (report["snapshot3_s"], report["revert3_s"], report["ratio_revert3_up3"]) == (1.0, 9.0, 0.15)
    assert report["snapshot_mb_by_node"] == {"node1": 200.0, "node2": 100.0} and report["snapshot_mb_per_node"] == 150.0
    # The 3-node run's timeline outlives its lab.
    assert report["timeline_svg"] == str(tmp_path / "out" / "timeline.svg")
    assert (tmp_path / "out" / "timeline.svg").read_text() == "<svg/>\n"
    ups = [c for c in commands if c[0] == "lab.up"]
    assert all(c[-2:] == ("--k0s-binary", "/k0s") for c in ups)
    assert {c[4] for c in ups} <= set(downed)
    assert sorted(name.split("-", 1)[1] for name in set(downed)) == ["c1", "c2", "k1", "k2", "up1", "up3"]


def test_busiest_node_counts_come_from_the_remote_tally():
    remote = {"node1": {"push": {"connections": 1, "commands": 3, "transfers": 0},
                        "total": {"connections": 4, "commands": 9, "transfers": 1}},
              "node2": {"total": {"connections": 3, "commands": 11, "transfers": 0}}}
    assert bench.busiest(remote, "connections") == 4 and bench.busiest(remote, "commands") == 11
    assert bench.busiest({}, "commands") is None
