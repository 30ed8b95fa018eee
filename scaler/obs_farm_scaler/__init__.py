"""obs-farm-scaler: grows and shrinks the farm's worker pools from the OBS job queue.

The decision (decide.py) is a pure function of what the repserver and the
clouds report; the adapters (repserver.py, azure.py, aws.py) only read and
act; loop.py ties them together. Never imports Pulumi.
"""
