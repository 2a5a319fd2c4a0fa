"""The tree digest in every report's environment: it names the files a run used, whatever HEAD says."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from muse.train.runlog import environment, git_commit, tree_digest

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("x = 1\n")
    (root / ".gitignore").write_text("runs/\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "one")
    return root


def test_the_digest_follows_the_files_git_would_carry(repo, tmp_path):
    clean = tree_digest(repo)
    (repo / "runs").mkdir()
    (repo / "runs" / "out.json").write_text("{}")  # ignored: not part of the tree
    assert tree_digest(repo) == clean
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    edited = tree_digest(repo)
    assert edited != clean and git_commit(repo)["dirty"] is True
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    assert tree_digest(repo) == clean
    (repo / "pkg" / "b.py").write_text("y = 1\n")  # untracked, not ignored: a copy of the tree carries it
    assert tree_digest(repo) != clean
    (repo / "pkg" / "b.py").unlink()
    (repo / "pkg" / "a.py").rename(repo / "pkg" / "c.py")  # same bytes under another name
    assert tree_digest(repo) != clean
    (repo / "pkg" / "c.py").rename(repo / "pkg" / "a.py")
    _git(tmp_path, "clone", "-q", str(repo), "copy")
    assert tree_digest(tmp_path / "copy") == clean  # a clean checkout of the commit names the same tree
    info = git_commit(tmp_path / "copy")
    assert info["dirty"] is False and info["tree_sha256"] == clean and len(info["commit"]) == 40


def test_outside_a_work_tree_git_commit_reports_unknown(tmp_path):
    assert git_commit(tmp_path) == {"commit": "unknown", "dirty": None, "tree_sha256": None}
    with pytest.raises(subprocess.SubprocessError):
        tree_digest(tmp_path)


def test_reports_carry_the_digest():
    import torch

    git = environment(torch.device("cpu"))["git"]
    assert set(git) == {"commit", "dirty", "tree_sha256"}
