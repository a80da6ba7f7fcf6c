from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        # Connects the receivers that open and close reviews as threads pause and move on.
        from approvals import services  # noqa: F401
