"""kopf handlers, one module per kind; importing them registers them with kopf."""


def register() -> None:
    from triton_operator.handlers import settings, tritonmodel, tritonserver  # noqa: F401 - registration by import
