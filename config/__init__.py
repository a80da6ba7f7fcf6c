# Loading the Celery app with Django makes `@shared_task` and the doorbell's `send_task`
# (workflows.doorbell) use it in the web process too.
from config.celery import app as celery_app

__all__ = ["celery_app"]
