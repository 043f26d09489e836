"""The measuring tools run against the service tests' servers and model files."""

from tests.service.conftest import (  # noqa: F401 (fixtures, found by name)
    serve,
    served,
    shared_server,
    tiny_model,
    tiny_model_path,
)
