"""The PerReplica model repository: one repository server over the staged PVC, a sync agent per Triton pod.

manifest.py  what a repository holds (scan, hash cache, wire format) and the plan that mirrors it
server.py    `triton-operator repository serve`: scans the PVC, serves its content and files over HTTP
sync.py      `triton-operator repository sync`: the Triton pod's sidecar, mirrors the server into /models
"""
