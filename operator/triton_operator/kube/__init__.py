"""The operator's access to the Kubernetes API: plain JSON over the official client's connection."""
