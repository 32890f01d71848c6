"""Metric-gated canary rollouts and A/B experiments as pure decisions: analysis, plan, machine, shares."""
