#!/usr/bin/python3
"""obs-farm-evict: the cloud's notice that this worker machine goes away.

stop (Azure Preempt, or Terminate <60 s away; AWS spot instance-action): all
instances at once; a building one reports idle, so the repserver requeues its
job as for a crashed worker, then exit. drain (AWS rebalance or lifecycle
Terminated, Azure Terminate): idle ones exit, building ones after their job.
"""

import fcntl
import glob
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from email.utils import parsedate_to_datetime

E = os.environ.get
CONF, RUN = E("OBS_FARM_CONF_DIR", "/etc/obs-farm"), E("OBS_FARM_RUN_DIR", "/run/obs-farm")
IMDS = E("OBS_FARM_IMDS", "http://169.254.169.254")
AZ = IMDS + "/metadata/scheduledevents?api-version=2020-07-01"


def env(path):
    return dict(re.findall(r'^(\w+)="(.*)"$', open(path).read(), re.M))


def http(url, headers=None, data=None, method=None):
    try:
        req = urllib.request.Request(url, data, headers or {}, method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise


def azure(st):
    h = {"Metadata": "true"}
    st.setdefault(
        "vm", http(IMDS + "/metadata/instance/compute/name?api-version=2021-02-01&format=text", h)
    )
    for e in json.loads(http(AZ, h) or "{}").get("Events", []):
        t = e.get("EventType")
        if st["vm"] in e.get("Resources", []) and t in ("Preempt", "Terminate"):
            nb = e.get("NotBefore")
            soon = t == "Preempt" or (
                nb and parsedate_to_datetime(nb).timestamp() < time.time() + 60
            )
            return ("stop" if soon else "drain"), e
    return None, None


def aws(st):
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "300"}
    h = {"X-aws-ec2-metadata-token": http(IMDS + "/latest/api/token", ttl, method="PUT")}
    for kind, path, want in (
        ("stop", "spot/instance-action", None),
        ("drain", "events/recommendations/rebalance", None),
        ("drain", "autoscaling/target-lifecycle-state", "Terminated"),
    ):
        got = http(IMDS + "/latest/meta-data/" + path, h)
        if got and (want is None or got.strip() == want):
            return kind, {"EventType": path}
    return None, None


def instances():
    w, host = env(CONF + "/worker.env"), socket.gethostname()
    for f in sorted(glob.glob(CONF + "/groups/*.env")):
        g, name = env(f), os.path.basename(f)[:-4]
        for n in range(1, int(g["INSTANCES"]) + 1):
            q = {"arch": g["HOSTARCH"], "port": int(g["PORT_BASE"]) + n}
            yield (
                f"{w['WORK_DIR']}/{name}/{n}/state",
                w["REPO_SERVER"],
                {**q, "workerid": f"{host}:{name}-{n}"},
            )


def change_state(d, kind):
    """bs_worker's own protocol (as --exit): flock the state file, write state.new, rename."""
    path = d + "/state"
    if not os.path.exists(path):
        return ""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        if os.fstat(f.fileno()).st_nlink == 0:
            return change_state(d, kind)
        s = dict(ET.parse(path).getroot().attrib) if os.path.getsize(path) else {}
        old = s.get("state", "idle")
        if old in ("building", "killed", "discarded"):
            s.update(nextstate="exit", state="discarded" if kind == "stop" else old)
        else:
            s["state"] = "exit"
        ET.ElementTree(ET.Element("workerstate", s)).write(path + ".new")
        os.rename(path + ".new", path)
        return old


def running(d):
    try:
        with open(d + "/lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return False


def note(**kw):
    os.makedirs(RUN, exist_ok=True)
    with open(RUN + "/eviction.json.new", "w") as f:
        json.dump({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **kw}, f)
    os.rename(RUN + "/eviction.json.new", RUN + "/eviction.json")


def act(kind):
    requeued = []
    for d, rep, q in instances():
        if change_state(d, kind) == "building" and kind == "stop":
            for state in ("idle", "exit"):  # idle requeues the job, exit keeps new ones away
                http(f"{rep}/worker?" + urllib.parse.urlencode({**q, "state": state}))
            requeued.append(q["workerid"])
    return requeued


def main():
    cloud = env(CONF + "/worker.env").get("CLOUD", "azure")
    watch, st, mode, err = {"azure": azure, "aws": aws}[cloud], {}, None, None
    while True:
        try:
            kind, ev = watch(st)
        except (OSError, ValueError) as e:
            kind = None
            if str(e) != err:
                print("obs-farm-evict: metadata:", e, flush=True)
            err = str(e)
        if kind and mode != "stop" and kind != mode:
            mode, event = kind, ev
            note(action=kind, event=ev, state="acting")
            requeued = act(kind)
            print(f"obs-farm-evict: {ev.get('EventType')}: {kind}; requeued {requeued}", flush=True)
            note(action=kind, event=ev, state="acting", requeued=requeued)
        if mode and not any(running(d) for d, _, _ in instances()):
            note(action=mode, event=event, state="done")
            print(f"obs-farm-evict: every worker instance stopped ({mode})", flush=True)
            if event.get("EventId"):  # Azure: go now, nothing is left to lose
                body = json.dumps({"StartRequests": [{"EventId": event["EventId"]}]}).encode()
                http(AZ, {"Metadata": "true", "Content-Type": "application/json"}, body, "POST")
            return
        time.sleep(float(E("OBS_FARM_EVICT_POLL", "2")))


if __name__ == "__main__":
    main()
