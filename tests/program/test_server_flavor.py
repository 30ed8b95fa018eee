"""The server flavors through the whole program under mocks: the image, the
NSG rules, the cloud-init and the run command Azure would receive, checked
against the compute API's own model where one exists."""

from __future__ import annotations

import base64

import pytest
import yaml
from azure.mgmt.compute import models as compute_models

from components import cloudinit
from config import load_settings
from tests.conftest import PUBLIC_KEY, raw_config
from tools import plan
from tools.offline import ProgramRun, run_program, unwrap_secret

VM = "azure-native:compute:VirtualMachine"
RUN_COMMAND = "azure-native:compute:VirtualMachineRunCommandByVirtualMachine"


def apply_farm(run):
    """The obs-farm-apply-farm run command (the scaler has its own)."""
    return next(r for r in run.of_type(RUN_COMMAND) if r.name == "obs-backend-apply")


NSG = "azure-native:network:NetworkSecurityGroup"
ADMINS = ["192.0.2.0/24"]


def server_rules(run: ProgramRun) -> dict[str, dict]:
    nsg = next(n for n in run.of_type(NSG) if n.name.endswith("-server-nsg"))
    return {r["name"]: r for r in nsg.inputs["securityRules"]}


def custom_data(run: ProgramRun) -> str:
    return base64.b64decode(run.one(VM).inputs["osProfile"]["customData"]).decode()


@pytest.fixture(scope="module")
def appliance_run() -> ProgramRun:
    return run_program("t", raw_config(adminCidrs=ADMINS))


@pytest.fixture(scope="module")
def backend_run() -> ProgramRun:
    return run_program("t", raw_config(adminCidrs=ADMINS, server={"flavor": "backend"}))


def test_appliance_is_the_default_on_opensuse_leap_15_6(appliance_run):
    image = appliance_run.one(VM).inputs["storageProfile"]["imageReference"]
    assert image == {
        "publisher": "SUSE",
        "offer": "opensuse-leap-15-6",
        "sku": "gen2",
        "version": "latest",
    }
    settings = load_settings(raw_config(adminCidrs=ADMINS))
    assert custom_data(appliance_run) == cloudinit.render_appliance_user_data(settings)


def test_backend_is_debian_with_todays_user_data(backend_run):
    image = backend_run.one(VM).inputs["storageProfile"]["imageReference"]
    assert (image["publisher"], image["offer"], image["sku"]) == ("Debian", "debian-12", "12-gen2")
    settings = load_settings(raw_config(adminCidrs=ADMINS, server={"flavor": "backend"}))
    assert custom_data(backend_run) == cloudinit.render_server_user_data(settings)


def test_appliance_opens_https_and_repositories_to_admins_only(appliance_run):
    rules = server_rules(appliance_run)
    for name, port in (("https-from-admins", "443"), ("obs-repositories-from-admins", "82")):
        rule = rules[name]
        assert rule["sourceAddressPrefixes"] == ADMINS, name
        assert rule["destinationPortRanges"] == [port], name
        assert rule["access"] == "Allow" and rule["direction"] == "Inbound"
    opened = {
        p
        for r in rules.values()
        if r["access"] == "Allow"
        for p in r.get("destinationPortRanges", [])
    }
    assert "82" in opened and "80" not in opened


def test_backend_has_no_repository_port(backend_run):
    rules = server_rules(backend_run)
    assert "obs-repositories-from-admins" not in rules
    assert not any("82" in r.get("destinationPortRanges", []) for r in rules.values())


def test_without_admin_ranges_nothing_reaches_the_web_ports():
    rules = server_rules(run_program("t", raw_config(adminCidrs=[])))
    assert not {"https-from-admins", "obs-repositories-from-admins"} & set(rules)


def test_supplied_certificate_travels_as_secret_protected_parameters(tls_pair):
    cert, key = tls_pair
    raw = raw_config(adminCidrs=ADMINS, tlsCertificate=cert, tlsPrivateKey=key)
    run = run_program("t", raw, secret_keys=["obs-farm:tlsPrivateKey"])
    command = apply_farm(run).inputs
    # Pulumi marks the whole list secret once a value in it is.
    secret, plain = unwrap_secret(command["protectedParameters"])
    assert secret, "protectedParameters is not a Pulumi secret"
    params = {p["name"]: p["value"] for p in plain}
    assert params == {"OBS_FARM_TLS_CERT": cert, "OBS_FARM_TLS_KEY": key}
    assert "parameters" not in command  # plain parameters are returned by Azure's API
    assert "PRIVATE KEY" not in command["source"]["script"]
    assert "PRIVATE KEY" not in custom_data(run) and "CERTIFICATE" not in custom_data(run)
    # Read back through Azure's own compute model of a run command.
    wire = compute_models.VirtualMachineRunCommand(
        {
            "location": command["location"],
            "properties": {"source": command["source"], "protectedParameters": plain},
        }
    )
    parsed = wire.properties.protected_parameters
    assert [(p.name, p.value) for p in parsed] == sorted(params.items())
    assert all(isinstance(p, compute_models.RunCommandInputParameter) for p in parsed)


def test_no_certificate_no_protected_parameters(appliance_run):
    assert "protectedParameters" not in apply_farm(appliance_run).inputs


def test_flavor_changes_only_the_server(appliance_run, backend_run):
    # Switching flavor replaces the VM (image, custom data); the data disk and
    # the workers are the same resources with the same inputs.
    for type_ in ("azure-native:compute:Disk", "azure-native:compute:VirtualMachineScaleSet"):
        assert appliance_run.one(type_).inputs == backend_run.one(type_).inputs, type_


def write_stack(tmp_path, server: dict) -> str:
    config = {
        "obs-farm:sshPublicKey": PUBLIC_KEY,
        "obs-farm:adminCidrs": ADMINS,
        "obs-farm:server": server,
    }
    (tmp_path / "Pulumi.flavor.yaml").write_text(yaml.safe_dump({"config": config}))
    return "flavor"


@pytest.mark.parametrize(
    ("server", "shown", "absent"),
    [
        (
            {},
            ["flavor appliance:", "image SUSE:opensuse-leap-15-6:gen2:latest", "http (82)"],
            "Debian",
        ),
        (
            {"flavor": "backend"},
            ["flavor backend:", "image Debian:debian-12:12-gen2:latest"],
            "SUSE",
        ),
    ],
    ids=["appliance", "backend"],
)
def test_plan_shows_the_flavor_and_image(tmp_path, capsys, server, shown, absent):
    name = write_stack(tmp_path, server)
    code = plan.main([name, "--stack-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    for text in shown:
        assert text in out
    server_block = out.split("Server:", 1)[1].split("Resources", 1)[0]
    assert absent not in server_block


def test_plan_runs_with_an_encrypted_key_and_shows_the_supplied_certificate(
    tmp_path, capsys, tls_pair
):
    cert, _ = tls_pair
    name = write_stack(tmp_path, {})
    stack = tmp_path / f"Pulumi.{name}.yaml"
    doc = yaml.safe_load(stack.read_text())
    doc["config"]["obs-farm:tlsCertificate"] = cert
    # What `pulumi config set --secret` writes: ciphertext the plan cannot read.
    doc["config"]["obs-farm:tlsPrivateKey"] = {"secure": "v1:AAAAAAAAAAAAAAAA:ciphertext"}
    stack.write_text(yaml.safe_dump(doc))
    code = plan.main([name, "--stack-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "HTTPS certificate: the stack's certificate" in out.out
    script = (tmp_path / "out" / "obs-backend-apply.sh").read_text()
    assert "PRIVATE KEY" not in script and "CERTIFICATE" not in script


def test_plan_still_refuses_other_encrypted_settings(tmp_path, capsys):
    name = write_stack(tmp_path, {})
    stack = tmp_path / f"Pulumi.{name}.yaml"
    doc = yaml.safe_load(stack.read_text())
    doc["config"]["obs-farm:sshPublicKey"] = {"secure": "v1:AAAAAAAAAAAAAAAA:ciphertext"}
    stack.write_text(yaml.safe_dump(doc))
    code = plan.main([name, "--stack-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "obs-farm:sshPublicKey is an encrypted secret" in capsys.readouterr().err
