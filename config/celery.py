"""The Celery app: `celery -A config worker` and `celery -A config beat`.

Settings are read from Django's, under the CELERY_ prefix (config/settings.py).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("signoff")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
