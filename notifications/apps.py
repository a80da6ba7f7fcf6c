from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        # Connects the receivers that queue emails and chat webhooks as reviews open and move.
        from notifications import services  # noqa: F401
