"""Size limits the clouds put on what the program sends, checked before
anything is created.

Azure refuses custom data whose decoded bytes exceed 65,535 (OSProfile
customData, compute API definition) and AWS refuses launch-template user
data above 16 KB before base64 (EC2 user guide: "limited to 16 KB, in raw
form"). The check renders each document exactly as the program does, so it
follows whatever the renderers produce as they grow.
"""

from __future__ import annotations

from config.model import FarmSettings

NS = "obs-farm"
AZURE_CUSTOM_DATA_LIMIT = 65535
AWS_USER_DATA_LIMIT = 16 * 1024


def user_data_documents(settings: FarmSettings) -> list[tuple[str, str, str, int]]:
    """(what, setting that owns it, cloud, bytes) for every user-data document."""
    # Imported here: components render from settings, so config cannot
    # import them at module level.
    from components.cloudinit import render_worker_user_data, server_user_data
    from components.images import pool_image
    from components.topology import server_private_ip, worker_pools

    server_ip = server_private_ip(settings)
    docs = [("the OBS server", "server", "azure", len(server_user_data(settings).encode()))]
    for pool in worker_pools(settings):
        # The document the pool's machines get: baked or stock (images).
        baked = pool_image(settings, pool.cloud).baked
        if pool.cloud == "aws":
            text = render_worker_user_data(pool, server_ip, settings.ssh_public_key, baked=baked)
            docs.append((f"worker pool {pool.name}", "graviton", "aws", len(text.encode())))
        else:
            text = render_worker_user_data(pool, server_ip, baked=baked)
            docs.append((f"worker pool {pool.name}", "azureWorkers", "azure", len(text.encode())))
    return docs


def user_data_errors(settings: FarmSettings) -> list[str]:
    problems = []
    for what, key, cloud, size in user_data_documents(settings):
        limit, kind = (
            (AWS_USER_DATA_LIMIT, "AWS launch template user data")
            if cloud == "aws"
            else (AZURE_CUSTOM_DATA_LIMIT, "Azure custom data")
        )
        if size > limit:
            problems.append(
                f"{NS}:{key}: the cloud-init user data of {what} is {size} bytes, over the "
                f"{limit}-byte limit of {kind}; fewer architectures or worker groups "
                f"shrink it"
            )
    return problems
