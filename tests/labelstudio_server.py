"""A real Label Studio server for the tests, from the repository's .venv-labelstudio (standard library only).

`make test` installs Label Studio into .venv-labelstudio (it pins packages that clash with ours) and runs
`python tests/labelstudio_server.py --template` once: Label Studio's database is migrated and two raters
are created (minutes of Django migrations), then each test session copies that template into a temp dir
and starts a server on a free loopback port (about 20 s). Without the template the fixture builds it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LS_VENV = REPO / ".venv-labelstudio"
LS_BIN = LS_VENV / "bin" / "label-studio"
LS_VERSION = "1.23.2"
TEMPLATE = LS_VENV / "test-template"
# (e-mail, password, legacy API token) of the two raters; the first is the project owner.
RATERS = (("rater1@example.org", "Rater-one-pass-1", "wit-test-token-rater-1"),
          ("rater2@example.org", "Rater-two-pass-2", "wit-test-token-rater-2"))


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "LABEL_STUDIO"))}
    env.update({"LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "COLLECT_ANALYTICS": "false",
                "LATEST_VERSION_CHECK": "false", "LOG_LEVEL": "WARNING", "DEBUG": "false"})
    return env


def build_template(template: Path = TEMPLATE, log=sys.stderr) -> Path:
    """Migrate a fresh Label Studio database and add the raters; written to a temp dir, then renamed."""
    if (template / "label_studio.sqlite3").is_file():
        return template
    work = template.with_name(template.name + f".tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for n, (email, password, token) in enumerate(RATERS):
        command = [str(LS_BIN), "init", "--username", email, "--password", password, "--user-token", token,
                   "--data-dir", str(work), "--quiet"] + (["--enable-legacy-api-token"] if n == 0 else [])
        subprocess.run(command, env=_env(work), cwd=work, check=True, stdout=log, stderr=log, timeout=900)
    os.replace(work, template)
    return template


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LabelStudioServer:
    """A running Label Studio; `stop()` ends the process group it was started in, nothing else."""

    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the group of the server we started (start_new_session)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def start(work: Path, template: Path = TEMPLATE, timeout: float = 240.0) -> LabelStudioServer:
    """Copy the template into `work` and start Label Studio on a free loopback port; wait for /health."""
    data = work / "data"
    shutil.copytree(build_template(template), data)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / "label-studio.log"
    command = [str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
               "--host", url, "--data-dir", str(data), "--enable-legacy-api-token"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=_env(data), cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = LabelStudioServer(url, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Label Studio exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"Label Studio did not answer /health within {timeout:.0f} s: {log.read_text()[-2000:]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--template", action="store_true", help="build .venv-labelstudio/test-template")
    if parser.parse_args().template:
        print(build_template())
