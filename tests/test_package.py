"""``edgeml package``: an offline device package, installed for real in a scratch prefix.

One x86-64 and one rpi4 package of the demo bundle are made once (wheels from PyPI through pip's cache); the
x86-64 one is installed by its own install.sh into a fresh venv with ``--no-index`` and scores the demo rows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeml.cli import main
from edgeml.package import PackageError, make_package
from edgeml.package.layout import write_tar
from edgeml.package.wheels import pip_platforms
from edgeml_runtime.settings import read_config, resolve_settings

WORKSTATION_RUNTIME = Path(sys.executable).with_name("edgeml-runtime")
AARCH64 = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")


def _clean_env(**extra) -> dict:
    """This machine's environment without its pip settings (a device has none of them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def x86_package(demo_bundle, tmp_path_factory):
    made = make_package(demo_bundle, "x86-64", tmp_path_factory.mktemp("pkg") / "demo-x86-64", tar=True)
    yield made
    made.archive.unlink()  # conftest's session check takes every .tar.gz holding a manifest.json for a bundle


@pytest.fixture(scope="module")
def rpi4_package(demo_bundle, tmp_path_factory):
    return make_package(demo_bundle, None, tmp_path_factory.mktemp("pkg") / "demo-rpi4")  # the bundle's own target


def test_the_target_defaults_to_the_bundles_and_another_processor_is_noted(x86_package, rpi4_package):
    assert rpi4_package.notes == () and any("aarch64" in w for w in rpi4_package.wheels)
    (note,) = x86_package.notes  # the demo bundle was built for rpi4
    assert note.startswith("the bundle was built for rpi4 (aarch64), the package is for x86-64 (x86_64)")
    assert "--target x86-64" in note


@pytest.fixture(scope="module")
def installed(x86_package, tmp_path_factory):
    """The x86-64 package installed by its install.sh into a scratch prefix, systemd skipped."""
    root = tmp_path_factory.mktemp("device")
    dirs = {"prefix": root / "opt", "confdir": root / "etc", "unitdir": root / "units"}
    args = [a for k, v in dirs.items() for a in (f"--{k}", str(v))]
    done = subprocess.run(["sh", str(x86_package.folder / "install.sh"), *args, "--no-systemd"], capture_output=True,
                          text=True, env=_clean_env(PYTHON=sys.executable), timeout=300)
    assert done.returncode == 0, done.stderr
    return dict(dirs, root=root, stdout=done.stdout, package=x86_package)


def test_the_package_holds_the_wheels_the_bundle_and_the_service(x86_package, demo_bundle):
    folder = x86_package.folder
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["README.txt", "bundle", "edgeml-runtime-serve.service", "edgeml-runtime.service", "install.sh",
                     "runtime.toml", "uninstall.sh", "wheels"]
    # every file of the bundle but its build report (for people on the workstation; no device reads it)
    assert sorted(p.name for p in (folder / "bundle").iterdir()) == sorted(
        p.name for p in demo_bundle.iterdir() if p.name not in ("report.html", "report.json"))
    assert (folder / "bundle" / "manifest.json").read_bytes() == (demo_bundle / "manifest.json").read_bytes()
    wheels = x86_package.wheels
    assert any(w.startswith("edgeml_runtime-") for w in wheels)
    assert any(re.match(r"onnxruntime-1\.(1[7-9]|[2-9]\d)\.", w) for w in wheels), wheels
    assert any(w.startswith("paho_mqtt-") for w in wheels)
    # the demo bundle has a TFLite artifact and x86-64 runs TFLite: LiteRT comes along
    assert x86_package.requirement == "edgeml-runtime[onnx,mqtt,ota,tflite]"
    assert any(w.startswith("ai_edge_litert-") for w in wheels)
    assert os.access(folder / "install.sh", os.X_OK) and os.access(folder / "uninstall.sh", os.X_OK)
    assert "sudo ./install.sh" in (folder / "README.txt").read_text()


def test_installed_offline_scores_byte_for_byte_as_the_workstation(installed, demo_bundle, demo_rows):
    venv_runtime = installed["prefix"] / "venv" / "bin" / "edgeml-runtime"
    where = subprocess.run([str(venv_runtime.with_name("python")), "-c",
                            "import edgeml_runtime, onnxruntime; print(edgeml_runtime.__file__)"],
                           capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(installed["prefix"] / "venv")), "the runtime is the installed wheel's"
    device = subprocess.run([str(venv_runtime), "score", str(installed["prefix"] / "bundle"), "--input",
                             str(demo_rows)], capture_output=True, env=_clean_env(), timeout=120)
    host = subprocess.run([str(WORKSTATION_RUNTIME), "score", str(demo_bundle), "--input", str(demo_rows)],
                          capture_output=True, timeout=120)
    assert device.returncode == 0, device.stderr.decode()
    assert host.returncode == 0, host.stderr.decode()
    assert len(device.stdout.splitlines()) == 1 + 50  # a header, then the rows
    assert device.stdout == host.stdout


def test_install_writes_the_config_template_and_the_unit_for_its_prefix(installed):
    config = installed["confdir"] / "runtime.toml"
    assert config.read_text() == (installed["package"].folder / "runtime.toml").read_text()
    unit = (installed["unitdir"] / "edgeml-runtime.service").read_text()
    assert f"ExecStart={installed['prefix']}/venv/bin/edgeml-runtime run {installed['prefix']}/bundle " \
           f"--config {installed['confdir']}/runtime.toml" in unit
    assert f"LoadCredential=mqtt_password:{installed['confdir']}/mqtt_password" in unit
    assert "systemctl enable --now edgeml-runtime" in installed["stdout"]
    serve = (installed["unitdir"] / "edgeml-runtime-serve.service").read_text()
    assert f"ExecStart={installed['prefix']}/venv/bin/edgeml-runtime serve {installed['prefix']}/bundle " \
           f"--config {installed['confdir']}/runtime.toml" in serve
    assert f"LoadCredential=token:{installed['confdir']}/token" in serve
    assert "ExecReload=/bin/kill -HUP $MAINPID" in serve
    token = installed["confdir"] / "token"
    assert re.fullmatch(r"[0-9a-f]{64}\n", token.read_text()) and token.stat().st_mode & 0o777 == 0o600
    assert "systemctl enable --now edgeml-runtime-serve" in installed["stdout"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is missing: `make system-deps` installs it (Debian package systemd)")
def test_the_units_pass_systemd_analyze_verify(installed, tmp_path):
    for name in ("edgeml-runtime.service", "edgeml-runtime-serve.service"):
        unit = installed["unitdir"] / name
        done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert (done.returncode, done.stdout + done.stderr) == (0, ""), name
        for key in ("Type=notify", "WatchdogSec=30s", "Restart=on-failure", "ProtectSystem=strict", "DynamicUser=yes",
                    "StateDirectory=edgeml"):
            assert key in unit.read_text().splitlines()
    # verify is a real check: the package's own copy points at /opt/edgeml, which does not exist here
    shipped = tmp_path / "edgeml-runtime.service"
    shipped.write_text((installed["package"].folder / "edgeml-runtime.service").read_text())
    failed = subprocess.run(["systemd-analyze", "verify", str(shipped)], capture_output=True, text=True)
    assert failed.returncode != 0 and "/opt/edgeml/venv/bin/edgeml-runtime" in failed.stderr


def test_the_config_template_is_a_valid_run_table(x86_package):
    path = x86_package.folder / "runtime.toml"
    given = read_config(path)
    assert {"device_id", "fleet", "broker", "input_topic", "log_level"} <= set(given)
    text = path.read_text()
    assert set(tomllib.loads(text)) == {"run", "serve", "update"}
    settings = resolve_settings({}, config=path, environ={})
    assert (settings.device.device_id, settings.device.fleet) == ("CHANGE-ME", "CHANGE-ME")
    served = resolve_settings({}, config=path, environ={}, command="serve")
    assert (served.serve.host, served.serve.port, served.mqtt, served.device) == ("0.0.0.0", 8080, None, None)
    # every key the template sets or shows commented is one `edgeml-runtime run` knows
    shown = re.findall(r"^# ?([a-z_]+) = ", text, re.M)
    filled = path.with_name("filled.toml")
    try:
        filled.write_text("\n".join(re.sub(r"^# ?([a-z_]+ = )", r"\1", line) for line in text.splitlines()
                                    if not line.startswith("input_topic")))
        assert set(shown) <= set(read_config(filled)) | set(read_config(filled, "serve"))
        assert read_config(filled)["update_root_key"][0] == "/etc/edgeml/root.pub"  # run reads [update]
    finally:
        filled.unlink()


def test_the_rpi4_wheel_set_resolves_for_aarch64(rpi4_package, tmp_path):
    wheels = rpi4_package.folder / "wheels"
    args = [a for tag in pip_platforms(AARCH64) for a in ("--platform", tag)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--no-index", "--find-links", str(wheels),
         *args, "--python-version", "3.11", "--only-binary", ":all:", "--target", str(tmp_path / "x"),
         rpi4_package.requirement], capture_output=True, text=True, env=_clean_env(PIP_CONFIG_FILE=os.devnull))
    assert done.returncode == 0, done.stderr
    would = done.stdout.split("Would install", 1)[1]
    assert re.search(r"onnxruntime-1\.(1[7-9]|[2-9]\d)", would), would
    assert "edgeml-runtime-" in would and "paho-mqtt-" in would
    assert "litert" in would and rpi4_package.requirement == "edgeml-runtime[onnx,mqtt,ota,tflite]"
    assert any("aarch64" in w for w in rpi4_package.wheels)


def test_a_target_without_the_wheels_is_refused_naming_the_missing_one(demo_bundle, tmp_path):
    board = tmp_path / "armv7-board.toml"
    board.write_text('name = "armv7-board"\nextends = "rpi4"\narch = "armv7l"\nplatform_tags = ["linux_armv7l"]\n')
    out = tmp_path / "pkg"
    with pytest.raises(PackageError, match=r"no wheel of (onnxruntime>=1\.17|numpy\S*) for Python 3\.11 on "
                                           r"linux_armv7l \(target armv7-board\).*platform_tags"):
        make_package(demo_bundle, board, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["armv7-board.toml"], "nothing half-written is left"


def test_a_python_the_runtime_does_not_support_is_refused(demo_bundle, tmp_path):
    old = tmp_path / "old-pi.toml"
    old.write_text('name = "old-pi"\nextends = "rpi4"\npython = "3.7"\n')
    with pytest.raises(PackageError, match=r"python = '3.7', but edgeml-runtime requires Python >=3\.11"):
        make_package(demo_bundle, old, tmp_path / "pkg")


def test_a_microcontroller_is_refused_pointing_at_firmware(demo_bundle, tmp_path):
    result = CliRunner().invoke(main, ["package", str(demo_bundle), "--target", "cortex-m7", "-o",
                                       str(tmp_path / "pkg")])
    assert result.exit_code != 0
    assert "target cortex-m7 runs no Python" in result.output and "edgeml firmware" in result.output


def test_the_tar_is_reproducible_and_keeps_the_scripts_executable(x86_package, tmp_path):
    again = write_tar(x86_package.folder, tmp_path / "again.tar.gz")
    same = again.read_bytes() == x86_package.archive.read_bytes()
    again.unlink()
    assert same
    with tarfile.open(x86_package.archive) as t:
        members = {m.name: m for m in t.getmembers()}
    top = x86_package.folder.name
    assert members[f"{top}/install.sh"].mode == 0o755 and members[f"{top}/runtime.toml"].mode == 0o644
    assert {m.mtime for m in members.values()} == {0}
    assert f"{top}/bundle/manifest.json" in members


def test_an_existing_destination_is_refused(demo_bundle, x86_package):
    with pytest.raises(PackageError, match="already exists and is not an empty folder"):
        make_package(demo_bundle, "x86-64", x86_package.folder)


def test_the_cli_help_has_an_example():
    result = CliRunner().invoke(main, ["package", "--help"])
    assert result.exit_code == 0 and "edgeml package dist/sensors-1 --target rpi4" in result.output


def test_reinstall_keeps_the_config_and_uninstall_removes_what_install_put(installed):
    """Last: it uninstalls the shared install."""
    folder, conf = installed["package"].folder, installed["confdir"] / "runtime.toml"
    conf.write_text(conf.read_text().replace('device_id = "CHANGE-ME"', 'device_id = "pi-07"'))
    args = [a for k in ("prefix", "confdir", "unitdir") for a in (f"--{k}", str(installed[k]))]
    env = _clean_env(PYTHON=sys.executable)
    again = subprocess.run(["sh", str(folder / "install.sh"), *args, "--no-systemd"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert 'device_id = "pi-07"' in conf.read_text()
    assert (installed["confdir"] / "runtime.toml.new").read_text() == (folder / "runtime.toml").read_text()
    state = installed["root"] / "state"
    state.mkdir()
    gone = subprocess.run(["sh", str(folder / "uninstall.sh"), *args, "--statedir", str(state), "--no-systemd"],
                          capture_output=True, text=True, env=env)
    assert gone.returncode == 0, gone.stderr
    assert not installed["prefix"].exists() and not list(installed["unitdir"].iterdir())
    assert conf.exists() and state.exists()
    purged = subprocess.run(["sh", str(folder / "uninstall.sh"), *args, "--statedir", str(state), "--no-systemd",
                             "--purge"], capture_output=True, text=True, env=env)
    assert purged.returncode == 0, purged.stderr
    assert not installed["confdir"].exists() and not state.exists()


def test_the_cli_packages_a_bundle_archive_offline_from_wheels_of_a_folder(demo_bundle, x86_package, tmp_path):
    out, archive = tmp_path / "again", demo_bundle.with_name(demo_bundle.name + ".tar.gz")
    result = CliRunner().invoke(main, ["package", str(archive), "--target", "x86-64", "-o", str(out),
                                       "--wheels-from", str(x86_package.folder / "wheels")])
    assert result.exit_code == 0, result.output
    assert f"package  {out}/" in result.output and "install.sh" in result.output
    assert sorted(p.name for p in (out / "wheels").iterdir()) == list(x86_package.wheels)
    assert (out / "install.sh").read_bytes() == (x86_package.folder / "install.sh").read_bytes()
    assert (out / "bundle" / "manifest.json").read_bytes() == (demo_bundle / "manifest.json").read_bytes()
    report = {"report.html", "report.json"}  # for people: the build keeps it, a device package leaves it out
    assert report <= {p.name for p in demo_bundle.iterdir()}
    assert sorted(p.name for p in (out / "bundle").iterdir()) == sorted(p.name for p in demo_bundle.iterdir()
                                                                         if p.name not in report)
