"""The README's command lines work as written: `./engine.sh ...` parses, and runs anywhere."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from engine.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
WRAPPER = "./engine.sh"
# Upper-case words stand for the reader's own values.
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$")


def code_lines(markdown: str) -> list[str]:
    """Every line of a fenced code block, and every inline code span outside blocks."""
    lines, outside, fenced = [], [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            lines.append(line.strip())
        else:
            outside.append(line)
    spans = re.findall(r"`([^`\n]+)`", "\n".join(outside))
    return lines + [span.strip() for span in spans]


def engine_commands(markdown: str) -> list[list[str]]:
    """The arguments of each `./engine.sh ...` command (a bare mention of the script is not
    a command); a `# comment` after a command is dropped."""
    out = []
    for line in code_lines(markdown):
        if line.startswith(WRAPPER + " "):
            out.append(shlex.split(line, comments=True)[1:])
    return out


def test_the_readme_commands_parse(tmp_path: Path) -> None:
    commands = engine_commands(README.read_text(encoding="utf-8"))
    firsts = [args[0] for args in commands]
    assert "models" in firsts and "render" in firsts, commands  # the known lines were found
    parser = build_parser()
    for args in commands:
        args = [str(tmp_path) if PLACEHOLDER.match(a) else a for a in args]
        try:
            parsed = parser.parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"README: `{WRAPPER} {shlex.join(args)}` does not parse ({exc})")
        if parsed.command == "render":
            assert all(p.suffix in (".json", ".png") for p in parsed.recipes), args


def test_the_readme_has_no_bare_python_commands() -> None:
    """`python -m engine` and `python app.py` fail outside the venv and the repo root."""
    for line in code_lines(README.read_text(encoding="utf-8")):
        assert not re.match(r"python3? (-m engine|app\.py)", line), line


def test_the_parsers_own_lines_are_found() -> None:
    text = "```bash\n./engine.sh render a.json  # x\n```\n"
    text += "Try `./engine.sh models --tiny` (`./engine.sh` is the wrapper)."
    assert engine_commands(text) == [["render", "a.json"], ["models", "--tiny"]]


def stamped(requirements: str) -> bool:
    digest = hashlib.sha256((ROOT / requirements).read_bytes()).hexdigest()[:16]
    return (ROOT / ".venv" / f".installed-{requirements}-{digest}").is_file()


def test_the_wrapper_runs_from_another_folder(tmp_path: Path) -> None:
    """From any folder, with the person's relative paths read from where they are."""
    if not stamped("requirements.txt"):  # setup would run pip first: not in a test
        pytest.skip("the venv was not set up by scripts/setup.sh (run ./test.sh first)")
    (tmp_path / "mine" / "diffusion_models").mkdir(parents=True)
    (tmp_path / "engine").mkdir()  # a folder of the person's own must not shadow ours
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run(
        [str(ROOT / "engine.sh"), "models", "--models", "mine"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # It looked in ./mine of this folder: the subfolder that exists is not "missing".
    assert "No usable Flux weights yet" in done.stdout, done.stdout
    assert "Looked in: mine/diffusion_models; mine/unet (missing)" in done.stdout, done.stdout
    assert "Installing" not in done.stdout + done.stderr
