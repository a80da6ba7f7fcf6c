from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        # Connects the receivers that open and close reviews as threads pause and move on.
        # Audits failed sign-ins and lockouts.
        from approvals import (
            security,  # noqa: F401
            services,  # noqa: F401
        )
