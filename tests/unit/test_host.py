"""Node discovery on one host (supervisor/control/client/host.py): names, the root, what counts as a node."""

from __future__ import annotations

import pytest

from supervisor.control.client import host


def make_node(root, name, filename="journal.jsonl"):
    directory = root / name
    directory.mkdir(parents=True)
    (directory / filename).write_text("")
    return directory


def test_the_root_is_the_argument_then_the_environment_then_var_lib(monkeypatch, tmp_path):
    monkeypatch.delenv(host.ROOT_ENV, raising=False)
    assert host.host_root() == host.DEFAULT_ROOT == host.DEFAULT_ROOT.__class__("/var/lib/nsup")
    monkeypatch.setenv(host.ROOT_ENV, str(tmp_path))
    assert host.host_root() == tmp_path
    assert host.state_dir("alpha") == tmp_path / "alpha"
    assert host.host_root(tmp_path / "x") == tmp_path / "x"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "all", "x\0y"])
def test_a_name_that_is_not_one_path_component_is_refused(name, tmp_path):
    with pytest.raises(ValueError, match="not a node name"):
        host.state_dir(name, tmp_path)


def test_a_node_is_a_directory_with_any_of_nsups_files(tmp_path):
    for name, filename in (("beta", "endpoints.json"), ("alpha", "state.json"), ("gamma", "journal.jsonl")):
        make_node(tmp_path, name, filename)
    (tmp_path / "empty").mkdir()
    (tmp_path / "lost+found").mkdir()
    (tmp_path / "stray.txt").write_text("")
    assert host.nodes(tmp_path) == {n: tmp_path / n for n in ("alpha", "beta", "gamma")}
    assert list(host.nodes(tmp_path)) == ["alpha", "beta", "gamma"]  # sorted, as supervisorctl lists


def test_no_root_means_no_nodes(tmp_path):
    assert host.nodes(tmp_path / "missing") == {}


def test_a_directory_that_cannot_be_looked_into_is_listed(tmp_path, monkeypatch):
    make_node(tmp_path, "mine")
    (tmp_path / "theirs").mkdir()
    real_exists = host.Path.exists

    def exists(path):
        if path.parent.name == "theirs":
            raise PermissionError(13, "Permission denied")  # what a 0700 dir of user nsup says to an operator
        return real_exists(path)

    monkeypatch.setattr(host.Path, "exists", exists)
    assert list(host.nodes(tmp_path)) == ["mine", "theirs"]


def test_select_by_name_keeps_the_order_named_and_all_means_every_node(tmp_path):
    for name in ("a", "b", "c"):
        make_node(tmp_path, name)
    assert list(host.select(["c", "a"], tmp_path)) == ["c", "a"]
    assert list(host.select(["all"], tmp_path)) == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"no nsup node 'zed' under .* \(nodes there: a, b, c\)"):
        host.select(["a", "zed"], tmp_path)
    with pytest.raises(ValueError, match="no nsup node under"):
        host.select(["all"], tmp_path / "nowhere")
