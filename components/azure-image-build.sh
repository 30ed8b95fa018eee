#!/bin/bash
# Runs in Azure's deployment-script container (AzureCliScript) under the
# image runner identity: builds the worker image from its Image Builder
# template and waits for it, so the scale set that depends on this script
# only ever names an image version that exists. Environment: RESOURCE_GROUP,
# TEMPLATE, IMAGE_VERSION_ID (set by components/images.py).
set -euo pipefail
: "${RESOURCE_GROUP:?}" "${TEMPLATE:?}" "${IMAGE_VERSION_ID:?}"

state=$(az sig image-version show --ids "$IMAGE_VERSION_ID" \
  --query provisioningState --output tsv 2>/dev/null || true)
if [ "$state" = Succeeded ]; then
  # Same content hash, same version: already built (a re-run of this script
  # after a template replacement, or a version built by an earlier stack).
  echo "image version $IMAGE_VERSION_ID exists; nothing to build"
  exit 0
fi
echo "building $IMAGE_VERSION_ID from template $TEMPLATE"
# Waits for the run (its long-running operation) and fails when it fails.
if ! az image builder run --resource-group "$RESOURCE_GROUP" --name "$TEMPLATE"; then
  az image builder show --resource-group "$RESOURCE_GROUP" --name "$TEMPLATE" \
    --query lastRunStatus --output json >&2 || true
  echo "image build failed; the customization log is in the staging resource group's storage account" >&2
  exit 1
fi
state=$(az sig image-version show --ids "$IMAGE_VERSION_ID" --query provisioningState --output tsv)
if [ "$state" != Succeeded ]; then
  echo "image version $IMAGE_VERSION_ID is $state after the build" >&2
  exit 1
fi
echo "built $IMAGE_VERSION_ID"
