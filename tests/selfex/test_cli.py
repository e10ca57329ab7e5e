"""The ``selfex`` command: its delegated commands reach their modules, and the benches say where they run."""

import importlib

import pytest

from selfex import cli


@pytest.mark.parametrize("target", sorted(cli.BENCHES))
def test_every_bench_command_is_a_module_of_the_bench_package_with_a_main(target):
    module_name = cli.BENCHES[target]
    assert module_name.startswith("bench.")
    assert callable(importlib.import_module(module_name).main)


def test_without_the_bench_package_the_bench_commands_say_so_instead_of_a_traceback(monkeypatch, capsys):
    def no_bench(name: str):
        raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}", name="bench")

    monkeypatch.setattr(cli.importlib, "import_module", no_bench)

    assert cli.main(["bench", "http", "--help"]) == 2
    assert "run them from a clone" in capsys.readouterr().err
