"""Configs ship with the package: an installed user runs `semiearth-train --config potsdam`.

The slow test builds the wheel (CPU extension only), installs it into a fresh venv with no access to
this checkout, and resolves configs by name there. The venv takes the other dependencies (torch,
pydantic, ...) from this environment's site-packages through PYTHONPATH, which does not process the
editable install's .pth file, so `semiearth` can only come from the wheel.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import sysconfig

import pytest

from semiearth.cli.train import main as train_main
from semiearth.config import ConfigError, load_config
from semiearth.configs import CONFIG_DIR, config_path, packaged_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_names_resolve_to_packaged_files():
    names = packaged_configs()
    assert {"demo", "potsdam", "loveda", "vaihingen", "openearthmap", "folder"} <= set(names)
    assert config_path("potsdam") == os.path.join(CONFIG_DIR, "potsdam.yaml")
    assert config_path("potsdam.yaml") == os.path.join(CONFIG_DIR, "potsdam.yaml")
    assert load_config("potsdam").data.name == "potsdam"


def test_an_existing_file_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "potsdam").write_text("out_dir: mine\n")
    assert load_config("potsdam").out_dir == "mine"


def test_unknown_name_lists_the_packaged_configs():
    with pytest.raises(ConfigError) as err:
        load_config("potsdamm")
    assert "potsdamm" in str(err.value) and "potsdam" in str(err.value) and "--list-configs" in str(err.value)


def test_list_configs(capsys):
    assert train_main(["--list-configs"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "ISPRS Potsdam" in out


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_resolves_configs_by_name(tmp_path):
    env = {**os.environ, "FORCE_CUDA": "0", "MAX_JOBS": "2"}
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(tmp_path), ROOT]
    subprocess.run(build, check=True, env=env, capture_output=True)
    (wheel,) = glob.glob(str(tmp_path / "semiearth-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", site, wheel]
    subprocess.run(install, check=True, capture_output=True)

    run_env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    check = (
        "import torch, semiearth, semiearth._C; from semiearth.config import load_config; from semiearth.configs import config_path; "
        "cfg = load_config('potsdam'); print(semiearth.__file__); print(config_path('demo')); print(cfg.data.name); "
        "print(load_config('repro/potsdam_1').model.name)"
    )
    out = subprocess.run([py, "-P", "-c", check], cwd=tmp_path, env=run_env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    package, demo, name, repro_model = out.stdout.split()
    assert package.startswith(site) and demo.startswith(site) and name == "potsdam" and repro_model == "dinov2_dpt"
    listed = subprocess.run(
        [py, "-P", "-m", "semiearth.cli.train", "--list-configs"],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0 and "potsdam" in listed.stdout, listed.stderr
