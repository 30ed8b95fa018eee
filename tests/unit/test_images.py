"""Worker images (issue 9, cloud half): the `images` settings, which image each
pool boots, the Azure build script run for real against a stand-in `az`, and
the resource graph under Pulumi mocks for every example stack."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components import provision
from components.cloudinit import render_worker_user_data
from components.images import (
    AZURE_BUILD_SCRIPT,
    BUILD_RUNNER_ACTIONS,
    DEPROVISION_ARG,
    GALLERY_DISTRIBUTOR_ACTIONS,
    image_builder_component,
    pool_image,
    shell_customizer_lines,
)
from components.provision import PROVISION_SCRIPT_INSTALL_PATH, image_version
from components.topology import azure_worker_pool
from config import ConfigError, load_settings
from tests.conftest import raw_config
from tools.offline import read_stack_config, run_program

GALLERY_VERSION = (
    "/subscriptions/00000000-0000-4000-8000-000000000000/resourceGroups/images-rg/providers/"
    "Microsoft.Compute/galleries/shared_gallery/images/obs-worker-x64/versions/1.2.3"
)
AWS = {
    "mode": "hybrid",
    "aws:region": "eu-central-1",
    "graviton": {"instanceTypes": ["c7g.2xlarge"]},
}


def problems(**overrides) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_settings(raw_config(**overrides))
    return err.value.problems


# --- settings ---------------------------------------------------------------------------


def test_default_is_stock_debian():
    images = load_settings(raw_config()).images
    assert (images.bake, images.azure_image_id, images.aws_ami_id) == (False, "", "")


@pytest.mark.parametrize(
    "image_id",
    [
        GALLERY_VERSION,
        GALLERY_VERSION.rsplit("/versions/", 1)[0],
        "/subscriptions/00000000-0000-4000-8000-000000000000/resourceGroups/rg/providers/"
        "Microsoft.Compute/images/obs-worker",
    ],
)
def test_azure_image_ids_of_each_kind_pass(image_id):
    assert load_settings(raw_config(images={"azureImageId": image_id})).images.azure_image_id


@pytest.mark.parametrize(
    "image_id",
    [
        "Debian:debian-12:12-gen2:latest",
        GALLERY_VERSION.replace("/versions/1.2.3", "/versions/latest"),
        GALLERY_VERSION.replace("Microsoft.Compute/galleries", "Microsoft.Compute/disks"),
        "/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.Compute/images/x",
    ],
)
def test_other_azure_ids_are_refused_naming_the_setting(image_id):
    [message] = problems(images={"azureImageId": image_id})
    assert message.startswith("obs-farm:images.azureImageId must be the resource id of an Azure")
    assert repr(image_id) in message


@pytest.mark.parametrize("ami", ["ami-0123abcd", "ami-0123456789abcdef0"])
def test_amis_of_both_lengths_pass(ami):
    settings = load_settings(raw_config(**AWS, images={"awsAmiId": ami}))
    assert settings.images.aws_ami_id == ami


@pytest.mark.parametrize(
    "ami", ["ami-0123abc", "ami-0123456789ABCDEF0", "ami-0123456789abcdef", "i-0123abcd"]
)
def test_bad_amis_are_refused(ami):
    [message] = problems(**AWS, images={"awsAmiId": ami})
    assert message == (
        f"obs-farm:images.awsAmiId must be an AMI id, ami- and 8 or 17 lowercase hex digits; "
        f"got {ami!r}"
    )


def test_bake_must_be_a_bool_and_keys_are_known():
    assert problems(images={"bake": "yes"}) == [
        "obs-farm:images.bake must be true or false; got 'yes'"
    ]
    [message] = problems(images={"bakes": True})
    assert message.startswith("obs-farm:images.bakes is not a setting; did you mean 'bake'?")


def test_an_ami_without_an_aws_pool_is_refused():
    [message] = problems(images={"awsAmiId": "ami-0123abcd"})
    assert message.startswith("obs-farm:images.awsAmiId is set but obs-farm:mode is intel-only")


def test_an_azure_image_without_an_azure_pool_is_refused():
    [message] = problems(
        mode="native",
        architectures=["aarch64"],
        **{k: v for k, v in AWS.items() if k != "mode"},
        images={"azureImageId": GALLERY_VERSION},
    )
    assert message.startswith("obs-farm:images.azureImageId is set but the farm has no Azure")


def test_the_stacks_defaults():
    expected = {
        "dev": False,
        "apertis-eval": True,
        "hybrid": True,
        "native": True,
        "apertis-fast": True,
    }
    for stack, bake in expected.items():
        assert load_settings(read_stack_config(stack)).images.bake is bake, stack


# --- which image a pool boots -------------------------------------------------------------


def test_an_explicit_id_wins_over_baking_for_its_cloud_only():
    s = load_settings(raw_config(**AWS, images={"bake": True, "awsAmiId": "ami-0123abcd"}))
    assert pool_image(s, "aws").kind == "user"
    assert pool_image(s, "aws").image_id == "ami-0123abcd"
    assert pool_image(s, "azure").kind == "baked"
    stock = load_settings(raw_config(**AWS))
    assert [pool_image(stock, c).kind for c in ("azure", "aws")] == ["stock", "stock"]
    assert not pool_image(stock, "azure").baked and pool_image(s, "aws").baked


# --- what the image services run ----------------------------------------------------------


def test_the_shell_customizer_installs_and_runs_the_script_verbatim(tmp_path):
    script = "#!/bin/bash\nset -euo pipefail\necho 'it ran' > \"$OUT\"\n"
    lines = shell_customizer_lines(script)
    encoded = lines[0].split("'")[1]
    assert base64.b64decode(encoded).decode() == script
    assert lines[2] == f"sudo {PROVISION_SCRIPT_INSTALL_PATH}"
    # What deprovisioning leaves for the first boot of each machine.
    assert "sudo cloud-init clean --logs --seed" in lines


def test_the_bake_runs_the_file_stock_cloud_init_runs_and_its_deprovision_mode():
    # The stock user-data writes and runs the script at the path the bakes
    # use, and the script itself knows the argument the bakes clean with.
    settings = load_settings(raw_config())
    stock = yaml.safe_load(render_worker_user_data(azure_worker_pool(settings), "10.40.1.10"))
    assert PROVISION_SCRIPT_INSTALL_PATH in {f["path"] for f in stock["write_files"]}
    assert any(PROVISION_SCRIPT_INSTALL_PATH in str(step) for step in stock["runcmd"])
    assert f"{DEPROVISION_ARG})" in provision.provision_script()


def test_the_image_builder_component_is_awstoe_yaml_running_the_script(tmp_path):
    script = '#!/bin/bash\nset -euo pipefail\necho "provisioned $*" >> "$OUT"\n'
    doc = yaml.safe_load(image_builder_component(script))
    assert doc["schemaVersion"] == 1.0
    [phase] = doc["phases"]
    assert phase["name"] == "build"
    assert [(s["name"], s["action"]) for s in phase["steps"]] == [
        ("provision", "ExecuteBash"),
        ("deprovision", "ExecuteBash"),
    ]
    # Run every step's commands for real, the install path moved into tmp_path.
    target = tmp_path / "provision"
    out = tmp_path / "out"
    for step in phase["steps"]:
        commands = [
            c.replace(PROVISION_SCRIPT_INSTALL_PATH, str(target))
            for c in step["inputs"]["commands"]
        ]
        subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join(commands)],
            check=True,
            env={**os.environ, "OUT": str(out)},
        )
    assert target.read_text() == script
    # Provisioned, then cleaned for capture, in that order.
    assert out.read_text() == "provisioned \nprovisioned --deprovision\n"


def test_custom_roles_name_only_what_the_builds_need():
    assert all(a.startswith("Microsoft.Compute/galleries/") for a in GALLERY_DISTRIBUTOR_ACTIONS)
    assert not any(
        a.endswith("/delete") for a in GALLERY_DISTRIBUTOR_ACTIONS + BUILD_RUNNER_ACTIONS
    )
    assert "Microsoft.VirtualMachineImages/imageTemplates/run/action" in BUILD_RUNNER_ACTIONS


# --- the Azure build script, for real against a stand-in az -------------------------------

FAKE_AZ = """#!/bin/bash
echo "$*" >> "$AZ_LOG"
case "$1 $2" in
  "sig image-version") cat "$AZ_STATE" 2>/dev/null || exit 3 ;;
  "image builder")
    if [ "$3" = run ]; then
      [ "$AZ_RUN" = ok ] || exit 1
      echo Succeeded > "$AZ_STATE"
    else
      echo '{"runState": "Failed"}'
    fi ;;
esac
"""


def run_build(tmp_path: Path, run: str, state: str | None = None) -> tuple[int, list[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "az").write_text(FAKE_AZ)
    (bin_dir / "az").chmod(0o755)
    state_file = tmp_path / "state"
    if state:
        state_file.write_text(state + "\n")
    log = tmp_path / "az.log"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "AZ_LOG": str(log),
        "AZ_STATE": str(state_file),
        "AZ_RUN": run,
        "RESOURCE_GROUP": "farm-rg",
        "TEMPLATE": "obs-image-template",
        "IMAGE_VERSION_ID": GALLERY_VERSION,
    }
    proc = subprocess.run(
        ["bash", str(AZURE_BUILD_SCRIPT)], env=env, capture_output=True, text=True
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return proc.returncode, calls, proc.stderr


def test_the_build_script_passes_shellcheck():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed")
    subprocess.run(["shellcheck", str(AZURE_BUILD_SCRIPT)], check=True)


def test_the_build_script_runs_the_template_and_checks_the_version(tmp_path):
    rc, calls, _ = run_build(tmp_path, "ok")
    assert rc == 0
    assert "image builder run --resource-group farm-rg --name obs-image-template" in calls
    assert calls[-1].startswith(f"sig image-version show --ids {GALLERY_VERSION}")


def test_the_build_script_skips_a_version_that_exists(tmp_path):
    rc, calls, _ = run_build(tmp_path, "fail", state="Succeeded")
    assert rc == 0
    assert not any(c.startswith("image builder run") for c in calls)


def test_a_failed_build_fails_the_script_and_says_why(tmp_path):
    rc, calls, err = run_build(tmp_path, "fail")
    assert rc == 1
    assert "image builder show --resource-group farm-rg --name obs-image-template" in " ".join(
        calls
    )
    assert "runState" in err and "image build failed" in err


# --- the resource graph, for every example stack ------------------------------------------


def _run(stack: str):
    return run_program(stack, read_stack_config(stack))


def test_a_baked_azure_pool_boots_the_version_its_build_made():
    run = _run("apertis-eval")
    vmss = run.one("azure-native:compute:VirtualMachineScaleSet")
    image = vmss.inputs["virtualMachineProfile"]["storageProfile"]["imageReference"]
    assert image == {"id": f"obs-image-x64-id/versions/{image_version()}"}
    assert vmss.inputs["upgradePolicy"] == {"mode": "Manual"}
    template = run.one("azure-native:virtualmachineimages:VirtualMachineImageTemplate")
    [dist] = template.inputs["distribute"]
    assert dist["galleryImageId"] == image["id"]
    assert template.inputs["source"] == {
        "type": "PlatformImage",
        "publisher": "Debian",
        "offer": "debian-12",
        "sku": "12-gen2",
        "version": "latest",
    }
    assert template.inputs["autoRun"] == {"state": "Disabled"}
    assert template.options["delete_before_replace"]
    build = run.one("azure-native:resources:AzureCliScript")
    env = {e["name"]: e["value"] for e in build.inputs["environmentVariables"]}
    assert env["IMAGE_VERSION_ID"] == image["id"]
    assert "obs-image-template" in build.options["depends_on"]
    definition = run.one("azure-native:compute:GalleryImage")
    assert (definition.inputs["hyperVGeneration"], definition.inputs["osState"]) == (
        "V2",
        "Generalized",
    )
    assert (definition.inputs["architecture"], definition.inputs["osType"]) == ("x64", "Linux")


def test_the_build_identities_hold_only_their_roles():
    run = _run("apertis-eval")
    grants = {r.name: r.inputs for r in run.of_type("azure-native:authorization:RoleAssignment")}
    assert grants["obs-image-distributor"]["scope"] == "obs-image-gallery-id"
    assert grants["obs-image-staging-contributor"]["scope"] == "obs-image-staging-id"
    assert grants["obs-image-staging-contributor"]["roleDefinitionId"].endswith(
        "/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c"
    )
    roles = {r.name: r.inputs for r in run.of_type("azure-native:authorization:RoleDefinition")}
    assert roles["obs-image-distributor-role"]["permissions"] == [
        {"actions": list(GALLERY_DISTRIBUTOR_ACTIONS)}
    ]
    assert roles["obs-image-runner-role"]["permissions"] == [
        {"actions": list(BUILD_RUNNER_ACTIONS)}
    ]


def test_a_stock_pool_has_no_image_resources_and_boots_debian():
    run = _run("dev")
    assert not [r for r in run.resources if "image" in r.type.lower() or "Gallery" in r.type]
    vmss = run.one("azure-native:compute:VirtualMachineScaleSet")
    ref = vmss.inputs["virtualMachineProfile"]["storageProfile"]["imageReference"]
    assert ref["publisher"] == "Debian" and ref["sku"] == "12-gen2"


def test_a_baked_graviton_pool_launches_the_built_ami():
    run = _run("hybrid")
    template = run.one("aws:ec2/launchTemplate:LaunchTemplate")
    assert template.inputs["imageId"] == "ami-0123456789abcdef0"
    recipe = run.one("aws:imagebuilder/imageRecipe:ImageRecipe")
    assert recipe.inputs["parentImage"] == "ssm:/aws/service/debian/release/12/latest/arm64"
    assert recipe.inputs["version"] == image_version()
    component = run.one("aws:imagebuilder/component:Component")
    assert component.inputs["version"] == image_version()
    image = run.one("aws:imagebuilder/image:Image")
    pipeline = run.one("aws:imagebuilder/imagePipeline:ImagePipeline")
    for key in ("imageRecipeArn", "infrastructureConfigurationArn", "distributionConfigurationArn"):
        assert image.inputs[key] == pipeline.inputs[key]
    attached = {
        r.inputs["policyArn"]
        for r in run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    }
    assert {p for p in attached if "ImageBuilder" in p or "SSM" in p} == {
        "arn:aws:iam::aws:policy/EC2InstanceProfileForImageBuilder",
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
    }


def test_a_users_ami_is_launched_and_nothing_is_built(tmp_path):
    raw = read_stack_config("hybrid")
    raw["obs-farm:images"] = '{"bake": true, "awsAmiId": "ami-0123abcd"}'
    run = run_program("hybrid", raw)
    assert run.one("aws:ec2/launchTemplate:LaunchTemplate").inputs["imageId"] == "ami-0123abcd"
    assert not [r for r in run.resources if r.type.startswith("aws:imagebuilder/")]
    # Azure still bakes: the id is for AWS only.
    assert run.one("azure-native:virtualmachineimages:VirtualMachineImageTemplate")


def test_the_plan_says_what_each_pool_boots_and_what_is_built():
    from tools.plan import image_lines, pool_images

    hybrid = {p["pool"]: p for p in pool_images(load_settings(read_stack_config("hybrid")))}
    assert hybrid["azure-x86"]["kind"] == hybrid["aws-graviton"]["kind"] == "baked"
    assert hybrid["azure-x86"]["buildPending"] == image_version()
    assert "EC2 Image Builder" in hybrid["aws-graviton"]["boots"]
    [dev] = pool_images(load_settings(read_stack_config("dev")))
    assert (dev["kind"], dev["buildPending"], dev["userData"]) == ("stock", None, "stock")
    assert "Debian:debian-12:12-gen2:latest" in dev["boots"]
    user = load_settings(raw_config(images={"bake": True, "azureImageId": GALLERY_VERSION}))
    [line] = image_lines(user)
    assert line.startswith(f"azure-x86: user image {GALLERY_VERSION} (images.azureImageId)")
