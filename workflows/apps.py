from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        from django.conf import settings

        from workflows import registry

        registry.autodiscover(settings.SIGNOFF_GRAPH_MODULES)
