"""Run a GitHub Actions job here, step by step, the way a runner would: the shipped workflow is tested by
running it (tests/test_workflow.py), not by reading it.

    python -m edgeslm.devtools.workflow WORKFLOW.yml --job profile --workspace REPO --state DIR \\
        [--event pull_request] [--ref refs/heads/main] [--env K=V] [--var K=V] [--secret K=V] \\
        [--python-bin DIR] [--artifacts-from DIR]

`run:` steps run in bash (`-eo pipefail`, as GitHub's default shell) in the workspace with the workflow's,
job's and step's env, `${{ }}` expressions expanded (github.event_name/ref, env, vars, secrets, runner.os,
hashFiles, always(), success(), failure(), ==, !=, &&, ||, !), GITHUB_STEP_SUMMARY / GITHUB_ENV / GITHUB_PATH
honoured, `if:` and `continue-on-error:` as on GitHub. The actions the shipped workflow uses are played by
their effect: checkout (the workspace is the checkout), setup-python (--python-bin first in PATH), cache
(restore before, save after the job, under --state), upload-artifact (copied to <state>/artifacts/<name>),
download-artifact (from --artifacts-from/<name>). Anything else is an error: a step this cannot play is
never silently skipped.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


class Job:
    def __init__(self, doc: dict, job: str, workspace: Path, state: Path, event: str, ref: str, env: dict,
                 variables: dict, secrets: dict, python_bin: Path | None, artifacts_from: Path | None):
        self.doc, self.spec = doc, doc["jobs"][job]
        self.workspace, self.state = workspace.resolve(), state.resolve()
        self.event, self.ref = event, ref
        self.vars, self.secrets = variables, secrets
        self.python_bin, self.artifacts_from = python_bin, artifacts_from
        self.status = "success"
        self.saves: list[tuple[str, list[str]]] = []  # caches to save after the job
        self.env = {**os.environ, **{k: str(v) for k, v in (doc.get("env") or {}).items()},
                    **{k: str(v) for k, v in (self.spec.get("env") or {}).items()}, **env}
        self.state.mkdir(parents=True, exist_ok=True)
        for name in ("summary.md", "env", "path"):
            (self.state / name).write_text("")
        self.env.update(GITHUB_STEP_SUMMARY=str(self.state / "summary.md"), GITHUB_ENV=str(self.state / "env"),
                        GITHUB_PATH=str(self.state / "path"), GITHUB_EVENT_NAME=event, GITHUB_REF=ref,
                        GITHUB_WORKSPACE=str(self.workspace), CI="true", GITHUB_ACTIONS="true")
        if python_bin:
            self.env["PATH"] = f"{python_bin}{os.pathsep}{self.env['PATH']}"

    # ------------------------------------------------------------------ expressions
    def value(self, expr: str, env: dict):
        """An expression's value: the forms GitHub workflows use for conditions and interpolation."""
        expr = expr.strip()
        names = {"github.event_name": self.event, "github.ref": self.ref, "runner.os": "Linux"}
        py = re.sub(r"hashFiles\(([^)]*)\)", lambda m: repr(self.hash_files(m.group(1))), expr)
        py = re.sub(r"\b(always|success|failure|cancelled)\(\)",
                    lambda m: repr({"always": True, "success": self.status == "success",
                                    "failure": self.status == "failure", "cancelled": False}[m.group(1)]), py)
        py = re.sub(r"\b(github\.event_name|github\.ref|runner\.os)\b", lambda m: repr(names[m.group(1)]), py)
        py = re.sub(r"\b(env|vars|secrets)\.([A-Za-z_][A-Za-z0-9_]*)",
                    lambda m: repr({"env": env, "vars": self.vars, "secrets": self.secrets}[m.group(1)].get(m.group(2), "")),
                    py)
        py = py.replace("&&", " and ").replace("||", " or ")
        py = re.sub(r"!(?!=)", " not ", py)
        try:
            return eval(py, {"__builtins__": {}}, {})  # noqa: S307 - literals and operators only, after the above
        except Exception as exc:  # noqa: BLE001
            raise SystemExit(f"workflow: cannot evaluate ${{{{ {expr} }}}} ({exc})") from None

    def expand(self, text, env: dict):
        if not isinstance(text, str):
            return text
        return EXPR.sub(lambda m: str(self.value(m.group(1), env)), text)

    def condition(self, cond, env: dict) -> bool:
        if cond is None:
            return self.status == "success"
        cond = str(cond)
        m = EXPR.fullmatch(cond.strip())
        expr = m.group(1) if m else cond
        if not re.search(r"\b(always|success|failure|cancelled)\(\)", expr):
            expr = f"success() && ({expr})"
        return bool(self.value(expr, env))

    def hash_files(self, args: str) -> str:
        h = hashlib.sha256()
        for pattern in re.findall(r"'([^']*)'", args):
            for f in sorted(glob.glob(str(self.workspace / pattern), recursive=True)):
                if os.path.isfile(f):
                    h.update(Path(f).read_bytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ steps
    def run(self) -> int:
        for i, step in enumerate(self.spec["steps"]):
            env = {**self.env, **self._github_env()}
            env.update({k: self.expand(str(v), env) for k, v in (step.get("env") or {}).items()})
            name = step.get("name") or step.get("uses") or f"step {i}"
            if not self.condition(step.get("if"), env):
                print(f"::step skipped:: {name}", flush=True)
                continue
            print(f"::step:: {name}", flush=True)
            ok = self._use(step, env) if "uses" in step else self._shell(step["run"], env)
            if not ok:
                if step.get("continue-on-error"):
                    print(f"::step failed, continuing:: {name}", flush=True)
                else:
                    print(f"::step failed:: {name}", flush=True)
                    self.status = "failure"
        for key, paths in self.saves if self.status == "success" else ():  # as actions/cache: on success
            self._cache_save(key, paths)
        return 0 if self.status == "success" else 1

    def _github_env(self) -> dict:
        extra = {}
        for line in (self.state / "env").read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                extra[k] = v
        paths = [p for p in (self.state / "path").read_text().splitlines() if p]
        if paths:
            extra["PATH"] = os.pathsep.join([*reversed(paths), self.env["PATH"]])
        return extra

    def _shell(self, script: str, env: dict) -> bool:
        script = self.expand(script, env)
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                              cwd=self.workspace, env=env).returncode == 0

    def _paths(self, text: str, env: dict) -> list[str]:
        return [os.path.expanduser(p.strip()) for p in self.expand(str(text), env).splitlines() if p.strip()]

    def _use(self, step: dict, env: dict) -> bool:
        action = step["uses"].split("@")[0]
        w = {k: self.expand(str(v), env) for k, v in (step.get("with") or {}).items()}
        if action == "actions/checkout":
            return True
        if action == "actions/setup-python":
            return self.python_bin is not None or shutil.which("python3", path=env["PATH"]) is not None
        if action == "actions/cache":
            key, paths = w["key"], self._paths(w["path"], env)
            found = self.state / "cache" / key
            if not found.exists():
                for prefix in (w.get("restore-keys") or "").splitlines():
                    hits = sorted((self.state / "cache").glob(glob.escape(prefix.strip()) + "*")) if prefix.strip() else []
                    if hits:
                        found = hits[-1]
                        break
            if found.exists():
                for i, p in enumerate(paths):
                    if (found / str(i)).exists():
                        shutil.copytree(found / str(i), p, dirs_exist_ok=True, symlinks=True)
            self.saves.append((key, paths))
            return True
        if action == "actions/upload-artifact":
            dest = self.state / "artifacts" / w["name"]
            dest.mkdir(parents=True, exist_ok=True)
            paths = [self.workspace / p for p in self._paths(w["path"], env)]
            if len(paths) == 1 and paths[0].is_dir():  # one folder: its contents are the artifact, as on GitHub
                shutil.copytree(paths[0], dest, dirs_exist_ok=True)
                return True
            for src in paths:
                if src.is_dir():
                    shutil.copytree(src, dest / src.name, dirs_exist_ok=True)
                elif src.exists():
                    shutil.copy2(src, dest / src.name)
            return True
        if action in ("actions/download-artifact", "dawidd6/action-download-artifact"):
            src = self.artifacts_from / w["name"] if self.artifacts_from else None
            if src is None or not src.is_dir():
                return False
            shutil.copytree(src, self.workspace / w.get("path", "."), dirs_exist_ok=True)
            return True
        raise SystemExit(f"workflow: this runner cannot play the action {step['uses']!r}")

    def _cache_save(self, key: str, paths: list[str]) -> None:
        dest = self.state / "cache" / key
        if dest.exists():
            return  # GitHub's caches are immutable per key
        for i, p in enumerate(paths):
            if os.path.isdir(p):
                shutil.copytree(p, dest / str(i), symlinks=True)
        dest.mkdir(parents=True, exist_ok=True)


def _pairs(items: list[str]) -> dict:
    return dict(item.split("=", 1) for item in items)


def main(argv=None) -> int:
    import yaml

    ap = argparse.ArgumentParser(prog="python -m edgeslm.devtools.workflow", description=__doc__.split("\n\n")[0])
    ap.add_argument("workflow", type=Path)
    ap.add_argument("--job", required=True)
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--state", type=Path, required=True, help="step summary, caches and artifacts of the run")
    ap.add_argument("--event", default="push")
    ap.add_argument("--ref", default="refs/heads/main")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--var", action="append", default=[])
    ap.add_argument("--secret", action="append", default=[])
    ap.add_argument("--python-bin", type=Path)
    ap.add_argument("--artifacts-from", type=Path, help="artifacts of an earlier run (its <state>/artifacts)")
    a = ap.parse_args(argv)
    doc = yaml.safe_load(a.workflow.read_text())
    return Job(doc, a.job, a.workspace, a.state, a.event, a.ref, _pairs(a.env), _pairs(a.var), _pairs(a.secret),
               a.python_bin, a.artifacts_from).run()


if __name__ == "__main__":
    sys.exit(main())
