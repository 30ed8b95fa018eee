"""Small helpers shared by the components (pure)."""

from __future__ import annotations

import base64

# Debian 12 from the Azure marketplace (publisher:offer:sku:version).
DEBIAN_12_GEN2 = {
    "publisher": "Debian",
    "offer": "debian-12",
    "sku": "12-gen2",
    "version": "latest",
}


def farm_tags(stack: str, mode: str, role: str) -> dict[str, str]:
    """Tags every farm resource carries (cost reports, policies, cleanup)."""
    return {"obs-farm-stack": stack, "obs-farm-mode": mode, "obs-farm-role": role}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def ssh_config(admin_username: str, public_key: str) -> dict[str, object]:
    """Linux login: the configured key only, passwords off."""
    return {
        "disable_password_authentication": True,
        "ssh": {
            "public_keys": [
                {"path": f"/home/{admin_username}/.ssh/authorized_keys", "key_data": public_key}
            ]
        },
    }


def premium_os_disk(size_gb: int) -> dict[str, object]:
    """The OS disk every farm VM gets: Premium SSD, deleted with the VM."""
    return {
        "create_option": "FromImage",
        "caching": "ReadWrite",
        "disk_size_gb": size_gb,
        "managed_disk": {"storage_account_type": "Premium_LRS"},
        "delete_option": "Delete",
    }
