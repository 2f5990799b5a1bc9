"""scripts/setup.sh stamps each requirements file: studio.sh after test.sh installs nothing.

The script runs on a copy of the project's layout in a temporary folder whose .venv/bin/python
is a stub that records its arguments, so no pip and no apt ever run here.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ("requirements.txt", "requirements-dev.txt")
INSTALLING = "Installing Python packages"


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@dataclass
class Project:
    root: Path
    log: Path

    def setup(self, *args: str, fail: bool = False) -> str:
        """Run the copied setup.sh; what it printed (stdout and stderr)."""
        tools = self.root / "tools"
        env = {**os.environ, "PYTHON": sys.executable, "PATH": f"{tools}:{os.environ['PATH']}"}
        env["FAKE_PIP_FAILS"] = "1" if fail else ""
        done = subprocess.run(
            ["bash", str(self.root / "scripts" / "setup.sh"), *args],
            cwd=self.root / "tools",  # the script finds its project from its own path
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode != 0) == fail, done.stdout + done.stderr
        return done.stdout + done.stderr

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stamps(self) -> list[str]:
        return sorted(p.name for p in (self.root / ".venv").glob(".installed-*"))


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root, log = tmp_path / "project", tmp_path / "pip-calls.log"
    script = (ROOT / "scripts" / "setup.sh").read_text()
    # Chromium counts as installed (a stub), so the apt branch never runs in a test.
    chromium = executable(root / "chromium", "#!/bin/sh\nexit 0\n")
    assert script.count("/usr/bin/chromium") == 1
    executable(root / "scripts" / "setup.sh", script.replace("/usr/bin/chromium", str(chromium)))
    for name in REQUIREMENTS:
        shutil.copy(ROOT / name, root / name)
    executable(
        root / ".venv" / "bin" / "python",
        f'#!/bin/sh\necho "$*" >> "{log}"\n[ -z "$FAKE_PIP_FAILS" ]\n',
    )
    for tool in ("apt-get", "sudo"):  # should the branch run after all: fail loudly
        executable(root / "tools" / tool, f"#!/bin/sh\necho 'ran {tool}' >&2\nexit 99\n")
    return Project(root, log)


def test_studio_after_test_installs_nothing(project: Project) -> None:
    assert INSTALLING in project.setup("--dev")  # test.sh on a fresh venv
    (call,) = project.calls()
    assert "-r requirements.txt -r requirements-dev.txt" in call
    assert [s.rsplit("-", 1)[0] for s in project.stamps()] == [
        ".installed-requirements-dev.txt",
        ".installed-requirements.txt",
    ]
    assert project.setup() == ""  # studio.sh: says nothing, runs nothing
    assert project.setup("--dev") == ""
    assert len(project.calls()) == 1


def test_test_after_studio_installs_only_the_dev_file(project: Project) -> None:
    assert INSTALLING in project.setup()
    assert project.calls()[-1].endswith("-r requirements.txt")
    assert INSTALLING in project.setup("--dev")
    # The runtime pins hold (as constraints) while the test tools install.
    assert project.calls()[-1].endswith("-c requirements.txt -r requirements-dev.txt")
    assert project.setup() == project.setup("--dev") == ""
    assert len(project.calls()) == 2


def test_a_changed_file_installs_again_and_keeps_one_stamp(project: Project) -> None:
    project.setup("--dev")
    with open(project.root / "requirements.txt", "a") as out:
        out.write("tqdm==4.67.1\n")
    assert INSTALLING in project.setup()
    assert project.calls()[-1].endswith("-r requirements.txt")
    assert len(project.stamps()) == 2  # the old content's stamp is gone
    assert project.setup("--dev") == ""


def test_a_failed_install_leaves_no_stamp(project: Project) -> None:
    project.setup("--dev", fail=True)
    assert project.stamps() == []
    assert INSTALLING in project.setup("--dev")  # tried again next time
