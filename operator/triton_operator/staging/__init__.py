"""The staging program run by a TritonModel's Job: `triton-operator stage --spec JSON ...`.

It fetches a model (S3, HTTP or a folder of another PVC), writes `<repository>/<modelName>/<version>/`
and `<repository>/<modelName>/config.pbtxt` atomically, and exits with a code from `errors.ExitCode`.
"""
