"""The shipped GitHub Actions workflow, run step by step as a runner would (edgeslm.devtools.workflow), in a
model repository that holds no edgeslm source: installed from a path as users install it from git, its build
store cached between runs, the lab board reached over real SSH with the key and known_hosts from secrets, an
emulated Pi profiled and kept out of the gate, the main branch's baseline saved and a pull request gated on it."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import make_model, write_recipe

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "edgeslm-profile.yml"


def _fresh_python(tmp_path: Path) -> Path:
    """A new environment whose pip sees this one's packages (torch & co. through a .pth file), so installing
    edgeslm there installs edgeslm only."""
    env_dir = tmp_path / "runner-python"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(env_dir)], check=True)
    site_dir = next((env_dir / "lib").glob("python3*/site-packages"))
    (site_dir / "host-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return env_dir / "bin"


def _run(tmp_path, workspace, name, event, ref, home, extra=(), artifacts_from=None):
    state = tmp_path / f"state-{name}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("EDGESLM_", "PYTHON", "PIP_"))},
           "HOME": str(home), "EDGESLM_NATIVE": "skip", "PIP_NO_BUILD_ISOLATION": "1",
           "EDGESLM_EMULATE_CACHE": str(Path.home() / ".cache" / "edgeslm" / "emulate")}
    argv = [sys.executable, "-m", "edgeslm.devtools.workflow", str(WORKFLOW), "--job", "profile",
            "--workspace", str(workspace), "--state", str(state), "--event", event, "--ref", ref,
            "--python-bin", str(tmp_path / "runner-python" / "bin"),
            "--env", f"EDGESLM=edgeslm[build] @ file://{ROOT}", "--env", "PIP_EXTRA_INDEX_URL=",
            "--env", "PROFILE_ITERS=20", "--env", "RECIPE=recipes/model.toml", *extra]
    if artifacts_from:
        argv += ["--artifacts-from", str(artifacts_from)]
    r = subprocess.run(argv, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                       timeout=1800)
    return r, state


def test_the_shipped_workflow_runs_in_a_model_repository(tmp_path, sshd):
    repo = tmp_path / "model-repo"
    make_model("bert", "embedding", repo / "models" / "tiny")
    (repo / "recipes").mkdir()
    write_recipe(repo / "recipes" / "model.toml", Path("../models/tiny"), "embedding", name="mymodel",
                 extra='[[passes]]\ntype = "quantize"\nmethod = "dynamic-int8"\n',
                 targets=("host", "rpi4", "rpi5", "x86-avx2", "x86-avx512-vnni"))
    _fresh_python(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    lab = (f'[devices.lab-pi]\nhost = "127.0.0.1"\nport = {sshd.port}\nuser = "root"\n'
           f'identity_file = "~/.ssh/edgeslm_key"\nknown_hosts = "~/.ssh/edgeslm_known_hosts"\ntarget = "host"\n'
           f'workdir = "{tmp_path / "lab-workdir"}"\npython = "{sys.executable}"\ngroups = ["lab"]\n')
    secrets = ["--var", f"EDGESLM_DEVICES={lab}", "--secret", f"EDGESLM_SSH_KEY={Path(sshd.client_key).read_text()}",
               "--secret", f"EDGESLM_KNOWN_HOSTS={sshd.known_hosts_line()}"]

    main_run, main_state = _run(tmp_path, repo, "main", "push", "refs/heads/main", home, secrets)
    log = main_run.stdout + main_run.stderr
    assert main_run.returncode == 0, log[-6000:]
    assert "::step skipped:: Fetch the main branch's baseline" in log
    assert (main_state / "artifacts" / "edgeslm-baseline" / ".edgeslm-baseline.json").exists()
    assert (main_state / "artifacts" / "edgeslm-report" / "report.html").exists()
    assert (main_state / "artifacts" / "edgeslm-report" / "report.xml").read_text().startswith("<?xml")
    assert "ok lab-pi: mymodel" in log and "emulated cortex-a72 device ci-pi4" in log
    assert (tmp_path / "lab-workdir" / "mymodel" / "current").is_symlink()
    # the key and known_hosts landed only in the runner's ~/.ssh, the key private to its user
    assert oct((home / ".ssh" / "edgeslm_key").stat().st_mode & 0o777) == "0o600"
    summary = (main_state / "summary.md").read_text()
    assert "## Summary" in summary and "| local |" in summary and "| lab-pi |" in summary and "ci-pi4" in summary
    assert "BEGIN OPENSSH PRIVATE KEY" not in log + summary
    cached = [p for p in (main_state / "cache").glob("edgeslm-builds-*/0/*") if (p / "manifest.json").exists()]
    assert len(cached) == 2  # five targets, two distinct sets of files (x86 without VNNI stores u8 weights)

    shutil.rmtree(home / ".cache" / "edgeslm" / "builds")  # a new runner: the store comes from the cache
    pr_run, pr_state = _run(tmp_path, repo, "pr", "pull_request", "refs/pull/1/merge", home, secrets,
                            artifacts_from=main_state / "artifacts")
    log = pr_run.stdout + pr_run.stderr
    assert pr_run.returncode == 0, log[-6000:]
    assert "taken from the cache" in log or "cached" in log
    summary = (pr_state / "summary.md").read_text()
    assert "Gate: passed" in summary and "limits: latency +10%" in summary
    assert "not judged: the current and baseline ran on an emulated device" in summary
    assert "::step skipped:: Keep this run as the new baseline (main only)" in log
