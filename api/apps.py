from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "API"

    def ready(self) -> None:
        # Connects the receivers that queue webhook deliveries as runs end and reviews open.
        from api import webhooks  # noqa: F401
