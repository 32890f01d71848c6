"""API models of the operator's kinds; the single source of the CRD schemas."""
