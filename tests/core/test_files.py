"""Output files land safely: written atomically onto regular files only; symlinks followed
(the link survives), special files and folders refused with a message and left alone. All in
temporary folders: no real device is ever a target."""

from __future__ import annotations

import os
import stat

import pytest
import torch

import featviz
from featviz.core.files import write_atomic, write_text
from featviz.errors import FeatvizError

IMG = torch.rand(3, 8, 8)


def test_a_symlink_keeps_its_link_and_its_target_gets_the_file(tmp_path):
    target = tmp_path / "real" / "target.png"
    target.parent.mkdir()
    link = tmp_path / "link.png"
    link.symlink_to(target)
    featviz.images.save(IMG, link)
    assert link.is_symlink() and target.is_file()
    assert featviz.images.load(target).shape == (1, 3, 8, 8)


def test_a_fifo_is_refused_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(FeatvizError, match=r"pipe\.png: it is a FIFO"):
        featviz.images.save(IMG, fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_device_node_is_refused_and_left_alone(tmp_path):
    node = tmp_path / "null.png"
    try:  # a character device of our own, in the temporary folder (root only)
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as err:
        pytest.skip(f"cannot make a device node here: {err}")
    with pytest.raises(FeatvizError, match="it is a character device"):
        write_text(node, "x")
    assert stat.S_ISCHR(os.stat(node).st_mode)


def test_a_folder_or_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(FeatvizError, match="it is a folder"):
        featviz.images.save(IMG, tmp_path / "dir.png")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FeatvizError, match="a file stands where its folder should be .*afile"):
        featviz.images.save(IMG, tmp_path / "afile" / "x.png")


def test_an_unknown_image_suffix_names_the_ones_that_work(tmp_path):
    with pytest.raises(FeatvizError, match=r"'\.txt' is not an image format; use one of \.png"):
        featviz.images.save(IMG, tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomic(path, broken)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "keep.txt"]
    write_text(path, "new")
    assert path.read_text() == "new"


@pytest.fixture
def umask():
    """Set the process's umask for one test (``umask(0o077)``); the old one comes back."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_the_mode_open_gives(tmp_path, umask, mask, expected):
    """Not mkstemp's 0600: a page or image copied to a web server must stay readable there."""
    umask(mask)
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    write_text(tmp_path / "page.html", "<p>")
    featviz.images.save(IMG, tmp_path / "picture.png")
    assert _mode(tmp_path / "plain.txt") == expected
    assert _mode(tmp_path / "page.html") == expected
    assert _mode(tmp_path / "picture.png") == expected


def test_a_replaced_file_keeps_its_own_mode(tmp_path, umask):
    path = tmp_path / "shared.html"
    path.write_text("old")
    path.chmod(0o640)
    write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o640
    umask(0o077)  # the file's own mode wins over the umask too
    path.chmod(0o664)
    featviz.images.save(IMG, tmp_path / "shared.png")
    (tmp_path / "shared.png").chmod(0o664)
    featviz.images.save(IMG, tmp_path / "shared.png")
    write_text(path, "newer")
    assert _mode(path) == 0o664 and _mode(tmp_path / "shared.png") == 0o664


def test_a_symlinks_target_keeps_its_mode(tmp_path, umask):
    target = tmp_path / "target.txt"
    target.write_text("old")
    target.chmod(0o604)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new" and _mode(target) == 0o604


@pytest.mark.parametrize("mask, expected", [(0o022, 0o755), (0o077, 0o700)])
def test_folders_are_made_with_plain_mkdir_modes(tmp_path, umask, mask, expected):
    umask(mask)
    write_text(tmp_path / "site" / "layer" / "index.html", "<p>")
    assert _mode(tmp_path / "site") == expected and _mode(tmp_path / "site" / "layer") == expected
    assert _mode(tmp_path / "site" / "layer" / "index.html") == expected & 0o666


def test_temporary_names_never_reuse_a_file_in_the_way(tmp_path, monkeypatch):
    """A name already taken (another writer's temporary file, a planted symlink) is skipped,
    never opened."""
    import secrets

    draws = iter(["taken", "taken", "free"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(draws))
    decoy = tmp_path / "elsewhere.txt"
    decoy.write_text("untouched")
    (tmp_path / ".out.txt.taken.tmp").symlink_to(decoy)
    write_text(tmp_path / "out.txt", "made")
    assert (tmp_path / "out.txt").read_text() == "made" and decoy.read_text() == "untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.txt.taken.tmp", "elsewhere.txt",
                                                         "out.txt"]
