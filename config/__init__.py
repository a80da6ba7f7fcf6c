# Loading the Celery app with Django makes `@shared_task` (and `delay_on_commit` in the
# services) use it in the web process too.
from config.celery import app as celery_app

__all__ = ["celery_app"]
